"""Waiting for SIGINT/SIGTERM in a process's main thread.

A handler that sets a threading.Event deadlocks when the signal lands while
the main thread holds that Event's lock (inside `Event.wait`, which it
re-takes every time a timed wait ends): the handler runs on the main thread
and waits for a lock its own frame holds. A worker whose node was killed got
its parent-death SIGTERM in that window and never stopped. Here the handler
sets a plain attribute and the waiting is a sleep loop, so no lock is taken
from a handler."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

POLL_S = 0.2


class StopSignal:
    """Installs handlers for `signals`; `wait` returns once one arrived (or
    `until()` holds). `received` names the first signal, 0 until then."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.received = 0
        for sig in signals:
            signal.signal(sig, self._on)

    def _on(self, signum: int, _frame: object) -> None:
        if not self.received:
            self.received = signum

    def wait(self, until: Callable[[], bool] = lambda: False, poll_s: float = POLL_S) -> None:
        while not self.received and not until():
            time.sleep(poll_s)


__all__ = ["StopSignal"]
