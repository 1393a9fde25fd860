"""`-e build` with a (stand-in) Unity editor: success, the editor's error surfaced, timeout, unchanged-inputs skip."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from pipeline.config.compose import compose_plan
from pipeline.config.errors import ConfigError
from pipeline.stages import build
from pipeline.unity.editor import BuildFailed
from tests.support.process import REPO
from tests.support.store import all_runs
from tests.test_unity_player import alive_with

EDITOR = REPO / "tests" / "fake_unity_editor"


def project(tmp_path: Path, mode: str = "ok") -> Path:
    root = tmp_path / "NavProject"
    (root / "Assets").mkdir(parents=True, exist_ok=True)
    (root / "ProjectSettings").mkdir(exist_ok=True)
    (root / "Assets" / "NavAgent.cs").write_text("public class NavAgent : Agent {}\n")
    (root / "ProjectSettings" / "ProjectVersion.txt").write_text("m_EditorVersion: 2022.3.40f1\n")
    (root / "fake-editor.mode").write_text(mode)
    return root


def overrides(tmp_path: Path, root: Path, *extra: str) -> list[str]:
    return [f"build.unity_project={root}", f"build.editor_path={EDITOR}",
            f"build.output_path={tmp_path / 'builds' / 'Nav.x86_64'}", *extra]


def test_the_editor_builds_the_player_then_unchanged_inputs_skip_the_rebuild(store, tmp_path):
    root = project(tmp_path)
    plan = compose_plan(overrides(tmp_path, root))
    first = build.build(plan)
    player = tmp_path / "builds" / "Nav.x86_64"
    assert player.is_file() and (tmp_path / "builds" / "Nav_Data" / "data.unity3d").is_file()
    client = mlflow.MlflowClient()
    tags = client.get_run(first.run_id).data.tags
    assert tags["build.skipped"] == "false" and tags["player.sha256"] == first.fingerprint
    assert tags["player.path"] == str(player)
    log = Path(mlflow.artifacts.download_artifacts(run_id=first.run_id, artifact_path="build/Editor.log",
                                                   dst_path=str(tmp_path / "dl")))
    assert "Build Finished, Result: Success." in log.read_text()

    second = build.build(plan)  # nothing changed
    tags2 = client.get_run(second.run_id).data.tags
    assert tags2["build.skipped"] == "true" and second.fingerprint == first.fingerprint

    (root / "Assets" / "NavAgent.cs").write_text("public class NavAgent : Agent { int speed; }\n")
    third = build.build(plan)  # a changed script rebuilds, and the player's content hash follows
    assert client.get_run(third.run_id).data.tags["build.skipped"] == "false"
    assert third.fingerprint != first.fingerprint
    assert all(r.info.status == "FINISHED" for r in all_runs())


def test_a_compile_error_fails_the_build_with_the_editors_error_and_log(store, tmp_path):
    plan = compose_plan(overrides(tmp_path, project(tmp_path, "error")))
    with pytest.raises(BuildFailed) as err:
        build.build(plan)
    assert "failed with exit code 1" in str(err.value)
    assert "Assets/Scripts/NavAgent.cs(12,34): error CS1002: ; expected" in str(err.value)
    [run] = all_runs()
    assert run.info.status == "FAILED" and "error CS1002" in run.data.tags["pipeline.error"]
    assert [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "build")] == ["build/Editor.log"]


def test_an_editor_that_never_finishes_is_stopped_at_the_timeout(store, tmp_path):
    root = project(tmp_path, "hang")
    plan = compose_plan(overrides(tmp_path, root, "build.timeout_s=2"))
    with pytest.raises(BuildFailed, match=r"did not finish within build.timeout_s=2s and was stopped"):
        build.build(plan)
    [run] = all_runs()
    assert run.info.status == "FAILED"
    assert alive_with("sleep 600") == []


def test_bad_build_settings_name_the_key_and_create_no_run(store, tmp_path):
    root = project(tmp_path)
    cases = {
        f"build.unity_project={tmp_path}": "not a Unity project (it needs Assets/ and ProjectSettings/)",
        f"build.editor_path={tmp_path / 'Unity'}": "no such file; give the Unity editor executable",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            build.build(compose_plan(overrides(tmp_path, root) + [override]))
    assert all_runs() == []


def test_without_unity_the_build_stage_says_which_environment_is_used(store, tmp_path):
    result = build.build(compose_plan([]))
    assert result.environment.startswith("built-in simulation 'nav'")
    assert "set env_path to train on a player" in result.environment
