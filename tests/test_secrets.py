"""Secrets never reach MLflow (params, tags, metric names, artifacts), ML-Agents' results, the console, the
claims database or webhook payloads.

Unique canaries stand in for every secret the product handles: the webhook signing secret
($MLOPS_WEBHOOK_SECRET), a service-account key file (its private key, key id and client email, and the
access token minted from it; also $GOOGLE_APPLICATION_CREDENTIALS), the password in an MLflow tracking URI,
and $MLFLOW_TRACKING_PASSWORD / $MLFLOW_TRACKING_TOKEN. One real scheduler fire then runs the `main`
pipeline (build, train, evaluate, register mirrored to the local Vertex AI / Cloud Storage emulators with
that key file) and delivers signed webhooks to a local receiver; afterwards everything it wrote is scanned.

The scan is proven to look where it claims: a tracer (the schedule id, which legitimately flows into every
sink) must be found in each sink, and values planted on purpose must be found where they were planted.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
import subprocess
import threading
import uuid
import zipfile
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import ViewType

from mlops_unity_pipeline import (
    RLTrainingConfig,
    TrainingSchedule,
    TrainingScheduler,
    UnityAssetSpec,
    UnityMLOpsOrchestrator,
)
from pipeline.redaction import redact_uri
from pipeline.scheduling import webhooks
from pipeline.scheduling.cron import UTC
from pipeline.scheduling.runner import RunnerSettings
from tests.support.process import PYTHON
from tests.support.vertex_emulator import StorageEmulator, VertexEmulator, free_port
from tests.test_scheduling import Receiver
from tests.test_scheduling_e2e import ShiftedClock, run_until, tiny_overrides


def canary(kind: str) -> str:
    """Alphanumeric, so no escaping (JSON, YAML, URL, shell quoting) can hide it from the scan."""
    return f"{kind}{uuid.uuid4().hex}"


# -- the scanner ---------------------------------------------------------------------------------------
class Scanner:
    """Looks for every needle in every piece of text or file it is given; records (needle name, place)."""

    def __init__(self, needles: dict[str, str]):
        self.needles = {name: value.encode() for name, value in needles.items()}
        self.hits: list[tuple[str, str]] = []

    def text(self, data, place: str) -> None:
        raw = data if isinstance(data, bytes) else str(data).encode(errors="surrogateescape")
        for name, needle in self.needles.items():
            if needle in raw:
                self.hits.append((name, place))

    def file(self, path: Path, place: str) -> None:
        raw = path.read_bytes()
        self.text(raw, place)
        if zipfile.is_zipfile(path):  # torch checkpoints, anything zipped: their members, decompressed
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    self.text(z.read(member), f"{place}!{member}")
        elif raw[:2] == b"\x1f\x8b":
            self.text(gzip.decompress(raw), f"{place}!gunzip")

    def tree(self, root: Path, place: str, skip: tuple[Path, ...] = ()) -> int:
        count = 0
        for path in sorted(Path(root).rglob("*")):
            if path.is_file() and not any(path == s or s in path.parents for s in skip):
                self.file(path, f"{place}/{path.relative_to(root)}")
                count += 1
        return count

    def found(self, name: str) -> set[str]:
        return {place for n, place in self.hits if n == name}


def scan_mlflow(scanner: Scanner, download_to: Path) -> None:
    """Every experiment, run (params, tags, metric names), artifact (downloaded) and registered model."""
    client = mlflow.MlflowClient()
    for exp in client.search_experiments(view_type=ViewType.ALL):
        scanner.text(json.dumps({"name": exp.name, "tags": exp.tags}), f"experiment {exp.name}")
        for run in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
            rid, stage = run.info.run_id, run.data.tags.get("pipeline.stage", "?")
            scanner.text(run.info.run_name or "", f"run name {stage}")
            for k, v in run.data.params.items():
                scanner.text(f"{k}={v}", f"param {stage}:{k}")
            for k, v in run.data.tags.items():
                scanner.text(f"{k}={v}", f"tag {stage}:{k}")
            for k in run.data.metrics:
                scanner.text(k, f"metric name {stage}:{k}")
            local = Path(mlflow.artifacts.download_artifacts(run_id=rid, dst_path=str(download_to / rid)))
            scanner.tree(local, f"artifacts {stage}")
    for model in client.search_registered_models():
        scanner.text(json.dumps({"name": model.name, "tags": model.tags, "description": model.description,
                                 "aliases": model.aliases}, default=str), f"registered model {model.name}")
        for v in client.search_model_versions(f"name='{model.name}'"):
            scanner.text(json.dumps({"tags": v.tags, "description": v.description, "source": v.source},
                                    default=str), f"model version {model.name} v{v.version}")


# -- the fake Google identity ----------------------------------------------------------------------------
class TokenServer:
    """A stand-in for oauth2.googleapis.com/token: answers a signed JWT assertion with an access token."""

    def __init__(self, access_token: str):
        self.assertions: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                outer.assertions.append(body)
                reply = json.dumps({"access_token": access_token, "expires_in": 3600, "token_type": "Bearer"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def service_account_key(path: Path, token_uri: str) -> dict[str, str]:
    """A real (freshly generated) RSA service-account key file; returns the canaries it carries."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    key_id = canary("pkid")
    email = f"{canary('sa')}@demo-project.iam.gserviceaccount.com"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "demo-project", "private_key_id": key_id, "private_key": pem,
        "client_email": email, "client_id": "100000000000000000001", "token_uri": token_uri,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "universe_domain": "googleapis.com"}))
    body = pem.splitlines()[1:-1]
    return {"sa.private_key": body[5], "sa.private_key_tail": body[-2], "sa.private_key_id": key_id,
            "sa.client_email": email}


