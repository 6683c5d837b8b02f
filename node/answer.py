"""An own issue's answer (node/core.py's `issue_many_async`): as much of a
Future as its callers use, the answers of one call sharing one lock."""

from __future__ import annotations

import threading
import time
from concurrent.futures import InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any


class _Answers:
    """What the Answers of one `issue_many_async` call share: one lock (and
    one condition) for them all, instead of a Future's own lock and
    condition an item (what a bulk caller paid most for per item, after the
    records' own work)."""

    __slots__ = ("cond",)

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())


class Answer:
    """One queued own issue's answer, as much of a Future as its callers use:
    `result`, `exception`, `done` (and, for the writer, `set_result` and
    `set_exception`, each at most once). A waiter is woken only when its own
    answer is set, not by every answer of its batch."""

    __slots__ = ("_shared", "_state", "_value", "_waiting")

    _PENDING, _RESULT, _ERROR = 0, 1, 2

    def __init__(self, shared: _Answers) -> None:
        self._shared = shared
        self._state = Answer._PENDING
        self._value: Any = None
        self._waiting = False

    def done(self) -> bool:
        return self._state != Answer._PENDING

    def _set(self, state: int, value: Any) -> None:
        # Set without the lock (one setter: the writer; attribute writes are
        # atomic under the GIL): the lock is taken only to wake a waiter, so
        # a waiter just woken never contends with the writer's next answers.
        # A waiter marks itself (`_waiting`) under the lock before it reads
        # the state, and the state is written before `_waiting` is read
        # here: either it sees the answer or it is woken.
        if self._state != Answer._PENDING:
            raise InvalidStateError("the answer is set already")
        self._value = value
        self._state = state
        if self._waiting:
            with self._shared.cond:
                self._shared.cond.notify_all()

    def set_result(self, value: Any) -> None:
        self._set(Answer._RESULT, value)

    def set_exception(self, error: BaseException) -> None:
        self._set(Answer._ERROR, error)

    def _wait(self, timeout: float | None) -> None:
        if self._state != Answer._PENDING:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self._shared.cond
        with cond:
            self._waiting = True
            while self._state == Answer._PENDING:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise FutureTimeout()
                cond.wait(left)

    def result(self, timeout: float | None = None) -> Any:
        """The answer (an Outcome); raises the writer's error for it, or
        TimeoutError when it is not set within `timeout` seconds."""
        self._wait(timeout)
        if self._state == Answer._ERROR:
            raise self._value
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._value if self._state == Answer._ERROR else None
