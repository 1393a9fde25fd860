"""A scheduler runner that can be killed in the middle of a test, as kill -9 would kill the process."""
from __future__ import annotations

from pipeline.scheduling.runner import Runner


class KillableRunner(Runner):
    """The product's Runner, plus `crash()`: from then on it behaves like a process that got SIGKILL.

    Its job tasks are abandoned where they wait (nothing after the await runs, so no outcome is written) and
    its claims database connection is closed, so it cannot write anything more; what a later runner on the
    same file finds is exactly what a killed runner leaves behind.
    """

    def crash(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
        self.store.close()