# -- the end-to-end fire -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_scheduled_pipeline_run_leaks_no_secret_anywhere(store, tmp_path, monkeypatch, capfd):
    secrets_dir = tmp_path / "secrets"  # the only place the secrets are meant to be: never scanned
    secrets_dir.mkdir()
    access_token = f"ya29.{canary('token')}"
    tokens = TokenServer(access_token)
    key_file = secrets_dir / "sa-key.json"
    secrets = {"webhook secret": canary("whsec"), "sa.access_token": access_token,
               **service_account_key(key_file, tokens.url),
               "tracking uri password": canary("dbpw"), "MLFLOW_TRACKING_PASSWORD": canary("mlpw"),
               "MLFLOW_TRACKING_TOKEN": canary("mltok")}
    monkeypatch.setenv("MLOPS_WEBHOOK_SECRET", secrets["webhook secret"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secrets["MLFLOW_TRACKING_PASSWORD"])
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", secrets["MLFLOW_TRACKING_TOKEN"])
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(secrets_dir / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    # The job's tracking.tracking_uri carries a password; $MLFLOW_TRACKING_URI (the test store) wins over a config
    # value, so the runs land in the test store while the password-bearing URI goes through the whole config path.
    # (An orchestrator's explicit tracking_uri would win over the environment: the guide's promise, issue 12.)
    db_uri = f"postgresql://mlflow:{secrets['tracking uri password']}@db.invalid:5432/mlflow"
    tracer = f"trace{uuid.uuid4().hex[:10]}"  # the schedule id: flows into every sink, so it must be found

    receiver = Receiver(secret=secrets["webhook secret"])
    vertex, gcs = VertexEmulator().start(), StorageEmulator(("unity-policies",)).start()
    registry = ["registry.vertex_project=demo-project", f"registry.api_endpoint={vertex.endpoint}",
                f"registry.storage_endpoint={gcs.endpoint}", "registry.staging_bucket=gs://unity-policies/vertex",
                f"registry.credentials={key_file}",
                "registry.serving_container_image_uri=us-docker.pkg.dev/demo/serving/onnx:1"]
    due = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0)
    clock = ShiftedClock()
    try:
        scheduler = TrainingScheduler(UnityMLOpsOrchestrator(), max_concurrent_jobs=1,
                                      webhook_url=receiver.url, state_path=tmp_path / "scheduler.db", clock=clock)
        scheduler.add_schedule(TrainingSchedule(
            tracer, "0 3 * * *", [UnityAssetSpec(asset_id="nav-001", name="NavigationAgent")],
            RLTrainingConfig(max_steps=2000, num_envs=1,
                             overrides=[*tiny_overrides(tmp_path), *registry, f"tracking.tracking_uri='{db_uri}'"])))
        clock.start(due - timedelta(seconds=1))
        ended = lambda: any(g["body"]["event"] in ("fire.succeeded", "fire.failed") for g in receiver.got)  # noqa: E731
        asyncio.run(run_until(scheduler, ended, timeout=300))
    finally:
        receiver.close()
        vertex.stop()
        gcs.stop()
        tokens.close()

    # The fire really ran, really signed its webhooks and really used the key file.
    events = [g["body"] for g in receiver.got]
    assert [e["event"] for e in events] == ["fire.started", "fire.succeeded"], events
    assert all(g["verified"] for g in receiver.got)
    assert events[1]["registry"]["vertex_status"] == "registered", events[1]
    assert vertex.calls("UploadModel") and tokens.assertions, "the service-account key was not used"
    train_run = mlflow.MlflowClient().get_run(events[1]["run_ids"]["train"])  # the URI went through, redacted
    assert train_run.data.params["tracking.tracking_uri"] == "postgresql://mlflow:***@db.invalid:5432/mlflow"

    # Planted on purpose: the scan must find exactly these.
    client = mlflow.MlflowClient()
    main_run = events[1]["run_id"]
    planted = canary("planted")
    client.set_tag(main_run, "test.planted", planted)
    client.log_metric(main_run, f"test/{planted}", 1.0)
    client.log_text(main_run, planted, "planted/note.txt")
    subprocess.run([PYTHON, "-c", f"import sys; sys.stderr.write('{planted}\\n')"], check=True)

    out, err = capfd.readouterr()
    scanner = Scanner({**secrets, "tracer": tracer, "planted": planted})
    scanner.text(out, "stdout")
    scanner.text(err, "stderr")
    for i, got in enumerate(receiver.got):
        scanner.text(json.dumps(got["body"]), f"webhook body {i}")
        scanner.text(json.dumps(got["headers"]), f"webhook headers {i}")
    scan_mlflow(scanner, tmp_path.parent / f"{tmp_path.name}-downloads")
    claims = [p for p in tmp_path.glob("scheduler.db*")]
    assert claims
    for p in claims:
        scanner.file(p, f"claims db {p.name}")
    assert scanner.tree(tmp_path / "results", "results") > 5
    assert scanner.tree(tmp_path, "tmp", skip=(secrets_dir,)) > 10  # mlflow.db, mlruns/, results/, scheduler*

    leaks = sorted((name, place) for name, place in scanner.hits if name in secrets)
    assert leaks == [], "secrets leaked:\n" + "\n".join(f"  {n} -> {p}" for n, p in leaks)

    # Not vacuous: the scanner saw the tracer and the planted values in every kind of sink.
    seen = scanner.found("tracer")
    # (Not results/: since launches are typed, no job text reaches ML-Agents' files through argv; it was
    # scanned above all the same.)
    for kind in ("stdout", "webhook body", "claims db", "param ", "tag ", "artifacts train/config.yaml",
                 "tmp/mlflow.db"):
        assert any(p.startswith(kind) or kind in p for p in seen), (kind, sorted(seen))
    got = scanner.found("planted")
    for kind in ("stderr", "tag main:test.planted", f"metric name main:test/{planted}",
                 "artifacts main/planted/note.txt", "tmp/mlflow.db"):
        assert any(p.startswith(kind) for p in got), (kind, sorted(got))


@pytest.mark.slow
def test_a_fire_whose_tracking_server_is_down_leaks_no_password(store, tmp_path, monkeypatch, capfd):
    """MLflow's own errors quote the tracking URI whole ("API request to http://user:PASSWORD@host/... failed"):
    the job's stderr, its webhook's `error`, the outbox, the runner's log and the claims database get it."""
    password, secret = canary("httppw"), canary("whsec")
    port = free_port()  # nothing listens: every MLflow call fails at once
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://mlflow:{password}@127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    tracer = f"trace{uuid.uuid4().hex[:10]}"
    receiver = Receiver(secret=secret)
    due = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0)
    clock = ShiftedClock()
    try:
        scheduler = TrainingScheduler(UnityMLOpsOrchestrator(), webhook_url=receiver.url, webhook_secret=secret,
                                      state_path=tmp_path / "scheduler.db", clock=clock)
        scheduler.add_schedule(TrainingSchedule(tracer, "0 3 * * *", [UnityAssetSpec("nav-001", "NavigationAgent")],
                                                RLTrainingConfig(max_steps=2000, overrides=tiny_overrides(tmp_path))))
        clock.start(due - timedelta(seconds=1))
        ended = lambda: any(g["body"]["event"] in ("fire.succeeded", "fire.failed") for g in receiver.got)  # noqa: E731
        asyncio.run(run_until(scheduler, ended, timeout=120))
    finally:
        receiver.close()
        mlflow.set_tracking_uri(store)
    out, err = capfd.readouterr()

    events = [g["body"] for g in receiver.got]
    assert [e["event"] for e in events] == ["fire.started", "fire.failed"], events
    assert all(g["verified"] for g in receiver.got)
    shown = f"mlflow:***@127.0.0.1:{port}"  # the URI was in those messages: redacted, not dropped
    assert shown in events[1]["error"] and shown in err, (events[1], err[-2000:])

    scanner = Scanner({"password": password, "webhook secret": secret, "tracer": tracer})
    scanner.text(out, "stdout")
    scanner.text(err, "stderr")
    for i, got in enumerate(receiver.got):
        scanner.text(json.dumps(got["body"]), f"webhook body {i}")
        scanner.text(json.dumps(got["headers"]), f"webhook headers {i}")
    con = sqlite3.connect(str(tmp_path / "scheduler.db"))
    for table in ("fires", "jobs", "runners", "outbox"):
        for row in con.execute(f"SELECT * FROM {table}"):
            scanner.text(json.dumps(row, default=lambda b: b.decode(errors="replace")), f"claims {table}")
    con.close()
    for p in tmp_path.glob("scheduler.db*"):
        scanner.file(p, f"claims db file {p.name}")
    assert {"stdout", "webhook body 0", "claims jobs", "claims outbox"} <= {p.split(" (")[0] for p in
                                                                           scanner.found("tracer")}
    leaks = sorted((n, p) for n, p in scanner.hits if n != "tracer")
    assert leaks == [], "secrets leaked:\n" + "\n".join(f"  {n} -> {p}" for n, p in leaks)


