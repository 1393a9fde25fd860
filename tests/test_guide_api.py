"""The user's setup guide (docs/unity_mlops_setup_guide.md): its Quick Start runs verbatim, for real."""
from __future__ import annotations

import asyncio
import re
import subprocess
import time

import pytest

from mlops_unity_pipeline import RLTrainingConfig, TrainingJob, UnityAssetSpec, UnityMLOpsOrchestrator
from tests.support.process import PYTHON, REPO, child_env
from tests.support.store import all_runs
from tests.support.training import TINY

pytestmark = pytest.mark.slow
GUIDE = REPO / "docs" / "unity_mlops_setup_guide.md"


def guide_block(heading: str) -> str:
    text = GUIDE.read_text()
    section = text.split(f"## {heading}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_start_runs_verbatim_and_prints_the_result(store, tmp_path):
    script = tmp_path / "quick_start.py"
    script.write_text(guide_block("Quick Start"))
    # Only the budget is shrunk, from outside the code, as a site would for a smoke test.
    budget = [o for o in TINY if not o.startswith("env.num_envs")]  # keep the guide's num_envs=8
    env = child_env(MLOPS_PIPELINE_OVERRIDES=" ".join(budget + [f"results_dir={tmp_path / 'results'}"]))
    proc = subprocess.run([PYTHON, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "TrainingJobResult test-job: FINISHED (asset nav-001)" in out
    assert re.search(r"ONNX policy: runs:/[0-9a-f]{32}/unity/NavigationAgent\.onnx", out)
    assert "eval/success_rate=" in out and "MLflow runs: build=" in out
    runs = {r.data.tags["pipeline.stage"]: r for r in all_runs()}
    assert runs["train"].info.status == "FINISHED" and runs["train"].data.params["env.num_envs"] == "8"
    assert runs["main"].data.tags["asset"] == "nav-001"


def test_execute_training_job_does_not_block_the_event_loop(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_PIPELINE_OVERRIDES", " ".join(TINY + [f"results_dir={tmp_path / 'results'}"]))
    job = TrainingJob("patrol-job", UnityAssetSpec("agent-1", "PatrolAgent", description="Patrol waypoints."),
                      RLTrainingConfig(algorithm="PPO", max_steps=3000, num_envs=1))

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        t = asyncio.create_task(ticker())
        start = time.monotonic()
        result = await UnityMLOpsOrchestrator().execute_training_job(job)
        t.cancel()
        return result, ticks, time.monotonic() - start

    result, ticks, elapsed = asyncio.run(main())
    assert result.status == "FINISHED", result.error
    assert result.training_metrics and "eval/success_rate" in result.eval_metrics
    # The loop kept ticking throughout training (about every 50 ms, so at least half of them).
    assert ticks >= elapsed / 0.05 / 2


def test_an_unknown_behavior_without_a_build_is_refused():
    job = TrainingJob("j", UnityAssetSpec("x-1", "TankAgent"), RLTrainingConfig())
    with pytest.raises(ValueError,
                       match=r"UnityAssetSpec.name 'TankAgent' has no built-in simulation .*NavigationAgent \(nav\)"):
        asyncio.run(UnityMLOpsOrchestrator().execute_training_job(job))


def test_a_bad_config_fails_the_job_with_the_reason_and_no_run(store):
    job = TrainingJob("j", UnityAssetSpec("nav-001", "NavigationAgent", observation_space={"raycast": 16}),
                      RLTrainingConfig(max_steps=1000))
    result = asyncio.run(UnityMLOpsOrchestrator().execute_training_job(job))
    assert result.status == "FAILED"
    assert result.error == "asset.observation_space.raycast=16 but simulation 'nav' gives 8 values for it"
    assert all_runs() == []
