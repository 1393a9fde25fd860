"""A real Ray cluster on this machine for the tests: a head node with no CPUs and worker nodes with one CPU each.

Each node is its own `ray start` process tree in its own session (so each can be stopped, or killed as a
"lost node", by its process group without touching any other Ray on the box). All nodes are on the
loopback address and share the head's temp dir (Ray only lets the head choose it); Ray numbers each
node's raylet and plasma sockets in the session, so several nodes on one host do not collide as they do
under the default /tmp/ray when started by different users/sessions (ray#44431). Why not network
namespaces: they need root and `ip netns`, which CI boxes often lack; why not `ray.cluster_utils.Cluster`:
its nodes live in the test process, so a node cannot be killed the way a machine dies. Each worker gets a
custom resource `node_<name>` so a test can tell which node ran a job.

Ray gives its dashboard 20 s to come up (a hard-coded poll) and each dashboard module 30 s; under load on
2 cores they need longer, so `ray start` runs with that poll slowed down and the module timeout raised.
The Jobs API needs the dashboard.

Every node here has the same IP (Ray turns `--node-ip-address 127.0.0.1` into the host's address, and
the head's Jobs agent connects its driver to the first alive node with its own IP, in GCS order). Were
that a worker node, losing it would end the agent's driver job, and with it the JobSupervisor class Ray
keeps under that job: every later submission's supervisor would die loading its class. On a real cluster
each node has its own IP and the agent's driver is on the head; here the harness gets the same by making
the agent connect (one trivial job) while the head is the only node.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.process import alive, command_line

PYTHON = sys.executable
# `ray start`, with the dashboard's start-up poll 10x slower (so 200 s instead of 20 s).
RAY_START = """
import sys, time, types
import ray._private.services as services
slow = types.ModuleType("time"); slow.__dict__.update(time.__dict__); slow.sleep = lambda s: time.sleep(s * 10)
services.time = slow
from ray.scripts.scripts import main
sys.argv[0] = "ray"
main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayUnavailable(RuntimeError):
    pass


class HeadLost(AssertionError):
    """The head itself stopped answering (its GCS gone or silent), not what a test checks of the product."""


@dataclass
class Node:
    name: str
    pgid: int
    resource: str | None = None  # the custom resource naming it (workers)
    node_id: str | None = None


