"""The screen's rows of this node's view entries, kept off the write path.

A row is what the screen reads of a caller instead of decoding and
evaluating its entry: its summary (ledger/view/summary.py) and, per
interval, the caller's decision as a template when it does not depend on
the callee (node/screenwire.py). Rows are made by the screener's `row_of`
from the entry's bytes and live in the store's "screenix" family.

The view keeper tells the index which numbers' entries changed (`changed`,
on the writer thread, before the change is acknowledged): they are *dirty*
until a background thread has written their new rows, and a screen treats
a dirty number's row as unproven (it reads the entry and checks the row's
digest). Once a first pass over every entry has finished (`complete`), a
clean number's row, or its absence, is the entry's: the screen then reads
nothing else. Rows are written unsynced: after a crash the node starts with
every number dirty and the pass runs again.

The rows share the process (and its GIL) with the writer. A fresh node
taking a whole log from a peer spent half its time making rows for records
the writer had just committed, so catch-up ran at half the writer's rate.
With `busy` (the writer has a group in hand or queued), the index yields: it
waits while the writer is busy, but writes a chunk at least every
YIELD_MOST_S, so rows never fall behind for good under a steady load. A
dirty number is only slower to screen, never wrong.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable

from ledger.errors import LedgerError
from ledger.store import Store

log = logging.getLogger("markex.screen")

FAMILY = "screenix"
CHUNK = 1000          # rows written per store write
YIELD_S = 0.05        # how long the index waits for a busy writer before looking again
YIELD_MOST_S = 1.0    # ... and at most, before it writes a chunk anyway


class ScreenIndex:
    def __init__(self, store: Store, entries: Callable[[list[str]], list[bytes | None]],
                 numbers: Callable[[], Iterable[str]],
                 row_of: Callable[[str, bytes], bytes | None] | None = None,
                 busy: Callable[[], bool] | None = None) -> None:
        """`entries(e164s)`: entry bytes (the view keeper's consistent read);
        `numbers()`: every number with an entry; `row_of(number, entry bytes)`:
        its row (None: none), set before `start` (the screener's); `busy()`:
        whether the writer has work now (the index yields to it; None: never)."""
        self.store = store
        self.busy = busy
        self._entries = entries
        self._numbers = numbers
        self.row_of = row_of
        self._cv = threading.Condition()
        self._pending: set[str] = set()
        self._dirty: dict[str, int] = {}      # number -> the change's generation
        self._gen = itertools.count(1)
        self._everything = False
        self._busy = False
        self._stop = False
        self.complete = False                 # a pass over every entry has finished
        self._thread: threading.Thread | None = None
        self.written = 0                      # rows written (tests and metrics)

    # ------------------------------------------------------------ the writer's side
    def changed(self, numbers: Iterable[str] | None) -> None:
        """The entries of `numbers` changed (None: any may have). Cheap: runs
        on the writer thread."""
        with self._cv:
            if numbers is None:
                self._everything = True
                self.complete = False
            else:
                for n in numbers:
                    self._dirty[n] = next(self._gen)
                    self._pending.add(n)
            self._cv.notify()

    def start(self) -> None:
        self.changed(None)
        self._thread = threading.Thread(target=self._run, name="screen-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def idle(self) -> bool:
        """Every row written: nothing queued, the first pass done."""
        with self._cv:
            return self.complete and not self._pending and not self._busy

    def _yield(self) -> None:
        """Wait (with the lock) while the writer is busy, at most YIELD_MOST_S."""
        if self.busy is None:
            return
        deadline = time.monotonic() + YIELD_MOST_S
        while not self._stop and self.busy():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cv.wait(min(YIELD_S, left))

    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._stop or self._pending or self._everything):
                    self._busy = False
                    self._cv.wait()
                self._yield()
                if self._stop:
                    return
                self._busy = True
                everything, self._everything = self._everything, False
                batch = [] if everything else [
                    self._pending.pop() for _ in range(min(CHUNK, len(self._pending)))]
            try:
                if everything:
                    self._write_all()
                else:
                    self._write(batch)
            except LedgerError as e:       # the store failed: the node reports that itself
                log.warning("screen index: %s", e)
            except Exception:
                log.exception("screen index failed")

    def _write_all(self) -> None:
        # Rows of numbers whose entry went while no one listened would stay:
        # start from none (the screen reads entries until the pass is done).
        batch = self.store.batch()
        batch.delete_range(FAMILY, b"", b"\xff")
        self.store.write(batch, sync=False)
        chunk: list[str] = []
        for n in self._numbers():
            chunk.append(n)
            if len(chunk) >= CHUNK:
                self._write(chunk)
                chunk = []
                if self._stop:
                    return
        if chunk:
            self._write(chunk)
        with self._cv:
            self.complete = not self._everything

    def _write(self, numbers: list[str]) -> None:
        with self._cv:
            gens = {n: self._dirty.get(n) for n in numbers}
        row_of = self.row_of
        assert row_of is not None, "the screener sets row_of before the index starts"
        batch = self.store.batch()
        for n, raw in zip(numbers, self._entries(numbers), strict=True):
            row = None if raw is None else row_of(n, raw)
            if row is None:
                batch.delete(FAMILY, n.encode())
            else:
                batch.put(FAMILY, n.encode(), row)
        self.store.write(batch, sync=False)
        with self._cv:
            for n, g in gens.items():
                if g is not None and self._dirty.get(n) == g:  # not changed again since read
                    del self._dirty[n]
        self.written += len(numbers)

    # ------------------------------------------------------------ the screen's side
    def rows(self, numbers: list[str]) -> tuple[list[bytes | None], list[bool]]:
        """The stored rows of `numbers` (None: no row), and whether each is
        known to be its entry's (the first pass done and the number not dirty)."""
        with self._cv:
            complete, dirty = self.complete, self._dirty
            trusted = [complete and n not in dirty for n in numbers]
        return self.store.get_many(FAMILY, [n.encode() for n in numbers]), trusted
