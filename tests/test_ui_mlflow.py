"""The MLflow UI, for real: a small sweep's store behind `mlflow ui`, opened in headless Chromium.

Chromium is driven through chromedriver's W3C WebDriver HTTP API (no client library needed).
Needs Debian's `chromium` and `chromium-driver` packages. The screenshot is saved in the test's
tmp dir, in $TEST_ARTIFACTS_DIR when set (CI keeps that folder), and on the sweep's parent run.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from pipeline.tracking.tracking_server import TrackingServer, free_port
from tests.test_sweep import TINY_NO_RESULTS, run, runs_of, sweep_store

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1600,1400"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs headless Chromium: apt-get install -y chromium chromium-driver")]


class Browser:
    """One headless Chromium session through chromedriver's WebDriver endpoint."""

    def __init__(self, profile: Path):
        self.port = free_port()
        self.driver = subprocess.Popen([DRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                self._call("GET", "/status")
                break
            except OSError:
                time.sleep(0.2)
        caps = {"goog:chromeOptions": {"binary": CHROMIUM, "args": FLAGS + [f"--user-data-dir={profile}"]}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _call(self, method: str, path: str, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())["value"]

    def open(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def script(self, js: str):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": js, "args": []})

    def text_once(self, *needles: str, attempts: int = 90) -> str:
        """The page's text once the single-page app has rendered all `needles` (or its last text)."""
        text = ""
        for _ in range(attempts):
            text = self.script("return document.body ? document.body.innerText : ''")
            if all(n in text for n in needles):
                break
            time.sleep(1)
        return text

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot")))
        return path

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=20)


def shown(value: float) -> set[str]:
    """How the UI may print a metric: rounded to 3 decimals, trailing zeros dropped."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return {text, "0" if text in ("-0", "") else text}


def test_mlflow_ui_lists_the_sweeps_children_with_params_and_eval_metrics(tmp_path):
    env = sweep_store(tmp_path)
    uri = env["MLFLOW_TRACKING_URI"]
    proc = run(["-m", "pipeline.run", "-m", "seed=0,1", *TINY_NO_RESULTS, f"results_dir={tmp_path / 'results'}",
                f"hydra.sweep.dir={tmp_path / 'multirun'}"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,) = runs_of(uri, "tags.`pipeline.stage` = 'sweep'")
    children = sorted(runs_of(uri, f"tags.mlflow.parentRunId = '{parent.info.run_id}'"),
                      key=lambda r: r.data.params["seed"])
    exp = parent.info.experiment_id

    with TrackingServer(uri, log_path=tmp_path / "mlflow_ui.log", ui=True) as ui:
        browser = Browser(tmp_path / "chromium-profile")
        try:
            browser.open(f"{ui.url}/#/experiments/{exp}/runs")
            listing = browser.text_once(parent.info.run_name)
            assert parent.info.run_name in listing  # the sweep's parent run is in the experiment's runs

            ids = json.dumps([c.info.run_id for c in children])
            browser.open(f"{ui.url}/#/compare-runs?runs={ids}&experiments={json.dumps([exp])}")
            names = [c.info.run_name for c in children]
            text = browser.text_once("eval/success_rate", "eval/mean_reward", *names)
            browser.script("const e=[...document.querySelectorAll('*')].find(n=>n.childElementCount===0&&"
                           "n.textContent.trim()==='Run details'); if(e) e.scrollIntoView(); return 1")
            shot = browser.screenshot(tmp_path / "mlflow_ui_sweep_compare.png")
        finally:
            browser.close()

    for name in names:
        assert name in text  # each child run, by its job and the seed it varies
    lines = text.splitlines()
    assert any(line.split("\t") == ["seed", "0", "1"] or line.split("\t") == ["seed", "1", "0"] for line in lines)
    assert any(line.startswith("max_steps\t3000\t3000") for line in lines)  # the overrides, side by side
    for key in ("eval/success_rate", "eval/mean_reward", "eval/success_rate_ci_low", "eval/success_rate_ci_high"):
        assert key in text
    for child in children:
        assert shown(child.data.metrics["eval/mean_reward"]) & set(lines), child.data.metrics["eval/mean_reward"]

    assert shot.stat().st_size > 20_000
    if os.environ.get("TEST_ARTIFACTS_DIR"):
        Path(os.environ["TEST_ARTIFACTS_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["TEST_ARTIFACTS_DIR"]) / shot.name)
    mlflow.MlflowClient(uri).log_artifact(parent.info.run_id, str(shot), "ui")