# -- the pieces, quickly ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text,shown", [
    ("postgresql://mlflow:s3cret@db.example.com:5432/mlflow", "postgresql://mlflow:***@db.example.com:5432/mlflow"),
    ("http://user:s3cret@host", "http://user:***@host"),
    ("mysql+pymysql://u:p@ss:w0rd@db/mlflow", "mysql+pymysql://u:***@db/mlflow"),  # unencoded @ and :
    ("https://:s3cret@host/x", "https://:***@host/x"),
    ("postgresql://db/mlflow?user=u&password=s3cret&sslmode=require",
     "postgresql://db/mlflow?user=u&password=***&sslmode=require"),
    ("https://hooks.example.com/x?access_token=s3cret", "https://hooks.example.com/x?access_token=***"),
    ("--overrides \"seed=1 tracking.tracking_uri='postgresql://u:s3cret@h/db' env.num_envs=1\"",
     "--overrides \"seed=1 tracking.tracking_uri='postgresql://u:***@h/db' env.num_envs=1\""),
    # Nothing to hide: unchanged.
    ("sqlite:////srv/mlflow:data/mlflow.db", "sqlite:////srv/mlflow:data/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("https://user@host/path", "https://user@host/path"),
    ("file:///tmp/a@b/mlruns", "file:///tmp/a@b/mlruns"),
    ("algorithm.hyperparameters.learning_rate=0.0003", "algorithm.hyperparameters.learning_rate=0.0003"),
])
def test_redact_uri_hides_passwords_and_nothing_else(text, shown):
    assert redact_uri(text) == shown