@dataclass
class RayCluster:
    base: Path
    workers: tuple[str, ...] = ("a", "b")
    nodes: dict[str, Node] = field(default_factory=dict)
    port: int = 0
    dashboard_port: int = 0
    last_error: str | None = None  # why the dashboard last did not answer

    @property
    def address(self) -> str:
        """The GCS address: RAY_ADDRESS for ray.init, `ray start --address`, the Hydra launcher."""
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """The Jobs API address (JobSubmissionClient, `ray job submit`, the MLflow backend)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, args: list[str], timeout: float) -> Node:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env["RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT"] = "300"  # 30 s by default: too short under load
        with open(self.base / f"ray-start-{name}.log", "w") as log:
            proc = subprocess.Popen([PYTHON, "-c", RAY_START, "start", "--node-ip-address", "127.0.0.1",
                                     "--disable-usage-stats", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.base, start_new_session=True)  # its own process group: the node
        node = Node(name, proc.pid)
        self.nodes[name] = node
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:
            text = (self.base / f"ray-start-{name}.log").read_text()[-3000:]
            raise RayUnavailable(f"`ray start` of node {name} failed ({code}):\n{text}")
        return node

    def start(self, timeout: float = 240) -> RayCluster:
        self.base.mkdir(parents=True, exist_ok=True)
        self.port, self.dashboard_port = free_port(), free_port()
        self._start("head", ["--head", "--port", str(self.port), "--num-cpus", "0",
                             "--temp-dir", str(self.base / "ray"), "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(self.dashboard_port), "--include-dashboard", "true",
                             "--ray-client-server-port", str(free_port()),
                             "--dashboard-agent-listen-port", str(free_port())], timeout)
        self.connect_jobs_agent_to_head(timeout)
        for name in self.workers:
            self.add_worker(name, timeout)
        self.wait_for_nodes(timeout)
        return self

    def connect_jobs_agent_to_head(self, timeout: float) -> None:
        """Run one trivial job while the head is the only node (see the module's docstring)."""
        from ray.job_submission import JobStatus, JobSubmissionClient

        deadline = time.monotonic() + timeout
        while True:
            try:
                client = JobSubmissionClient(self.dashboard_url)
                sid = client.submit_job(entrypoint=f"{PYTHON} -c pass", entrypoint_num_cpus=0)
                break
            except Exception as exc:  # noqa: BLE001  the dashboard still starting
                if time.monotonic() > deadline:
                    raise RayUnavailable(f"the head's Jobs API did not answer: {exc}") from exc
                time.sleep(2)
        while (status := client.get_job_status(sid)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                             JobStatus.STOPPED):
            if time.monotonic() > deadline:
                raise RayUnavailable(f"the head's first job did not end ({status})")
            time.sleep(0.5)

    def add_worker(self, name: str, timeout: float = 120) -> Node:
        node = self._start(name, ["--address", self.address, "--num-cpus", "1",
                                  "--resources", json.dumps({f"node_{name}": 1}),
                                  "--dashboard-agent-listen-port", str(free_port())], timeout)
        node.resource = f"node_{name}"
        return node

    def alive_nodes(self) -> list[dict]:
        """Nodes the cluster sees alive (the dashboard's state API; no driver joins the cluster)."""
        from ray.util.state import list_nodes

        try:
            nodes = list_nodes(address=self.dashboard_url, timeout=30, raise_on_missing_output=False)
        except Exception as exc:  # noqa: BLE001  the dashboard not answering yet reads as "no node yet"
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            return []
        self.last_error = None
        return [{"id": n.node_id, "res": n.resources_total or {}} for n in nodes if n.state == "ALIVE"]

    def gcs_running(self) -> bool:
        head = self.nodes.get("head")
        return any(command_line(pid).split(" ")[0].endswith("gcs_server") and alive(pid)
                   for pid in (_tree(head.pgid) if head else set()))

    def head_report(self) -> str:
        """Why the cluster may not answer: is the head's GCS still running, and the end of its log."""
        logs = sorted((self.base / "ray").glob("session_*/logs/gcs_server.*"))
        tail = []
        for log in logs:
            lines = log.read_text(errors="replace").splitlines()
            errors = [line for line in lines if re.match(r"\[\S+ \S+ [CEF] ", line)][-8:]  # Ray's levels
            tail += [f"{log.name}: {line}" for line in errors + [x for x in lines[-3:] if x not in errors]]
        return (f"head's gcs_server {'running' if self.gcs_running() else 'NOT running'}; "
                f"dashboard: {self.last_error or 'answered'}\n" + "\n".join(tail))

    def wait_for_nodes(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = self.alive_nodes()
            for node in self.nodes.values():
                for n in nodes:
                    if node.resource and node.resource in n["res"]:
                        node.node_id = n["id"]
            if all(node.node_id for node in self.nodes.values() if node.resource):
                return
            time.sleep(2)
        raise RayUnavailable(f"worker nodes did not join within {timeout:.0f} s")

    def wait_for_loss(self, name: str, timeout: float) -> None:
        """Until the cluster has marked node `name` dead (missed health checks: about 15 s by default)."""
        resource = f"node_{name}"
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.alive_nodes()  # empty when the dashboard did not answer: ask again
            if nodes and not any(resource in n["res"] for n in nodes):
                return
            if time.monotonic() > deadline:
                report = self.head_report()
                if not nodes or not self.gcs_running():
                    raise HeadLost(f"the cluster did not answer for {timeout:.0f} s after node {name} was lost; "
                                   f"{report}")
                raise AssertionError(f"the cluster still counts node {name} alive after {timeout:.0f} s; {report}")
            time.sleep(1)

    def node_named(self, node_id: str) -> str | None:
        return next((n.name for n in self.nodes.values() if n.node_id == node_id), None)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """The node dies as a machine would: every process of it at once, the job entrypoints Ray starts in
        sessions of their own included (all descendants of the node's process group)."""
        node = self.nodes.pop(name)
        for _ in range(10):  # again while any is left: a process forked between the listing and the kill
            left = {pid for pid in _tree(node.pgid) if alive(pid)}
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(0.1)

    def restart(self, timeout: float = 240) -> RayCluster:
        """A fresh cluster in place of this one (new ports, new session): after its head was lost."""
        self.stop()
        return self.start(timeout)

    def stop(self) -> None:
        """Stop every node this cluster started and everything they started (by process group and parentage;
        never `ray stop`, which stops every Ray of this user on the machine)."""
        pids: set[int] = set()
        for node in self.nodes.values():
            pids |= _tree(node.pgid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in pids):
            time.sleep(0.2)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.nodes.clear()


def _tree(pgid: int) -> set[int]:
    """The processes of a process group and all their descendants."""
    parents: dict[int, int] = {}
    groups: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)], groups[int(entry.name)] = int(fields[1]), int(fields[2])
    found = {pid for pid, group in groups.items() if group == pgid}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """One cluster for the whole test session, skipped (with why) if Ray cannot start."""
    # Short: Ray's unix socket paths (under <temp dir>/session_*/sockets/) must fit in 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    cluster = RayCluster(base)
    try:
        try:
            cluster.start()
        except (RayUnavailable, OSError) as exc:
            pytest.skip(f"a local Ray cluster cannot start on this machine: {exc}")
        yield cluster
    finally:  # also when start-up is interrupted (Ctrl-C): no node outlives the session
        cluster.stop()
        if not os.environ.get("KEEP_RAY_LOGS"):  # KEEP_RAY_LOGS=1: keep <base>/ray/session_*/logs to read
            shutil.rmtree(base, ignore_errors=True)
