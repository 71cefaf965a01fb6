"""Liveness and readiness of ``segstream run``, as ``/healthz`` and ``/readyz`` report them.

* **alive**: the run loop turned (polled) within ``timeout_s``
  (``SEGSTREAM_LIVENESS_TIMEOUT_S``). A loop stuck in a call that never returns
  (a hung child, a deadlock) fails it, while the endpoint's own thread, the
  Kafka heartbeat thread and the lag probe keep running; a restart is the
  remedy, so this is what a liveness probe should check. Before the loop exists
  (start-up: building the pipeline, waiting for the broker), the clock runs
  from process start.
* **ready**: the loop says so (:meth:`StreamRunner.readiness
  <stream.runtime.runner.StreamRunner.readiness>`): in the group, no
  assignment change waiting, every owned partition restored up to its
  committed offset.

Both are read on the endpoint's thread; the runner only ever writes plain
attributes (a float, flags), which a reader sees whole.

    >>> t = [100.0]
    >>> h = Health(30.0, clock=lambda: t[0], wall=lambda: 1e9 + t[0])
    >>> h.live(), h.ready()
    ((True, 'ok'), (False, 'starting'))
    >>> t[0] = 131.0
    >>> h.live()
    (False, 'the run loop has not turned for 31s (limit 30s)')
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Health"]


class _Loop(Protocol):
    last_turn: float  # monotonic time of the loop's last turn

    def readiness(self) -> tuple[bool, str]: ...


class Health:
    """The probes of one consumer process (give it the runner once there is one: ``health.loop = runner``)."""

    def __init__(self, timeout_s: float, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._wall = wall
        self._born = clock()
        self.loop: _Loop | None = None

    def _last_turn(self) -> float:
        loop = self.loop
        return self._born if loop is None else loop.last_turn

    def live(self) -> tuple[bool, str]:
        idle = self._clock() - self._last_turn()
        if idle > self.timeout_s:
            return False, f"the run loop has not turned for {idle:.0f}s (limit {self.timeout_s:.0f}s)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        loop = self.loop
        return (False, "starting") if loop is None else loop.readiness()

    def loop_turned_at(self) -> float:
        """Wall time of the loop's last turn (the ``segstream_loop_turn_timestamp_seconds`` gauge)."""
        return self._wall() - (self._clock() - self._last_turn())
