"""The screen's rows of this node's view entries, kept off the write path.

A row is what the screen reads of a caller instead of decoding and
evaluating its entry: its summary (ledger/view/summary.py) and, per
interval, the caller's decision as a template when it does not depend on
the callee (node/screenwire.py). Rows are made by the screener's `row_of`
from the entry's bytes and live in the store's "screenix" family.

A number whose entry answers, from its row's start on, as no entry does
keeps no row: `row_of` gives that start instead (Screener.stored_row), and
`elided_from`, the latest such start (ELIDED_KEY, written in the same batch),
tells the screen from when a trusted absent row may be answered as no entry.

The view keeper tells the index which numbers' entries changed (`changed`,
on the writer thread, before the change is acknowledged): they are *dirty*
until a background thread has written their new rows, and a screen treats
a dirty number's row as unproven (it reads the entry and checks the row's
digest). Once a first pass over every entry has finished (`complete`), a
clean number's row, or its absence, is the entry's: the screen then reads
nothing else.

The rows survive a restart. The view writes every changed number into its
change journal (viewchanged, ledger/view/stored.py) in the entry's own
batch; the index removes a number from it in the batch that writes the
number's new row, and only when the entry has not changed since it was read
(checked under the view's write lock, which the writer holds from the
entry's write until it has called `changed`). So, in every state a crash
can leave, a number outside the journal has the row of its stored entry
(or none and no entry). STATE_KEY holds the rows' version (row format and
policy, `version`) once a full pass has finished, and is deleted in the
write that starts one; a start that finds it equal to `version` and no
b"*" in the journal trusts every row at once and redoes only the journal's
numbers. Everything is written unsynced: RocksDB recovers a prefix of the
writes, and every prefix keeps that rule.

The rows share the process (and so its one GIL) with the writer: while the
writer has work (`yield_to()`, the node's `NodeCore.busy`), the index rests
after each chunk for REST times what the chunk took, so it takes at most a
1/(1+REST) share from the write path and still makes progress under a
sustained load; it rests no longer than the writer stays busy. While a
stream feeds the writer (a catch-up, a bulk import: `fed()`), and so between
its batches too, a rest is REST_FED times the chunk's: the rows of a catch-up
are made mostly once it has drained, at the same cost a row. A dirty row
is never trusted (above), so a row that lags costs a screen a read of the
entry, never a wrong answer.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

from ledger.errors import LedgerError
from ledger.store import Store
from ledger.view.entries import Entry
from ledger.view.stored import CHANGED, EVERYTHING
from ledger.view.update import Changed

log = logging.getLogger("markex.screen")

FAMILY = "screenix"
CHUNK = 1000          # rows written per store write
FRESH = 20_000        # changed entries kept as the view built them (beyond: read back)
REST = 3.0            # while the writer is busy: rest this many times a chunk's time
# ... and while a stream feeds it (a catch-up's pulled batches, an IssueMany
# import: NodeCore.feeding): the rows' share of the one GIL is then at most
# 1/(1+REST_FED), so most of a catch-up's rows are made once it is done.
REST_FED = 20.0
REST_POLL_S = 0.01    # how often a rest asks whether the writer is still busy
MAX_REST_S = 1.0      # a rest ends after this long at most: a chunk at least every second
STATE_KEY = b"\x00state"   # below every number ("+..."): the rows' version, once complete
# below every number too: the latest start of an elided row (u64 BE ms), written in
# the batch that elides it (row_of returned that start instead of a row)
ELIDED_KEY = b"\x00elided"


def forget_rows(store: Store) -> None:
    """For a node that keeps no rows (node.toml `screen_rows = false`): the
    rows' state and the change journal go in one write, before the view
    changes anything, so a later start that keeps rows makes a full pass
    (its view wrote no journal meanwhile: no stored row may be trusted)."""
    batch = store.batch()
    batch.delete(FAMILY, STATE_KEY)
    batch.delete_range(CHANGED, b"", b"\xff")
    store.write(batch, sync=True)


class ScreenIndex:
    def __init__(self, store: Store, entries: Callable[[list[str]], list[bytes | None]],
                 numbers: Callable[[], Iterable[str]],
                 row_of: Callable[[str, bytes | Entry], bytes | int | None] | None = None,
                 yield_to: Callable[[], bool] = lambda: False,
                 lock: AbstractContextManager | None = None,
                 fed: Callable[[], bool] = lambda: False) -> None:
        """`entries(e164s)`: entry bytes (the view keeper's consistent read);
        `numbers()`: every number with an entry; `row_of(number, entry bytes or Entry)`:
        its row (None: none; an int: none, the entry answering as no entry
        from that time on), set before `start` (the screener's, with
        `version`); `yield_to()`: whether the write path has work now (then
        the index rests); `lock`: the view's write lock, held by the writer
        from an entry's write until its `changed` (ViewKeeper.write_lock; by
        default the index's own, for a view that changes only under the
        caller's hand); `fed()`: whether a stream feeds the writer now (the
        node's `NodeCore.fed`: then a rest is REST_FED times a chunk's time)."""
        self.store = store
        self.version = b""                    # the rows' format and policy (the screener's)
        self._view_lock: AbstractContextManager = lock if lock is not None else threading.RLock()
        self._entries = entries
        self._numbers = numbers
        self.row_of = row_of
        self.yield_to = yield_to
        self.fed = fed
        self._cv = threading.Condition()
        self._pending: set[str] = set()
        self._dirty: dict[str, int] = {}      # number -> the change's generation
        # number -> (generation, its entry as that change's apply built it; None:
        # it went): the row is made from it instead of decoding the stored bytes
        self._fresh: dict[str, tuple[int, Entry | None]] = {}
        self._gen = itertools.count(1)
        self._everything = False
        self._busy = False
        self._stop = False
        self.complete = False                 # a pass over every entry has finished
        self._thread: threading.Thread | None = None
        self._since = time.monotonic()        # when the work since the last rest began
        self._loaded = False
        self.written = 0                      # rows written (tests and metrics)
        # The latest start of an elided row (ELIDED_KEY): a trusted number without
        # a row has no entry, or one that answers as none from this time on.
        self.elided_from = 0

    # ------------------------------------------------------------ the writer's side
    def changed(self, numbers: Iterable[str] | None) -> None:
        """The entries of `numbers` changed (None: any may have). Cheap: runs
        on the writer thread. A view's `Changed` also hands over the new
        entries: up to FRESH of them are kept for their rows."""
        entries = numbers.entries if isinstance(numbers, Changed) else None
        with self._cv:
            if numbers is None:
                self._everything = True
                self.complete = False
                self._fresh.clear()
            else:
                fresh = self._fresh
                for n in numbers:
                    g = self._dirty[n] = next(self._gen)
                    self._pending.add(n)
                    if entries is not None and len(fresh) < FRESH:
                        fresh[n] = (g, entries[n])
                    else:                    # an older change's entry is not this one's
                        fresh.pop(n, None)
            self._cv.notify()

    def start(self) -> None:
        """`load` (unless done), then write rows in the background."""
        if not self._loaded:
            self.load()
        self._thread = threading.Thread(target=self._run, name="screen-index", daemon=True)
        self._thread.start()

    def load(self) -> None:
        """Trust the stored rows if a full pass made them under this version
        (and queue the journal's numbers), else queue a full pass."""
        self._loaded = True
        kept = self.store.get(FAMILY, ELIDED_KEY)
        if kept is not None:
            self.elided_from = max(self.elided_from, int.from_bytes(kept, "big"))
        if self.store.get(FAMILY, STATE_KEY) == self.version and self.version and (
                self.store.get(CHANGED, EVERYTHING) is None):
            journal = [k.decode() for k, _ in self.store.items(CHANGED)]
            self.changed(journal)     # dirty before the rest is trusted
            with self._cv:
                self.complete = True
        else:
            self.changed(None)

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

    def catch_up(self) -> int:
        """`load`, then write every queued row on the calling thread, with no
        background thread (a stopped node's store: the rows its index would
        have written while the node ran; tools and benchmarks). Returns the
        rows written."""
        if not self._loaded:
            self.load()
        before = self.written
        while True:
            with self._cv:
                everything, batch = self._take()
            if everything:
                self._write_all()
            elif batch:
                self._write(batch)
            else:
                return self.written - before

    def _take(self) -> tuple[bool, list[str]]:
        """The next work, taken off the queue (with `_cv`): a whole pass, or a
        chunk of the dirty numbers."""
        everything, self._everything = self._everything, False
        if everything:
            return True, []
        return False, [self._pending.pop() for _ in range(min(CHUNK, len(self._pending)))]

    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._stop or self._pending or self._everything):
                    self._busy = False
                    self._cv.wait()
                if self._stop:
                    return
                self._busy = True
                everything, batch = self._take()
            try:
                self._since = time.monotonic()
                if everything:
                    self._write_all()
                else:
                    self._write(batch)
                self._rest()
            except LedgerError as e:       # the store failed: the node reports that itself
                log.warning("screen index: %s", e)
            except Exception:
                log.exception("screen index failed")

    def _write_all(self) -> None:
        # Rows of numbers whose entry went while no one listened would stay:
        # start from none (the screen reads entries until the pass is done).
        # The journal goes too (the pass reads every entry after this write;
        # an entry written later is journalled again), and the state with it,
        # so a crash during the pass makes the next start pass again.
        batch = self.store.batch()
        batch.delete_range(FAMILY, b"", b"\xff")
        batch.delete_range(CHANGED, b"", b"\xff")
        with self._view_lock:
            self.store.write(batch, sync=False)
        chunk: list[str] = []
        for n in self._numbers():
            chunk.append(n)
            if len(chunk) >= CHUNK:
                self._write(chunk, passing=True)
                chunk = []
                if self._stop:
                    return
                self._rest()
        if chunk:
            self._write(chunk, passing=True)
        with self._view_lock, self._cv:
            if self._everything:          # the view was cleared again meanwhile
                return
            if self.version:
                self.store.put(FAMILY, STATE_KEY, self.version, sync=False)
            self.complete = True

    def _rest(self) -> None:
        """After a chunk: while the writer is busy, wait REST (REST_FED while
        a stream feeds it) times the time the chunk took (measured from the
        previous rest), at most MAX_REST_S, or until it is idle."""
        now = time.monotonic()
        until = now + min(MAX_REST_S, (REST_FED if self.fed() else REST) * (now - self._since))
        while not self._stop and time.monotonic() < until and self.yield_to():
            time.sleep(REST_POLL_S)
        self._since = time.monotonic()

    def _write(self, numbers: list[str], passing: bool = False) -> None:
        """Write the rows of `numbers`; `passing`: in a full pass, after its
        delete of every row, so a number without a row needs no delete (a
        tombstone would cost each later read of it as much as a row)."""
        with self._cv:
            gens = {n: self._dirty.get(n) for n in numbers}
            known: dict[str, Entry | None] = {}
            for n in numbers:
                f = self._fresh.get(n)
                if f is not None and f[0] == gens[n]:   # the latest change's entry
                    known[n] = f[1]
        row_of = self.row_of
        assert row_of is not None, "the screener sets row_of before the index starts"
        read = [n for n in numbers if n not in known]
        batch = self.store.batch()
        elided = 0
        for n, got in (*known.items(), *zip(read, self._entries(read), strict=True)):
            row = None if got is None else row_of(n, got)
            if type(row) is int:         # no row: the entry answers as none from then on
                elided = max(elided, row)
                row = None
            if row is None:
                if not passing:
                    batch.delete(FAMILY, n.encode())
            else:
                batch.put(FAMILY, n.encode(), row)  # type: ignore[arg-type]
        if elided:   # in the same batch: stored whenever an elided number is clean
            elided = max(elided, self.elided_from)
            batch.put(FAMILY, ELIDED_KEY, elided.to_bytes(8, "big"))
        # Under the view's write lock: no entry is written between the check
        # and the write, so a number leaves the journal only with the row of
        # the entry as stored (a number changed since its read stays in it).
        with self._view_lock:
            with self._cv:
                same = [n for n, g in gens.items() if self._dirty.get(n) == g]
            for n in same:
                batch.delete(CHANGED, n.encode())
            if elided:       # raised before any of these numbers is clean (it only grows)
                self.elided_from = elided
            self.store.write(batch, sync=False)
            with self._cv:
                for n in same:
                    if gens[n] is not None:
                        del self._dirty[n]
                    self._fresh.pop(n, None)
        self.written += len(numbers)

    # ------------------------------------------------------------ the screen's side
    def rows(self, numbers: list[str]) -> tuple[list[bytes | None], list[bool]]:
        """The stored rows of `numbers` (None: no row), and whether each is
        known to be its entry's (the first pass done and the number not dirty)."""
        with self._cv:
            complete, dirty = self.complete, self._dirty
            trusted = [complete and n not in dirty for n in numbers]
        return self.store.get_many(FAMILY, [n.encode() for n in numbers]), trusted
