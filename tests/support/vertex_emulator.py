"""Local stand-ins for Vertex AI's Model Registry REST API and Cloud Storage, for tests and demos (test support:
never imported by the product, so `gcp-storage-emulator` is a test-only dependency).

`VertexEmulator` is a real HTTP server speaking the `aiplatform.googleapis.com/v1` JSON endpoints the
`google-cloud-aiplatform` SDK calls to upload, look up, list and alias model versions. It keeps what it
is sent (`requests`) so tests can assert the SDK's real request bodies, and can be told to fail a call
(`fail_next`) to exercise permission errors and half-done registrations. Cloud Storage is the
`gcp-storage-emulator` package from PyPI.

    python -m tests.support.vertex_emulator         # both, on free ports; prints the overrides to use
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, unquote, urlsplit

# Vertex serves operations under /ui/ as well as /v1/ (aiplatform polls the first route it lists: /ui/).
_LOCATION = r"/(?:v1|ui)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
_ROUTES = [
    ("POST", re.compile(_LOCATION + r"/models:upload$"), "UploadModel"),
    ("GET", re.compile(_LOCATION + r"/models/(?P<model>[^/@:]+):listVersions$"), "ListModelVersions"),
    ("POST", re.compile(_LOCATION + r"/models/(?P<model>[^/@:]+)@(?P<version>[^/:]+):mergeVersionAliases$"),
     "MergeVersionAliases"),
    ("GET", re.compile(_LOCATION + r"/models/(?P<model>[^/@:]+)(?:@(?P<version>[^/:]+))?$"), "GetModel"),
    ("GET", re.compile(_LOCATION + r"/models/(?P<model>[^/@:]+)/operations/(?P<op>[^/]+)$"), "GetOperation"),
]
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ALREADY_EXISTS", 500: "INTERNAL", 503: "UNAVAILABLE"}
# Vertex's own rules (see pipeline/registry/vertex_rules.py): the emulator rejects what Vertex rejects.
_ALIAS = re.compile(r"^[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]$")
_MODEL_ID = re.compile(r"^[a-z_][a-z0-9_-]{0,62}$")


@dataclass
class RecordedRequest:
    rpc: str
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class _Model:
    resource: str
    versions: dict[str, dict] = field(default_factory=dict)
    next_version: int = 1
    operations: dict[str, dict] = field(default_factory=dict)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class VertexEmulator:
    """The Model Registry part of Vertex AI, in memory, on 127.0.0.1:<port>."""

    def __init__(self, port: int = 0):
        self.requests: list[RecordedRequest] = []
        self.models: dict[str, _Model] = {}
        self._faults: dict[str, list[tuple[int, str]]] = {}
        self._lock = threading.Lock()
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                emulator._handle(self, "GET")

            def do_POST(self):  # noqa: N802
                emulator._handle(self, "POST")

            def log_message(self, *args):  # keep test output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="vertex-emulator", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "VertexEmulator":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "VertexEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def fail_next(self, rpc: str, code: int = 403, message: str = "Permission denied on resource") -> None:
        """Make the next call of `rpc` (e.g. "UploadModel") answer with this HTTP error, as Vertex would."""
        with self._lock:
            self._faults.setdefault(rpc, []).append((code, message))

    def calls(self, rpc: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.rpc == rpc]

    # -- HTTP plumbing ---------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        path = unquote(url.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        for verb, pattern, rpc in _ROUTES:
            match = pattern.match(path) if verb == method else None
            if match:
                break
        else:
            return self._reply(h, 404, _error(404, f"no such method: {method} {path}"))
        with self._lock:
            self.requests.append(RecordedRequest(rpc, method, path, parse_qs(url.query), body))
            fault = self._faults.get(rpc, []).pop(0) if self._faults.get(rpc) else None
            try:
                if fault:
                    raise ApiError(*fault)
                reply = getattr(self, f"_{rpc}")(match.groupdict(), body or {}, parse_qs(url.query))
            except ApiError as exc:
                return self._reply(h, exc.code, _error(exc.code, exc.message))
        self._reply(h, 200, reply)

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    # -- the RPCs --------------------------------------------------------------------------------
    def _model(self, g: dict) -> _Model:
        resource = f"projects/{g['project']}/locations/{g['location']}/models/{g['model']}"
        model = self.models.get(resource)
        if model is None:
            raise ApiError(404, f"The Model does not exist: {resource}")
        return model

    @staticmethod
    def _version(model: _Model, ref: Optional[str]) -> dict:
        ref = ref or "default"
        for vid, version in model.versions.items():
            if ref == vid or ref in version["versionAliases"]:
                return version
        raise ApiError(404, f"The Model version does not exist: {model.resource}@{ref}")

    def _UploadModel(self, g: dict, body: dict, query: dict) -> dict:  # noqa: N802
        spec = dict(body.get("model") or {})
        parent_model = body.get("parentModel")
        if not spec.get("displayName"):
            raise ApiError(400, "model.display_name is required")
        for alias in spec.get("versionAliases") or []:
            if not _ALIAS.match(alias) or alias.isdigit():
                raise ApiError(400, f"Invalid version alias {alias!r}: must match [a-z][a-zA-Z0-9-]{{0,126}}[a-z0-9]")
        if parent_model:
            m = re.match(r"^projects/([^/]+)/locations/([^/]+)/models/([^/@]+)$", parent_model)
            if not m:
                raise ApiError(400, f"Invalid parent_model {parent_model!r}")
            model = self._model({"project": m[1], "location": m[2], "model": m[3]})
        else:
            model_id = body.get("modelId") or f"{int(time.time() * 1000)}"
            if not _MODEL_ID.match(model_id):
                raise ApiError(400, f"Invalid model_id {model_id!r}: [a-z0-9_-], not starting with a digit or '-'")
            resource = f"projects/{g['project']}/locations/{g['location']}/models/{model_id}"
            if resource in self.models:
                raise ApiError(409, f"Model {resource} already exists; upload a new version with parent_model")
            model = self.models[resource] = _Model(resource)
        vid = str(model.next_version)
        model.next_version += 1
        aliases = list(spec.get("versionAliases") or [])
        if not model.versions and "default" not in aliases:
            aliases.append("default")  # the first version always carries `default`
        self._take_aliases(model, aliases)
        now = _now()
        model.versions[vid] = {**spec, "name": model.resource, "versionId": vid, "versionAliases": aliases,
                               "labels": dict(spec.get("labels") or {}), "createTime": now, "updateTime": now,
                               "versionCreateTime": now, "versionUpdateTime": now}
        op_name = f"{model.resource}/operations/{len(self.requests)}"
        op = {"name": op_name, "done": True,
              "metadata": {"@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelOperationMetadata",
                           "genericMetadata": {"createTime": now, "updateTime": now}},
              "response": {"@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse",
                           "model": model.resource, "modelVersionId": vid}}
        model.operations[op_name] = op
        # Like Vertex, answer "running": the SDK must poll the operation (GetOperation) for the result.
        return {"name": op_name, "done": False, "metadata": op["metadata"]}

    def _GetModel(self, g: dict, body: dict, query: dict) -> dict:  # noqa: N802
        return self._version(self._model(g), g.get("version"))

    def _GetOperation(self, g: dict, body: dict, query: dict) -> dict:  # noqa: N802
        model = self._model(g)
        name = f"{model.resource}/operations/{g['op']}"
        if name not in model.operations:
            raise ApiError(404, f"The Operation does not exist: {name}")
        return model.operations[name]

    def _ListModelVersions(self, g: dict, body: dict, query: dict) -> dict:  # noqa: N802
        model = self._model(g)
        wanted = _label_filter((query.get("filter") or [""])[0])
        found = [v for v in model.versions.values() if all(v["labels"].get(k) == val for k, val in wanted.items())]
        return {"models": found}

    def _MergeVersionAliases(self, g: dict, body: dict, query: dict) -> dict:  # noqa: N802
        model = self._model(g)
        version = self._version(model, g["version"])
        changes = body.get("versionAliases") or []
        if not changes:
            raise ApiError(400, "version_aliases must not be empty")
        for change in changes:
            alias = change[1:] if change.startswith("-") else change
            if not _ALIAS.match(alias) or alias.isdigit():
                raise ApiError(400, f"Invalid version alias {alias!r}: must match [a-z][a-zA-Z0-9-]{{0,126}}[a-z0-9]")
            if change == "-default":
                raise ApiError(400, "The default alias cannot be removed; move it to another version instead")
        added = [c for c in changes if not c.startswith("-")]
        removed = {c[1:] for c in changes if c.startswith("-")}
        self._take_aliases(model, added)  # an alias used by another version moves, as in Vertex
        version["versionAliases"] = [a for a in version["versionAliases"] if a not in removed]
        version["versionAliases"] += [a for a in added if a not in version["versionAliases"]]
        version["versionUpdateTime"] = _now()
        return version

    @staticmethod
    def _take_aliases(model: _Model, aliases: list[str]) -> None:
        for other in model.versions.values():
            other["versionAliases"] = [a for a in other["versionAliases"] if a not in aliases]


def _label_filter(text: str) -> dict[str, str]:
    """`labels.k="v" AND labels.k2=v2`: the part of AIP-160 filters the registry uses."""
    wanted = {}
    for clause in filter(None, (c.strip() for c in re.split(r"\s+AND\s+", text))):
        m = re.match(r'^labels\.([a-z][a-z0-9_-]*)\s*=\s*"?([^"]*)"?$', clause)
        if not m:
            raise ApiError(400, f"Unsupported filter: {clause!r}")
        wanted[m[1]] = m[2]
    return wanted


def _error(code: int, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StorageEmulator:
    """`gcp-storage-emulator` (PyPI) in memory on 127.0.0.1:<port>, with the given buckets."""

    def __init__(self, buckets: tuple[str, ...] = (), port: int = 0):
        from gcp_storage_emulator.handlers import buckets as bucket_handlers
        from gcp_storage_emulator.server import create_server

        self.port = port or free_port()
        self._server = create_server("127.0.0.1", self.port, in_memory=True)
        for name in buckets:
            bucket_handlers.create_bucket(name, self._server._storage)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "StorageEmulator":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "StorageEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    p = argparse.ArgumentParser(description="Run local Vertex AI Model Registry and Cloud Storage emulators.")
    p.add_argument("--vertex-port", type=int, default=0)
    p.add_argument("--storage-port", type=int, default=0)
    p.add_argument("--bucket", default="unity-policies", help="bucket to create in the storage emulator")
    args = p.parse_args()
    with VertexEmulator(args.vertex_port) as vertex, StorageEmulator((args.bucket,), args.storage_port) as gcs:
        print("Vertex AI emulator:", vertex.endpoint, "| Cloud Storage emulator:", gcs.endpoint, flush=True)
        print("Register against them with:\n  --overrides \"registry.vertex_project=demo-project "
              f"registry.api_endpoint={vertex.endpoint} registry.storage_endpoint={gcs.endpoint} "
              f"registry.staging_bucket=gs://{args.bucket} registry.credentials=anonymous "
              "registry.serving_container_image_uri=us-docker.pkg.dev/demo/serving/onnx:latest\"", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
