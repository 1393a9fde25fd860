"""One launch path, typed end to end (pipeline/launch/): user text reaches the run exactly as given."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import mlflow
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_unity_pipeline import (
    RLTrainingConfig,
    TrainingJob,
    TrainingJobResult,
    UnityAssetSpec,
    UnityMLOpsOrchestrator,
)
from mlops_unity_pipeline.jobs import UnityEnvironment
from pipeline.config.compose import compose_typed
from pipeline.launch.inprocess import plan_for
from pipeline.launch.local import LocalProcessExecutor
from pipeline.launch.request import LaunchRequest, RequestError
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs
from tests.support.training import TINY

# Everything that broke when values were joined into override text: commas (sweeps), quotes, `=`, `${...}`
# (OmegaConf interpolation), backslashes, newlines, non-ASCII. No "/": "a://u:p@h" is a URI password and
# is redacted in params on purpose.
NASTY = st.text(alphabet=st.sampled_from(list(",'\"=${}:\\\n\t #é漢🙂ab0 -_.()[]")) | st.characters(
    blacklist_categories=("Cs",), blacklist_characters="/\x00"), max_size=80)
NAV = UnityEnvironment(asset_group="nav")


@pytest.fixture(scope="module")
def no_site_overrides():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLOPS_PIPELINE_OVERRIDES", raising=False)
        yield


def nav_job(description: str = "Navigate.", **rl) -> TrainingJob:
    return TrainingJob("job-1", UnityAssetSpec("nav-001", "NavigationAgent", description=description),
                       RLTrainingConfig(**{"max_steps": 3000, "num_envs": 1, **rl}))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=NASTY, tag=NASTY)
def test_any_description_and_tag_reach_the_composed_config_exactly(text, tag, no_site_overrides):
    request = UnityMLOpsOrchestrator().request(nav_job(text), NAV, tags={"note": tag})
    again = LaunchRequest.from_json(request.to_json())  # what crosses to the child process or Ray job
    assert again == request
    cfg = compose_typed(again.groups, again.values, again.overrides, again.tags)
    assert cfg["asset"]["description"] == text
    assert cfg["run_tags"]["note"] == tag
    assert cfg["asset"]["asset_id"] == "nav-001" and cfg["max_steps"] == 3000  # nothing else moved


@settings(max_examples=15, deadline=None)
@given(text=NASTY)
def test_the_validated_plan_and_its_params_keep_the_text(text, no_site_overrides):
    from pipeline.tracking.runs import flatten

    plan = plan_for(UnityMLOpsOrchestrator().request(nav_job(text), NAV))
    assert plan.cfg["asset"]["description"] == text
    assert flatten(plan.cfg)["asset.description"] == text
    assert yaml.safe_load(yaml.safe_dump(plan.cfg))["asset"]["description"] == text  # config.yaml


def test_a_secret_reference_is_stored_literally_not_resolved(monkeypatch):
    monkeypatch.setenv("SOME_SECRET", "hunter2")
    plan = plan_for(UnityMLOpsOrchestrator().request(nav_job("${oc.env:SOME_SECRET}"), NAV))
    assert plan.cfg["asset"]["description"] == "${oc.env:SOME_SECRET}"
    assert "hunter2" not in json.dumps(plan.cfg)


def test_typed_values_are_checked_against_the_schema_by_key():
    with pytest.raises(Exception, match=r"(?s)Value 'many' of type 'str' could not be converted to Integer.*"
                                        r"full_key: env.num_envs"):
        plan_for(LaunchRequest(groups={"asset": "nav"}, values={"env.num_envs": "many"}))
    with pytest.raises(Exception, match=r"(?s)Key 'num_env' not in 'EnvConfig'.*full_key: env.num_env"):
        plan_for(LaunchRequest(groups={"asset": "nav"}, values={"env.num_env": 2}))
    with pytest.raises(Exception, match=r"^env.num_envs must be >= 1, got 0"):
        plan_for(LaunchRequest(groups={"asset": "nav"}, values={"env.num_envs": 0}))


def test_a_group_is_a_plain_name_never_a_sweep():
    with pytest.raises(RequestError, match=r"^groups.asset='nav,patrol' is not the name of a conf/asset/\*.yaml"):
        LaunchRequest(groups={"asset": "nav,patrol"})
    with pytest.raises(RequestError, match=r"^unknown launch request field\(s\): command; known: "):
        LaunchRequest.from_json('{"command": "rm -rf /"}')


def test_overrides_a_person_wrote_win_over_job_fields(monkeypatch):
    monkeypatch.setenv("MLOPS_PIPELINE_OVERRIDES", "max_steps=1234 env.num_envs=1")
    request = UnityMLOpsOrchestrator().request(nav_job(num_envs=8, overrides=["algorithm=sac"]), NAV)
    plan = plan_for(request)
    assert (plan.max_steps, plan.cfg["env"]["num_envs"], plan.algorithm) == (1234, 1, "sac")


def test_an_explicit_tracking_uri_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    uri = f"sqlite:///{tmp_path / 'mine.db'}"
    request = UnityMLOpsOrchestrator(tracking_uri=uri).request(nav_job(), NAV)
    assert request.env["MLFLOW_TRACKING_URI"] == uri
    assert plan_for(request).cfg["tracking"]["tracking_uri"] == uri


def test_a_subclass_replaces_build_and_train_as_the_guide_says():
    calls = []

    class Mine(UnityMLOpsOrchestrator):
        def build_unity_environment(self, job):
            calls.append(("build", job.job_id))
            return UnityEnvironment("nav", env_path="builds/Nav.x86_64")

        async def train_rl_agent(self, job, env):
            calls.append(("train", env.env_path))
            return TrainingJobResult(job.job_id, "FINISHED", job.asset_spec.asset_id)

    result = asyncio.run(Mine().execute_training_job(nav_job()))
    assert result.status == "FINISHED"
    assert calls == [("build", "job-1"), ("train", "builds/Nav.x86_64")]


def test_an_error_line_longer_than_64_kib_is_read_whole(tmp_path):
    """The child's stderr is read in chunks: one enormous line cannot crash the reader."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nhead -c 200000 /dev/zero | tr '\\0' x >&2\necho >&2\necho 'error: the end' >&2\n"
                    "exit 3\n")
    fake.chmod(0o755)
    outcome = asyncio.run(LocalProcessExecutor(python=str(fake), echo=None).run(LaunchRequest(groups={"asset": "nav"})))
    assert (outcome.status, outcome.error, outcome.exit_code) == ("FAILED", "the end", 3)


