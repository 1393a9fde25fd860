"""`UnityEnvironment` on a player build for ML-Agents' SubprocessEnvManager, as `mlagents-learn --env` makes it.

On top of mlagents-learn's factory (`learn.create_environment_factory`): a port no other training on
the machine holds (see `ports`), retried when something else takes it before gRPC binds; one player
log per launch (a restarted worker does not overwrite the crashed player's log); errors that name the
player, its log and the config key to change; and a check, at the first reset, that the build has the
behavior the asset config trains.
"""
from __future__ import annotations

import contextlib
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from mlagents_envs.environment import UnityEnvironment
from mlagents_envs.exception import (
    UnityEnvironmentException,
    UnityTimeOutException,
    UnityWorkerInUseException,
)
from mlagents_envs.side_channel import SideChannel

from pipeline.processes import die_with_parent
from pipeline.unity import ports

PORT_ATTEMPTS = 20
LOG_TAIL_LINES = 15


class BehaviorMismatchError(Exception):
    """The build does not have the behavior the asset config trains. Not a Unity* exception: no worker restart."""


@dataclass(frozen=True)
class Expectation:
    behavior_name: str
    action_size: Optional[int] = None  # continuous actions the asset declares
    observation_size: Optional[int] = None  # total observation values the asset declares
    branches: Optional[tuple[int, ...]] = None  # discrete branch sizes the asset declares (type: discrete)


class PlayerEnvironment(UnityEnvironment):
    """UnityEnvironment whose errors say which player, which log and which setting."""

    def __init__(self, *, expect: Expectation, player_log: Path, port_reservation: ports.PortReservation,
                 **kwargs) -> None:
        self.player_log = player_log
        self.expect = expect
        self._reservation = port_reservation
        self._file_name = kwargs["file_name"]
        try:
            super().__init__(**kwargs)
        except UnityTimeOutException:
            self._close(0)
            raise UnityTimeOutException(self._explain(
                f"the Unity player {self._file_name} did not connect to the trainer on port {self._port} within "
                f"env.timeout_wait={self._timeout_wait}s (is it an ML-Agents build of this project, and does it "
                "start without user interaction? raise env.timeout_wait for a slow start)")) from None
        except UnityWorkerInUseException:
            self._close(0)
            raise
        except BaseException:  # SystemExit from a terminated worker (below) too: no player outlives its worker
            self._close(0)
            raise

    def reset(self) -> None:
        with self._explained():
            super().reset()
        self._check_behavior()

    def step(self) -> None:
        with self._explained():
            super().step()

    def _poll_process(self) -> None:
        try:
            super()._poll_process()
        except UnityEnvironmentException as exc:
            raise UnityEnvironmentException(
                self._explain(f"the Unity player {self._file_name} exited: {exc}")) from None

    def _close(self, timeout: Optional[int] = None) -> None:
        if not hasattr(self, "_communicator"):
            return  # the gRPC port was taken before the server started: nothing to close
        player = getattr(self, "_process", None)
        try:
            super()._close(timeout)
        finally:
            if player is not None:  # ML-Agents SIGKILLs a player that will not stop but does not wait for it
                with contextlib.suppress(subprocess.TimeoutExpired):
                    player.wait(timeout=10)  # so no player outlives close()
            self._reservation.release()

    @contextlib.contextmanager
    def _explained(self) -> Iterator[None]:
        try:
            yield
        except UnityTimeOutException:
            raise UnityTimeOutException(self._explain(
                f"the Unity player {self._file_name} stopped answering for env.timeout_wait={self._timeout_wait}s"
            )) from None

    def _explain(self, what: str) -> str:
        return f"{what}. Player log: {self.player_log}{log_tail(self.player_log)}"

    def _check_behavior(self) -> None:
        names = sorted(self.behavior_specs)
        want = self.expect.behavior_name
        if want not in names:
            raise BehaviorMismatchError(
                f"the Unity player {self._file_name} has behavior(s) {', '.join(names) or '(none)'} but asset.name is "
                f"{want!r}; set asset.name to the Behavior Name in the agent's Behavior Parameters, or build the "
                "scene that has it")
        spec = self.behavior_specs[want]
        actions = spec.action_spec
        if self.expect.branches is not None and (actions.continuous_size
                                                 or tuple(actions.discrete_branches) != self.expect.branches):
            raise BehaviorMismatchError(
                f"behavior {want} in {self._file_name} has {actions.continuous_size} continuous actions and discrete "
                f"branches {list(actions.discrete_branches)} but asset.action_space says discrete, branches "
                f"{list(self.expect.branches)}")
        if self.expect.action_size is not None and (
                actions.discrete_size or actions.continuous_size != self.expect.action_size):
            raise BehaviorMismatchError(
                f"behavior {want} in {self._file_name} has {actions.continuous_size} continuous and "
                f"{actions.discrete_size} discrete actions but asset.action_space says continuous, size "
                f"{self.expect.action_size}")
        size = sum(int(_prod(o.shape)) for o in spec.observation_specs)
        if self.expect.observation_size is not None and size != self.expect.observation_size:
            raise BehaviorMismatchError(
                f"behavior {want} in {self._file_name} observes {size} values "
                f"({', '.join(f'{o.name}{list(o.shape)}' for o in spec.observation_specs)}) but "
                f"asset.observation_space adds up to {self.expect.observation_size}")


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


