"""Register stage on the real stack: a real ML-Agents training run, a sqlite MLflow registry, and Vertex AI
through the real google-cloud-aiplatform / google-cloud-storage clients against local HTTP emulators.

One tiny policy is trained and evaluated once. Challengers with chosen evaluation figures are further
training runs carrying that same ONNX and an evaluate run with those figures: the gate only reads the
figures, and training policies of a given quality on demand is not possible in seconds.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import mlflow
import onnx
import pytest

from pipeline.config.compose import compose_plan
from pipeline.config.errors import ConfigError, ServiceUnavailable
from pipeline.digest import file_sha256 as sha256
from pipeline.stages import evaluate, register, train
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import use_store
from tests.support.training import TINY
from tests.support.vertex_emulator import StorageEmulator, VertexEmulator, free_port

pytestmark = pytest.mark.slow
MODEL = "nav-001.NavigationAgent"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real tiny training + evaluation in a module store; tests work on copies of that store."""
    tmp = tmp_path_factory.mktemp("registry")
    mp = pytest.MonkeyPatch()
    use_store(tmp, mp)
    plan = compose_plan(TINY + [f"results_dir={tmp / 'results'}"])
    run_id = train.train(plan).run_id
    evaluate.evaluate(plan, run_id)
    onnx_path = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{run_id}/unity/NavigationAgent.onnx", dst_path=str(tmp / "onnx")))
    mp.undo()
    yield tmp / "mlflow.db", run_id, onnx_path


