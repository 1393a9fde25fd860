"""The guide's dataclasses check their own fields when constructed: the error names the field and the fix."""
from __future__ import annotations

import re

import numpy as np
import pytest

from mlops_unity_pipeline import (
    RLTrainingConfig,
    TrainingJob,
    TrainingSchedule,
    TrainingScheduler,
    UnityAssetSpec,
    UnityMLOpsOrchestrator,
    jobs,
    specs,
)
from tests.support.process import REPO

GUIDE = REPO / "docs" / "unity_mlops_setup_guide.md"
NAV = dict(asset_id="nav-001", name="NavigationAgent")


def test_the_specs_live_in_specs_py_and_are_re_exported():
    assert UnityAssetSpec is specs.UnityAssetSpec is jobs.UnityAssetSpec
    assert RLTrainingConfig is specs.RLTrainingConfig is jobs.RLTrainingConfig
    assert TrainingJob is specs.TrainingJob is jobs.TrainingJob


def test_the_guides_examples_construct_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the offline example's relative dataset path is found in the repository
    text = GUIDE.read_text()
    offline = re.search(r"## Offline RL Mode.*?```python\n(.*?)```", text, re.S).group(1)
    scope: dict = {"RLTrainingConfig": RLTrainingConfig}
    exec(offline, scope)  # noqa: S102 - the guide's own snippet
    assert scope["config"].training_mode == "offline" and scope["config"].max_steps == 1_000_000
    asset = UnityAssetSpec(asset_id="nav-001", name="NavigationAgent", asset_type="behavior",
                           description="Navigate around obstacles to a target.",
                           observation_space={"raycast": 8, "velocity": 2},
                           action_space={"type": "continuous", "size": 2})
    job = TrainingJob(job_id="test-job", asset_spec=asset,
                      rl_config=RLTrainingConfig(algorithm="PPO", max_steps=100_000, num_envs=8, time_scale=20.0))
    assert job.rl_config.num_envs == 8
    schedule = TrainingSchedule(schedule_id="nightly", cron_expression="0 2 * * *",
                                asset_specs=[UnityAssetSpec(asset_id="agent-1", name="PatrolAgent",
                                                            asset_type="behavior", description="Patrol waypoints.")],
                                rl_config=RLTrainingConfig(algorithm="PPO", max_steps=500_000))
    assert schedule.misfire_policy == "skip"


def test_lowercase_names_and_whole_valued_floats_are_accepted():
    config = RLTrainingConfig(algorithm="sac", max_steps=1e5, seed=2**31 - 1)
    assert config.max_steps == 100_000 and isinstance(config.max_steps, int)
    assert RLTrainingConfig(num_envs=np.int64(4)).num_envs == 4  # e.g. from a numpy grid
    spec = UnityAssetSpec(**NAV, observation_space={"raycast": 8.0},
                          action_space={"type": "discrete", "branches": [5, 3]})
    assert spec.observation_space == {"raycast": 8} and spec.action_space["branches"] == [5, 3]