@dataclass(frozen=True)
class PlayerEnvFactory:
    """Picklable `(worker_id, side_channels) -> UnityEnvironment`; runs inside SubprocessEnvManager's workers."""

    player: str
    expect: Expectation
    seed: int
    num_areas: int
    no_graphics: bool
    timeout_wait: int
    base_port: int
    env_args: Tuple[str, ...]
    log_folder: str

    def __call__(self, worker_id: int, side_channels: List[SideChannel]) -> UnityEnvironment:
        die_with_parent()  # and the player with us: UnityEnvironment kills it when the worker exits
        # ML-Agents terminates (SIGTERM) a worker that does not confirm its close in time, e.g. one restarted
        # while the run was failing and still waiting for its player: exiting through Python instead lets the
        # worker's `finally: env.close()` (or the constructor's cleanup) kill and reap the player.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        log = self.next_log_path(worker_id)
        args = list(self.env_args)
        if "-logfile" not in (a.lower() for a in args):
            args += ["-logFile", str(log)]
        skip = 0
        for _ in range(PORT_ATTEMPTS):
            reservation = ports.reserve_port(self.base_port + worker_id, skip)
            try:
                return PlayerEnvironment(
                    expect=self.expect, player_log=log, port_reservation=reservation,
                    file_name=self.player, worker_id=worker_id, base_port=reservation.port - worker_id,
                    seed=self.seed + worker_id, num_areas=self.num_areas, no_graphics=self.no_graphics,
                    timeout_wait=self.timeout_wait, additional_args=args, side_channels=side_channels, log_folder=None)
            except UnityWorkerInUseException:
                # Taken by a program outside our reservations between the probe and gRPC's bind: next one.
                reservation.release()
                skip = reservation.port - (self.base_port + worker_id) + 1
        raise UnityWorkerInUseException(worker_id)

    def next_log_path(self, worker_id: int) -> Path:
        """Player-<worker>.log as mlagents-learn names it; a restarted worker's player gets
        Player-<worker>.restart<n>.log."""
        folder = Path(self.log_folder)
        folder.mkdir(parents=True, exist_ok=True)
        path, n = folder / f"Player-{worker_id}.log", 0
        while path.exists():
            n += 1
            path = folder / f"Player-{worker_id}.restart{n}.log"
        return path


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return " (the player wrote no log)"
    return "; its last lines:\n  " + "\n  ".join(text) if text else " (empty)"


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out