def test_run_request_refuses_bad_input_with_one_line_and_no_run(store):
    proc = subprocess.run([PYTHON, "-m", "pipeline.cli", "run-request",
                           json.dumps({"groups": {"asset": "nav"}, "values": {"max_steps": -5}})],
                          cwd=REPO, capture_output=True, text=True, env=child_env(), timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: max_steps must be a positive number of agent steps, got -5 (e.g. max_steps=150000, or leave it unset "
        "to use the algorithm's max_steps)")
    assert all_runs() == [] and all_runs("tests") == []


@pytest.mark.slow
def test_a_guide_job_with_nasty_text_trains_for_real_with_it_exactly(store, tmp_path, monkeypatch):
    """End to end through a real child process: one pipeline run (a comma is no sweep), the text exact in the
    train run's params and config.yaml, and the explicit tracking URI used although the environment names
    another store."""
    text = "Navigate around obstacles, then don't \"stop\" = ${oc.env:HOME} \\ é 漢\nsecond line"
    monkeypatch.setenv("MLOPS_PIPELINE_OVERRIDES", " ".join(TINY + [f"results_dir={tmp_path / 'results'}"]))
    decoy = tmp_path / "decoy.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{decoy}")
    orchestrator = UnityMLOpsOrchestrator(tracking_uri=store, experiment_name="tests")
    result = asyncio.run(orchestrator.execute_training_job(nav_job(text)))
    assert result.status == "FINISHED", result.error
    mlflow.set_tracking_uri(store)
    runs = all_runs("tests")
    assert sorted(r.data.tags["pipeline.stage"] for r in runs) == ["build", "evaluate", "main", "register", "train"]
    train = next(r for r in runs if r.data.tags["pipeline.stage"] == "train")
    assert train.data.params["asset.description"] == text
    config = mlflow.artifacts.download_artifacts(run_id=train.info.run_id, artifact_path="config.yaml",
                                                 dst_path=str(tmp_path))
    assert yaml.safe_load(open(config))["asset"]["description"] == text
    assert not decoy.exists()
    assert mlflow.MlflowClient().get_registered_model("nav-001.NavigationAgent").latest_versions  # one version
    assert len(mlflow.MlflowClient().search_model_versions("name='nav-001.NavigationAgent'")) == 1


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_a_schedule_sends_its_fires_to_ray_when_it_says_so():
    from pipeline.config.errors import ConfigError
    from pipeline.launch.ray_jobs import RayJobExecutor
    from pipeline.scheduling.settings import build_schedule, load_config

    schedule = build_schedule(load_config("nightly", ["executor.kind=ray", "executor.address=http://127.0.0.1:8265"]))
    executor = schedule.extra["executor"]
    assert isinstance(executor, RayJobExecutor) and executor.address == "http://127.0.0.1:8265"
    assert "executor" not in build_schedule(load_config("nightly")).extra  # local: a child of the runner
    with pytest.raises(ConfigError, match=r"^schedule 'nightly': executor.kind 'slurm' is not an executor; "
                                          r"choose local or ray$"):
        build_schedule(load_config("nightly", ["executor.kind=slurm"]))


def test_a_fire_has_one_ray_submission_id():
    from pipeline.scheduling.launcher import submission_id

    fire = submission_id("nightly", "2026-12-02T02:00", "nav-001")
    assert fire == submission_id("nightly", "2026-12-02T02:00", "nav-001")
    others = {submission_id("nightly", "2026-12-02T02:01", "nav-001"), submission_id("nightly", "2026-12-02T02:00",
              "patrol-001"), submission_id("weekly", "2026-12-02T02:00", "nav-001")}
    assert fire not in others and len(others) == 3
    assert fire.startswith("fire-nightly-2026-12-02T02-00-nav-001-")
    # Its resumes: derived from it, the same on every runner, one per attempt.
    assert submission_id("nightly", "2026-12-02T02:00", "nav-001", 2) == f"{fire}-r2"
    assert submission_id("nightly", "2026-12-02T02:00", "nav-001", 0) == fire