BAD = [
    (lambda: RLTrainingConfig(max_steps=0), ValueError,
     "RLTrainingConfig.max_steps must be >= 1, got 0 (e.g. max_steps=100_000)"),
    (lambda: RLTrainingConfig(max_steps=True), TypeError,
     "RLTrainingConfig.max_steps must be a whole number, got bool True (e.g. max_steps=100_000)"),
    (lambda: RLTrainingConfig(max_steps=None), TypeError,
     "RLTrainingConfig.max_steps must be a whole number, got NoneType None (e.g. max_steps=100_000)"),
    (lambda: RLTrainingConfig(max_steps=2500.5), ValueError,
     "RLTrainingConfig.max_steps must be a whole number, got 2500.5; it would be truncated (e.g. max_steps=100_000)"),
    (lambda: RLTrainingConfig(num_envs=0), ValueError,
     "RLTrainingConfig.num_envs must be >= 1, got 0 (e.g. num_envs=2)"),
    (lambda: RLTrainingConfig(time_scale=float("inf")), ValueError,
     "RLTrainingConfig.time_scale must be a finite number > 0, got inf (e.g. time_scale=20.0)"),
    (lambda: RLTrainingConfig(time_scale=0), ValueError,
     "RLTrainingConfig.time_scale must be a finite number > 0, got 0 (e.g. time_scale=20.0)"),
    (lambda: RLTrainingConfig(seed=-1), ValueError,
     "RLTrainingConfig.seed must be between 0 and 2147483647, got -1 (e.g. seed=0)"),
    (lambda: RLTrainingConfig(seed=2**31), ValueError,
     "RLTrainingConfig.seed must be between 0 and 2147483647, got 2147483648 (e.g. seed=0)"),
    (lambda: RLTrainingConfig(algorithm="ppo2"), ValueError,
     "RLTrainingConfig.algorithm must be one of PPO, SAC, POCA (or lowercase: poca, ppo, sac); got 'ppo2'"),
    (lambda: RLTrainingConfig(algorithm="Ppo"), ValueError,
     "RLTrainingConfig.algorithm must be one of PPO, SAC, POCA (or lowercase: poca, ppo, sac); got 'Ppo'"),
    (lambda: RLTrainingConfig(training_mode="batch"), ValueError,
     "RLTrainingConfig.training_mode must be one of online, offline, hybrid; got 'batch'"),
    (lambda: RLTrainingConfig(overrides="env.num_areas=8"), TypeError,
     "RLTrainingConfig.overrides must be a list of Hydra overrides (strings), got 'env.num_areas=8' "
     "(e.g. overrides=[\"env.num_areas=8\"])"),
    (lambda: RLTrainingConfig(training_mode="hybrid"), ValueError,
     "RLTrainingConfig.offline_dataset_path is required for training_mode='hybrid': the .jsonl or Unity .demo "
     "dataset to learn from (e.g. offline_dataset_path=\"data/demos/navigation_demo.jsonl\")"),
    (lambda: UnityAssetSpec(**NAV, observation_space={"raycast": 8.9}), ValueError,
     "UnityAssetSpec.observation_space['raycast'] must be a whole number, got 8.9; it would be truncated "
     "(e.g. {\"raycast\": 8})"),
    (lambda: UnityAssetSpec(**NAV, observation_space={"raycast": 0}), ValueError,
     "UnityAssetSpec.observation_space['raycast'] must be >= 1, got 0 (e.g. {\"raycast\": 8})"),
    (lambda: UnityAssetSpec(**NAV, observation_space=[8, 2]), TypeError,
     "UnityAssetSpec.observation_space must be a dict of sensor name -> size, got list "
     "(e.g. {\"raycast\": 8, \"velocity\": 2})"),
    (lambda: UnityAssetSpec(**NAV, action_space={"type": "continuous", "size": 2.5}), ValueError,
     "UnityAssetSpec.action_space['size'] must be a whole number, got 2.5; it would be truncated (e.g. 2)"),
    (lambda: UnityAssetSpec(**NAV, action_space={"type": "discrete", "branches": []}), ValueError,
     "UnityAssetSpec.action_space: a discrete action space has exactly the keys type and branches, a non-empty "
     "list of branch sizes, got {'type': 'discrete', 'branches': []} "
     "(e.g. {\"type\": \"discrete\", \"branches\": [5, 3]})"),
    (lambda: UnityAssetSpec(**NAV, action_space={"type": "multi", "size": 2}), ValueError,
     "UnityAssetSpec.action_space['type'] must be \"continuous\" or \"discrete\", got 'multi' "
     "({\"type\": \"continuous\", \"size\": 2} or {\"type\": \"discrete\", \"branches\": [5, 3]})"),
    (lambda: UnityAssetSpec(asset_id="nav/001", name="NavigationAgent"), ValueError,
     "UnityAssetSpec.asset_id must be a plain name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
     "digit, no '/' or '..'; got 'nav/001' (e.g. asset_id=\"nav-001\")"),
    (lambda: UnityAssetSpec(asset_id="nav-001", name=None), TypeError,
     "UnityAssetSpec.name must be a string, got NoneType None (e.g. name=\"NavigationAgent\" (the Behavior Name in "
     "Unity))"),
    (lambda: TrainingJob("../etc", UnityAssetSpec(**NAV), RLTrainingConfig()), ValueError,
     "TrainingJob.job_id must be a plain name: 1-255 letters, digits, '.', '_' or '-', starting with a letter or "
     "digit, no '/' or '..'; got '../etc' (e.g. job_id=\"nav-nightly\")"),
    (lambda: TrainingJob("a..b", UnityAssetSpec(**NAV), RLTrainingConfig()), ValueError,
     "TrainingJob.job_id must be a plain name"),
    (lambda: TrainingJob("j", {"asset_id": "nav-001"}, RLTrainingConfig()), TypeError,
     "TrainingJob.asset_spec must be a UnityAssetSpec, got dict"),
    (lambda: TrainingSchedule("nightly", "0 2 * *", [UnityAssetSpec(**NAV)]), ValueError,
     "TrainingSchedule.cron_expression '0 2 * *' has 4 fields; a schedule needs exactly five"),
    (lambda: TrainingSchedule("nightly", "0 2 * * *", [UnityAssetSpec(**NAV)], time_zone="Mars/Base"), ValueError,
     "TrainingSchedule.time_zone 'Mars/Base' is not an IANA time zone"),
    (lambda: TrainingSchedule("nightly", "0 2 * * *", []), TypeError,
     "TrainingSchedule.asset_specs must be a non-empty list of UnityAssetSpec, got []"),
    (lambda: TrainingSchedule("nightly", "0 2 * * *", [UnityAssetSpec(**NAV)], misfire_policy="later"), ValueError,
     "TrainingSchedule.misfire_policy must be one of skip, run_once; got 'later'"),
    (lambda: TrainingSchedule("nightly", "0 2 * * *", [UnityAssetSpec(**NAV)], overlap_policy="queue"), ValueError,
     "TrainingSchedule.overlap_policy must be one of allow, forbid, replace; got 'queue'"),
    (lambda: TrainingSchedule("nightly", "0 2 * * *", [UnityAssetSpec(**NAV)], misfire_grace_seconds=-1), ValueError,
     "TrainingSchedule.misfire_grace_seconds must be a finite number of seconds >= 0, got -1 "
     "(e.g. misfire_grace_seconds=3600)"),
    (lambda: TrainingSchedule("night/ly", "0 2 * * *", [UnityAssetSpec(**NAV)]), ValueError,
     "TrainingSchedule.schedule_id must be a plain name"),
    (lambda: TrainingScheduler(UnityMLOpsOrchestrator(), max_concurrent_jobs=0), ValueError,
     "TrainingScheduler.max_concurrent_jobs must be >= 1, got 0 (e.g. max_concurrent_jobs=4)"),
    (lambda: TrainingScheduler(UnityMLOpsOrchestrator(), max_concurrent_jobs=2.5), ValueError,
     "TrainingScheduler.max_concurrent_jobs must be a whole number, got 2.5; it would be truncated"),
]


@pytest.mark.parametrize(("make", "kind", "message"), BAD, ids=[m[:60] for _, _, m in BAD])
def test_a_bad_field_is_refused_at_construction_naming_the_field_and_the_fix(make, kind, message):
    with pytest.raises(kind) as err:
        make()
    assert str(err.value).startswith(message)


def test_offline_and_hybrid_need_a_dataset_that_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as err:
        RLTrainingConfig(training_mode="offline", offline_dataset_path="data/demos/missing.jsonl")
    assert str(err.value) == (
        f"RLTrainingConfig.offline_dataset_path='data/demos/missing.jsonl' does not exist (looked in {tmp_path} and "
        f"{REPO}); record one with `scripts/record_demos.py record` or give the path of an existing .jsonl/.demo file")
    demo = tmp_path / "mine.jsonl"
    demo.write_text("{}\n")
    assert RLTrainingConfig(training_mode="hybrid", offline_dataset_path=demo).offline_dataset_path == str(demo)