@pytest.fixture
def reg(trained, tmp_path, monkeypatch):
    """A private copy of the trained store, and no Google credentials anywhere."""
    db, run_id, onnx_path = trained
    shutil.copy(db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud ADC file
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # not on Google Compute Engine: skip the metadata probe
    mlflow.set_tracking_uri(uri)
    yield run_id, onnx_path
    while mlflow.active_run():
        mlflow.end_run()


def plan_with(*overrides):
    return compose_plan(TINY + list(overrides))


def challenger(base_run: str, onnx_path: Path, success: float, low: float, high: float,
               reward: float = 0.5, episodes: int = 12) -> str:
    """A finished training run carrying the trained ONNX, evaluated (seed 10000) with the given figures."""
    client = mlflow.MlflowClient()
    base = client.get_run(base_run)
    keep = ("asset", "behavior", "algorithm", "mode", "seed", "environment", "git.commit", "git.dirty")
    with mlflow.start_run(experiment_id=base.info.experiment_id,
                          tags={"pipeline.stage": "train", **{k: base.data.tags[k] for k in keep}}) as run:
        mlflow.log_artifact(str(onnx_path), "unity")
        mlflow.onnx.log_model(onnx.load(str(onnx_path)), name="policy")
    with mlflow.start_run(experiment_id=base.info.experiment_id,
                          tags={"pipeline.stage": "evaluate", "pipeline.train_run_id": run.info.run_id}) as ev:
        mlflow.log_params({"evaluation.episodes": episodes, "evaluation.seed": 10000, "evaluation.deterministic": True})
        mlflow.log_metrics({"eval/success_rate": success, "eval/success_rate_ci_low": low,
                            "eval/success_rate_ci_high": high, "eval/mean_reward": reward,
                            "eval/mean_reward_ci_low": reward - 0.05, "eval/mean_reward_ci_high": reward + 0.05})
    client.set_tag(run.info.run_id, "pipeline.eval_run_id", ev.info.run_id)
    return run.info.run_id


def versions():
    return sorted(int(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'"))


def aliases_of(version: int) -> list[str]:
    return sorted(mlflow.MlflowClient().get_model_version(MODEL, str(version)).aliases)


def register_runs(status=None):
    exp = mlflow.get_experiment_by_name("unity-mlagents")
    runs = mlflow.MlflowClient().search_runs([exp.experiment_id], "tags.`pipeline.stage` = 'register'")
    return [r for r in runs if status is None or r.info.status == status]


# -- MLflow registry and the gate ---------------------------------------------------------------

def test_first_version_is_champion_with_lineage_and_the_quick_start_fallback_says_so(reg, capsys):
    run_id, onnx_path = reg
    result = register.register(plan_with("registry.vertex_project=your-gcp-project"), run_id)
    assert (result.model_name, result.version, result.aliases) == (MODEL, "1", ["challenger", "champion"])
    assert result.gate == "first" and result.promoted
    assert result.vertex_status == "local-only"
    assert result.vertex_uri == "projects/your-gcp-project/locations/us-central1/models/nav-001-navigationagent@1"
    assert "warning: Vertex AI: not uploaded: no Google Cloud credentials found for project your-gcp-project" \
        in capsys.readouterr().err

    client = mlflow.MlflowClient()
    train_run = client.get_run(run_id)
    tags = client.get_model_version(MODEL, "1").tags
    assert tags["source_run_id"] == run_id
    assert tags["onnx.sha256"] == sha256(onnx_path)
    assert tags["git.commit"] == train_run.data.tags["git.commit"]
    assert len(tags["config.sha256"]) == 64
    assert tags["eval.run_id"] == train_run.data.tags["pipeline.eval_run_id"]
    assert float(tags["eval.success_rate"]) == pytest.approx(train_run.data.metrics["eval/success_rate"])
    assert tags["eval.protocol.episodes"] == "12" and tags["eval.protocol.seed"] == "10000"
    assert tags["promotion.gate"] == "first" and tags["vertex.status"] == "local-only"

    [run] = register_runs("FINISHED")
    record = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/vertex_registration.json")
    assert record["status"] == "local-only" and record["resource_uri"] == result.vertex_uri
    assert record["reason"].startswith("no Google Cloud credentials found")
    assert record["artifact_uri"] == f"gs://your-gcp-project-vertex-staging-us-central1/nav-001-navigationagent/{run_id}"
    assert record["labels"]["mlflow_run_id"] == run_id and record["version_aliases"] == ["challenger", "champion",
                                                                                         "default"]
    assert {f["name"] for f in record["files"]} >= {"NavigationAgent.onnx", "mlflow_model/MLmodel"}
    assert run.data.tags["registry.decision"] == result.decision


def test_registering_the_same_run_again_changes_nothing(reg):
    run_id, _ = reg
    first = register.register(plan_with(), run_id)
    again = register.register(plan_with(), run_id)
    assert versions() == [1]
    assert (again.version, again.created, again.gate) == ("1", False, "already-champion")
    assert again.aliases == first.aliases == ["challenger", "champion"]


def test_a_better_challenger_takes_champion_and_a_worse_one_stays_challenger(reg):
    run_id, onnx_path = reg
    plan = plan_with()
    register.register(plan, challenger(run_id, onnx_path, 0.50, 0.25, 0.75))
    better = register.register(plan, challenger(run_id, onnx_path, 1.0, 0.76, 1.0))
    assert (better.version, better.gate, better.promoted) == ("2", "better", True)
    assert better.decision == ("success_rate 1.000 [0.760, 1.000] vs champion 0.500 [0.250, 0.750]: "
                               "lower bound 0.760 > 0.500 + margin 0 -> promoted")
    worse = register.register(plan, challenger(run_id, onnx_path, 0.92, 0.65, 0.99))
    assert (worse.version, worse.gate, worse.promoted, worse.aliases) == ("3", "not-better", False, ["challenger"])
    assert aliases_of(2) == ["champion"] and aliases_of(1) == []
    tags = mlflow.MlflowClient().get_model_version(MODEL, "3").tags
    assert tags["promotion.decision"] == worse.decision and worse.decision.endswith("-> v2 stays champion")
    run = mlflow.MlflowClient().get_run(worse.run_id)
    assert run.data.metrics["gate/challenger_success_rate_ci_low"] == 0.65
    assert run.data.metrics["gate/champion_success_rate"] == 1.0 and run.data.metrics["gate/promoted"] == 0.0


def test_another_protocol_is_not_compared_and_force_is_a_recorded_override(reg):
    run_id, onnx_path = reg
    register.register(plan_with(), run_id)
    other = challenger(run_id, onnx_path, 1.0, 0.97, 1.0, episodes=100)
    skipped = register.register(plan_with(), other)
    assert skipped.gate == "protocol-mismatch" and not skipped.promoted
    assert "episodes 100 vs 12" in skipped.decision
    forced = register.register(plan_with("registry.force=true"), other)
    assert (forced.version, forced.gate, forced.forced, forced.promoted) == ("2", "forced", True, True)
    assert forced.decision.startswith("forced to champion by ") and "(registry.force=true) over v1" in forced.decision
    assert versions() == [1, 2] and aliases_of(2) == ["challenger", "champion"]
    assert mlflow.MlflowClient().get_model_version(MODEL, "2").tags["promotion.forced"] == "true"
    assert mlflow.MlflowClient().get_run(forced.run_id).data.tags["registry.forced"] == "true"


def test_bad_runs_are_refused_before_any_run_or_version_exists(reg, tmp_path):
    run_id, _ = reg
    client = mlflow.MlflowClient()
    eval_run = client.get_run(run_id).data.tags["pipeline.eval_run_id"]
    with pytest.raises(ConfigError) as err:
        register.register(plan_with(), "0" * 32)
    assert str(err.value).startswith(f"--run_id {'0' * 32}: no such run in the tracking store")
    with pytest.raises(ConfigError) as err:
        register.register(plan_with(), eval_run)
    assert str(err.value) == (f"--run_id {eval_run} is a evaluate run, not a training run (its training run is "
                              f"{run_id}); register the training run")
    exp = client.get_run(run_id).info.experiment_id
    with mlflow.start_run(experiment_id=exp, tags={"pipeline.stage": "train", "behavior": "NavigationAgent"}) as empty:
        pass
    with pytest.raises(ConfigError) as err:
        register.register(plan_with(), empty.info.run_id)
    assert "the training run has no ONNX policy at unity/NavigationAgent.onnx" in str(err.value)
    with pytest.raises(ConfigError) as err:
        register.register(plan_with("registry.vertex_project=demo-project", "registry.credentials=anonymous",
                                    "registry.api_endpoint=http://127.0.0.1:9"), run_id)
    assert str(err.value).startswith("registry.serving_container_image_uri is required to upload to Vertex AI")
    assert register_runs() == [] and versions() == []


def test_cli_register_with_a_force_override(reg):
    run_id, _ = reg
    ok = subprocess.run([PYTHON, "-m", "pipeline.cli", "register", "--run_id", run_id,
                         "--overrides", "registry.force=true"], cwd=REPO, env=child_env(),
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert f"register: {MODEL} v1 (challenger, champion): no champion yet" in ok.stdout
    assert "warning: Vertex AI: not uploaded: registry.vertex_project is not set" in ok.stderr


# -- Vertex AI mirror, through the real SDKs and local emulators -----------------------------------

@pytest.fixture
def cloud(reg):
    with VertexEmulator() as vertex, StorageEmulator(("unity-policies",)) as gcs:
        overrides = ["registry.vertex_project=demo-project", f"registry.api_endpoint={vertex.endpoint}",
                     f"registry.storage_endpoint={gcs.endpoint}", "registry.staging_bucket=gs://unity-policies/vertex",
                     "registry.credentials=anonymous",
                     "registry.serving_container_image_uri=us-docker.pkg.dev/demo/serving/onnx:1",
                     "+registry.vertex_labels.team=robotics"]
        yield vertex, gcs, overrides


def bucket_objects(gcs: StorageEmulator) -> dict[str, int]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="demo-project", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs.endpoint})
    return {b.name: b.generation for b in client.list_blobs("unity-policies")}


def test_versions_are_mirrored_to_vertex_with_labels_aliases_and_staged_files(reg, cloud):
    run_id, onnx_path = reg
    vertex, gcs, overrides = cloud
    plan = plan_with(*overrides)
    first = register.register(plan, run_id)
    resource = "projects/demo-project/locations/us-central1/models/nav-001-navigationagent"
    assert (first.vertex_status, first.vertex_uri) == ("registered", f"{resource}@1")
    [upload] = vertex.calls("UploadModel")
    body = upload.body
    assert upload.path == "/v1/projects/demo-project/locations/us-central1/models:upload"
    assert body["modelId"] == "nav-001-navigationagent" and "parentModel" not in body
    assert body["model"]["artifactUri"] == f"gs://unity-policies/vertex/nav-001-navigationagent/{run_id}"
    assert body["model"]["containerSpec"]["imageUri"] == "us-docker.pkg.dev/demo/serving/onnx:1"
    assert body["model"]["labels"] == {"mlflow_model": "nav-001-navigationagent", "mlflow_version": "1",
                                       "mlflow_run_id": run_id, "asset": "nav-001", "behavior": "navigationagent",
                                       "git_commit": mlflow.MlflowClient().get_run(run_id).data.tags["git.commit"],
                                       "managed_by": "mlops-unity-pipeline", "team": "robotics"}
    assert vertex.calls("MergeVersionAliases")[0].body == {"versionAliases": ["challenger", "champion"]}
    objects = bucket_objects(gcs)
    prefix = f"vertex/nav-001-navigationagent/{run_id}/"
    assert f"{prefix}NavigationAgent.onnx" in objects and f"{prefix}mlflow_model/MLmodel" in objects
    assert mlflow.MlflowClient().get_model_version(MODEL, "1").tags["vertex.resource_name"] == f"{resource}@1"

    better = register.register(plan, challenger(run_id, onnx_path, 1.0, 0.76, 1.0))
    assert better.vertex_uri == f"{resource}@2"
    second = vertex.calls("UploadModel")[1].body
    assert second["parentModel"] == resource and "modelId" not in second
    assert second["model"]["labels"]["mlflow_version"] == "2"
    assert vertex.calls("MergeVersionAliases")[-1].body == {"versionAliases": ["challenger", "champion", "default"]}
    model = vertex.models[resource]
    assert model.versions["2"]["versionAliases"] == ["challenger", "champion", "default"]
    assert model.versions["1"]["versionAliases"] == []

    register.register(plan, run_id)  # re-run: found by its label, nothing uploaded again
    assert len(vertex.calls("UploadModel")) == 2 and versions() == [1, 2]


def test_a_failed_upload_leaves_mlflow_consistent_and_a_retry_completes_it(reg, cloud):
    run_id, _ = reg
    vertex, gcs, overrides = cloud
    plan = plan_with(*overrides)
    vertex.fail_next("UploadModel", 403, "Permission 'aiplatform.models.upload' denied on resource")
    with pytest.raises(ConfigError) as err:
        register.register(plan, run_id)
    message = str(err.value)
    assert message.startswith("Vertex AI: permission denied to upload a version of projects/demo-project/locations/"
                              "us-central1/models/nav-001-navigationagent (403 POST")
    assert "grant roles/aiplatform.user on project demo-project to the credentials in use (anonymous (emulator))" \
        in message
    assert message.endswith(f"re-run `python -m pipeline.cli register --run_id {run_id}` to complete the Vertex AI "
                            "mirror")
    [failed] = register_runs("FAILED")
    assert failed.data.tags["pipeline.error"].startswith("VertexError: Vertex AI: permission denied")
    assert versions() == [1] and aliases_of(1) == ["challenger", "champion"]
    assert mlflow.MlflowClient().get_model_version(MODEL, "1").tags["vertex.status"].startswith("failed: ")
    staged = bucket_objects(gcs)
    assert staged and vertex.models == {}

    retry = register.register(plan, run_id)
    assert (retry.version, retry.created, retry.vertex_status) == ("1", False, "registered")
    assert bucket_objects(gcs) == staged  # same generations: nothing uploaded twice
    assert len(vertex.calls("UploadModel")) == 2 and len(vertex.models) == 1
    record = mlflow.artifacts.load_dict(f"runs:/{retry.run_id}/vertex_registration.json")
    assert record["vertex"]["staged_files"] == [] and "NavigationAgent.onnx" in record["vertex"]["already_staged"]


def test_an_unreachable_endpoint_fails_the_run_with_the_reason(reg):
    run_id, _ = reg
    endpoint = f"http://127.0.0.1:{free_port()}"
    plan = plan_with("registry.vertex_project=demo-project", f"registry.api_endpoint={endpoint}",
                     "registry.credentials=anonymous", "registry.serving_container_image_uri=img:1",
                     "registry.timeout_s=2")
    with pytest.raises(ServiceUnavailable) as err:  # a service that is down, not bad input (exit code 1, not 2)
        register.register(plan, run_id)
    assert not isinstance(err.value, ConfigError)
    assert str(err.value).startswith(f"Vertex AI: cannot reach {endpoint} to look up model projects/demo-project/"
                                     "locations/us-central1/models/nav-001-navigationagent (")
    assert [r.info.status for r in register_runs()] == ["FAILED"] and aliases_of(1) == ["challenger", "champion"]


def test_an_unreachable_endpoint_on_the_command_line_exits_1_with_one_error_line(reg):
    run_id, _ = reg
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: connections are refused
    overrides = (f"registry.vertex_project=demo-project registry.api_endpoint={endpoint} "
                 "registry.credentials=anonymous registry.serving_container_image_uri=img:1 registry.timeout_s=2")
    done = subprocess.run([PYTHON, "-m", "pipeline.cli", "register", "--run_id", run_id, "--overrides", overrides],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: Vertex AI: cannot reach {endpoint} to look up model projects/demo-project/"
                           "locations/us-central1/models/nav-001-navigationagent (")
    assert last.endswith(f"re-run `python -m pipeline.cli register --run_id {run_id}` to complete the Vertex AI mirror")
    assert "Traceback" not in done.stderr
