"""node/signals.py: a stop signal ends a wait, however it lands."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from node.signals import StopSignal


@pytest.fixture
def usr1() -> Iterator[None]:
    old = signal.getsignal(signal.SIGUSR1)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_a_signal_ends_the_wait_and_is_named(usr1: None) -> None:
    stop = StopSignal((signal.SIGUSR1,))
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    stop.wait(poll_s=0.01)
    assert stop.received == signal.SIGUSR1


def test_signals_landing_anywhere_in_the_wait_never_hang_it(usr1: None) -> None:
    """Hundreds of signals while the main thread waits: a handler that took
    a lock (Event.set) could land while the main thread held it and wait for
    itself; this one only sets an attribute."""
    stop = StopSignal((signal.SIGUSR1,))
    sent = threading.Event()

    def storm() -> None:
        for _ in range(300):
            os.kill(os.getpid(), signal.SIGUSR1)
        sent.set()

    threading.Thread(target=storm, daemon=True).start()
    stop.wait(until=sent.is_set, poll_s=0.001)
    assert stop.received == signal.SIGUSR1
    sent.wait(10)
    assert sent.is_set()