@pytest.mark.parametrize("url", [
    "https://bot:{c}@hooks.example.com/training",
    "https://{c}@hooks.example.com/training",
    "https://hooks.example.com/training?token={c}",
    "https://hooks.example.com/training?team=ml&api_key={c}",
    "https://hooks.example.com/training?sig={c}",
    "ftp://bot:{c}@hooks.example.com/training",  # refused for its scheme too: the message must not quote it
    "https://bot:{c}@hooks.example.com:99999/training",
    "https://bot:{c}@hooks.example.com/a b",
])
def test_webhook_urls_carrying_a_credential_are_refused_without_quoting_it(tmp_path, url):
    secret = canary("urltok")
    with pytest.raises(ValueError) as err:
        RunnerSettings(state_path=tmp_path / "claims.db", webhook_url=url.format(c=secret))
    assert secret not in str(err.value) and "webhook_url" in str(err.value)
    webhooks.check_url("https://hooks.example.com/training?team=ml&page=2")  # ordinary queries are fine


def test_a_failed_stage_records_its_error_without_the_tracking_password(store):
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import runs
    from pipeline.tracking import store as tracking_store

    password = canary("pw")
    experiment = tracking_store.experiment_id("tests")
    with pytest.raises(MlflowException):
        with runs.stage_run("train", experiment, "failing", {"asset": "nav-001"}) as run:
            runs.log_params({"tracking": {"tracking_uri": f"postgresql://mlflow:{password}@db/mlflow"}})
            runs.set_tags({"note": f"see http://u:{password}@host/x"})
            raise MlflowException(f"API request to http://mlflow:{password}@db.example.com/api/2.0/x failed")
    client = mlflow.MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.params["tracking.tracking_uri"] == "postgresql://mlflow:***@db/mlflow"
    assert data.tags["note"] == "see http://u:***@host/x"
    assert data.tags["pipeline.error"].startswith("MlflowException: API request to http://mlflow:***@db.example.com")
    error_txt = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="error.txt"))
    assert "http://mlflow:***@db.example.com" in error_txt.read_text()
    assert password not in json.dumps({"params": data.params, "tags": data.tags}) + error_txt.read_text()


def test_a_key_given_instead_of_its_path_is_refused_without_quoting_it():
    from pipeline.config.compose import compose_plan
    from pipeline.config.errors import ConfigError

    secret = canary("key")
    key = json.dumps({"type": "service_account", "private_key": secret})
    with pytest.raises(ConfigError) as err:
        compose_plan([f"registry.credentials={json.dumps(key)}"])
    assert secret not in str(err.value) and "must be the path of a service-account key file" in str(err.value)
