"""A public worker's read-only view of its node (node/workers.py): the node's
RocksDB opened as a secondary instance, caught up on a short timer, and
served only at a vector the node signed.

The primary writes, after each change of its view, the view checkpoint note
it serves now with the view tree buckets changed since its previous note
(ViewKeeper.publish, keys `workers/...` in the "meta" family) and, on its
tick, its log checkpoint note. After each catch-up the worker reads the
view's vector and count, the hashes of the buckets the journal names (all of
them at the start, or when it fell more than CHANGES_KEPT notes behind) and
the served note, and takes the new state only when the note signs
exactly that vector, count and root; otherwise (the view moved past the note,
the note is written a moment later) it is *behind* and catches up again a few
milliseconds later. A lookup is never answered with entries read at a vector
other than its note's. A worker holds two secondary instances (copies) of
the store: reads go to the one whose state the node signed while the other
catches up, and a catch-up that the node's note signs swaps them, so a
catch-up never holds a read. (With one store, the reads are checked against
a version the refresh bumps around every catch-up, a seqlock, and wait while
it runs.) A refresh while the node wrote nothing since the last catch-up (the
primary's WAL and MANIFEST unchanged) reads nothing: RocksDB's catch-up costs
milliseconds even then.

    ReadView.refresh()  catch up (when the node wrote since the last one); True
                        when a state signed by the node is held
    ReadView.lookup / lookup_batch / checkpoint_note / check_batch
                        what PublicService asks of a ViewKeeper
    ReadView.log        (a CurrentLog) what PublicService asks of a LogKeeper
                        and a NodeLedger: the ReadLog of the copy read now
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from keys.consortium import Consortium
from ledger import note, viewtree
from ledger import view as V
from ledger.errors import LedgerError, StorageFailure
from ledger.log import NodeLedger
from ledger.store import Store, read_u64, u64
from ledger.view.stored import StoredState, config_digest
from node.viewkeeper import (
    CHANGES_KEPT,
    CHANGES_KEY,
    CHANGES_SEQ_KEY,
    LOG_NOTE_KEY,
    VIEW_NOTE_KEY,
    ViewReads,
)

_T = TypeVar("_T")
_U32 = struct.Struct(">I")
READY_WAIT_S = 2.0  # how long a call waits for a signed state before UNAVAILABLE
READ_TRIES = 3
BEHIND_LIMIT_S = 1.0  # with a spare: how long the last signed state is served without a newer one


class Behind(Exception):  # noqa: N818 - a state, as the answer names it
    """The worker holds no state the node signed (yet): the call is not
    answered (UNAVAILABLE at the edge, node/workers.py). Not a LedgerError:
    nothing is wrong with the question or the ledger, only with this worker's timing."""


class SecondaryState(StoredState):
    """A StoredState that only reads: `reload()` takes what a catch-up
    brought (vector, count, bucket hashes: the changed ones into the tree).
    Raises Behind while the store holds no view of this configuration."""

    def __init__(self, store: Store, consortium: Consortium, bucket_bits: int) -> None:
        self._leaves: dict[int, bytes] = {}
        # vector, count, journal seq as read last; the journal seq the tree is at
        self._meta: tuple[bytes | None, ...] | None = None
        self._seq: int | None = None
        super().__init__(store, consortium, bucket_bits)

    def _load(self) -> None:
        if self.store.get("viewmeta", b"config") != self._digest:
            raise Behind("the node has not written its view yet")
        self.reload()

    def clear(self) -> None:
        raise StorageFailure("a worker's view is read-only")

    def reload(self) -> None:
        st = self.store
        raw, count = st.get("viewmeta", b"vector"), st.get("viewmeta", b"count")
        seq_raw = st.get("meta", CHANGES_SEQ_KEY)
        if (raw, count, seq_raw) == self._meta:
            return  # no note published and the same vector: the same view
        try:
            vector = json.loads(raw) if raw else {}
            seq = read_u64(seq_raw) if seq_raw else 0
            buckets = self._journal(seq)
            if buckets is None:
                leaves = {_U32.unpack(k)[0]: v for k, v in st.items("viewbuckethash")}
                changes = {b: h for b, h in leaves.items() if self._leaves.get(b) != h}
                changes.update((b, viewtree.EMPTY) for b in self._leaves if b not in leaves)
                self._leaves = leaves
            else:
                order = sorted(buckets)
                got = st.get_many("viewbuckethash", [_U32.pack(b) for b in order])
                changes = {b: h or viewtree.EMPTY for b, h in zip(order, got, strict=True)}
                for b, h in zip(order, got, strict=True):
                    if h is None:
                        self._leaves.pop(b, None)
                    else:
                        self._leaves[b] = h
        except (ValueError, struct.error) as e:
            raise StorageFailure(f"the node's view metadata does not parse: {e}") from e
        self.tree.update(changes)
        self.vector = vector
        self.count = read_u64(count) if count else 0
        self._meta = (raw, count, seq_raw)
        self._seq = seq

    def _journal(self, seq: int) -> set[int] | None:
        """The buckets the node's journal says changed after the notes this
        state has read, up to `seq`; None: read every bucket (the first
        load, a journal that says "any", or one trimmed past what was read).
        Buckets the view changed before their note was journaled are named
        by the next note's entry, read at a later catch-up: until then the
        root differs from the note's and the state is not taken."""
        last = self._seq
        if last is None or seq < last or seq - last > CHANGES_KEPT:
            return None
        keys = [CHANGES_KEY + u64(n) for n in range(last + 1, seq + 1)]
        out: set[int] = set()
        for v in self.store.get_many("meta", keys) if keys else []:
            if v is None or v == b"*" or len(v) % 4:
                return None
            out.update(x for (x,) in _U32.iter_unpack(v))
        return out


class _ReadOnlyView(V.NationalView):
    """A NationalView over a SecondaryState (reads and proofs only)."""

    def __init__(self, consortium: Consortium, state: SecondaryState) -> None:
        super().__init__(consortium)
        self._state = state
        self._stored = True

    def apply(self, records):  # type: ignore[no-untyped-def]
        raise StorageFailure("a worker's view is read-only")


class _Copy:
    """One secondary instance of the node's store and what was taken of it at
    its last catch-up: the view state, the log, the node's note (None: the
    store's view is not one the node signed), and the reads now on it."""

    def __init__(self, store: Store, consortium: Consortium, participant_id: str) -> None:
        self.store = store
        self.state: SecondaryState | None = None
        self.view: _ReadOnlyView | None = None
        self.log = ReadLog(store, consortium, participant_id)
        self.note: str | None = None
        self.readers = 0


class ReadView(ViewReads):
    """The worker's view (see the module doc): thread-safe reads, one
    refresher (`refresh`, called on the worker's timer).

    With one store, a catch-up changes what reads see: they are read again
    when one raced it (a seqlock) and wait while it runs. With a `spare`
    (a second secondary instance of the same node, node/workers.py), the
    reads go to one copy while the other catches up, and a catch-up the node
    signed swaps them: no read waits for a catch-up. A copy is caught up only
    once the reads that began on it before the swap have ended. While the
    spare finds no state the node signed, the last signed one is served, for
    at most BEHIND_LIMIT_S; after that the worker is behind (Behind)."""

    def __init__(self, store: Store, consortium: Consortium, participant_id: str,
                 spare: Store | None = None) -> None:
        self.store = store
        self.consortium = consortium
        self.participant_id = participant_id
        self.bucket_bits = min(consortium.policy.view_bucket_bits, viewtree.MAX_TOP_BITS)
        self._digest = config_digest(consortium, self.bucket_bits)
        self._copies = [_Copy(s, consortium, participant_id)
                        for s in (store, spare) if s is not None]
        self._current: _Copy | None = None  # the copy reads use; None: behind
        self._version = 0            # one store: odd while a catch-up changes what reads see
        self._unsigned_since: float | None = None  # spare: since when catch-ups found no note
        self._cond = threading.Condition()
        self._refresh_lock = threading.Lock()
        self.log = CurrentLog(self)

    @property
    def _state(self) -> SecondaryState | None:
        """The state reads use (for tests and diagnostics)."""
        c = self._current
        return None if c is None else c.state

    def close(self) -> None:
        for c in self._copies:
            c.store.close()

    # ------------------------------------------------------------ refresh
    def refresh(self) -> bool:
        """Catch up with the node and take its state when the node's served
        note signs it. True when a signed state is held after the call.
        While a signed state is held and the node wrote nothing since the
        last catch-up, nothing is read and reads go on meanwhile."""
        with self._refresh_lock:
            cur = self._current
            try:
                if cur is not None and not cur.store.primary_moved():
                    return True  # a catch-up would find the same state
            except Exception:
                self._still_unsigned()  # what cannot be read is not newer: count the time
                raise
            if len(self._copies) == 1:
                return self._refresh_in_place(self._copies[0])
            return self._refresh_spare(next(c for c in self._copies if c is not cur))

    def _refresh_in_place(self, copy: _Copy) -> bool:
        with self._cond:
            self._version += 1          # reads from here on are read again
            self._current = None
        try:
            self._catch_up(copy)
        finally:
            with self._cond:
                self._current = copy if copy.note is not None else None
                self._version += 1
                self._cond.notify_all()
        return copy.note is not None

    def _refresh_spare(self, spare: _Copy) -> bool:
        with self._cond:
            while spare.readers:  # reads that began on it while it was the current copy
                self._cond.wait()
        try:
            self._catch_up(spare)
        except Exception:
            self._still_unsigned()  # a failing catch-up is behind too, after the limit
            raise
        with self._cond:
            if spare.note is not None:
                self._current, self._unsigned_since = spare, None
                self._cond.notify_all()
                return True
        return self._still_unsigned()

    def _still_unsigned(self) -> bool:
        """No newer signed state: keep serving the last one for BEHIND_LIMIT_S
        from the first such refresh, then nothing (behind). True while held."""
        with self._cond:
            if self._current is not None:
                now = time.monotonic()
                if self._unsigned_since is None:
                    self._unsigned_since = now
                elif now - self._unsigned_since > BEHIND_LIMIT_S:
                    self._current = None  # too long without a note: behind
            return self._current is not None

    def _catch_up(self, copy: _Copy) -> None:
        """Catch `copy` up and take its note (None: not signed); nobody reads it now."""
        copy.note = None
        copy.store.catch_up()
        copy.note = self._take(copy)
        copy.log.reload()

    def _take(self, copy: _Copy) -> str | None:
        """The served note when it signs the copy's view now, else None."""
        raw = copy.store.get("meta", VIEW_NOTE_KEY)
        if raw is None:
            return None
        try:
            if copy.state is None:
                copy.state = SecondaryState(copy.store, self.consortium, self.bucket_bits)
                copy.view = _ReadOnlyView(self.consortium, copy.state)
            else:
                copy.state.reload()
        except Behind:
            return None
        text = raw.decode()
        try:
            cp = V.parse_view_checkpoint(note.Note.parse(text).text)
        except LedgerError as e:
            raise StorageFailure(f"the node's served view note does not parse: {e}") from e
        assert copy.view is not None
        held = copy.view.checkpoint(cp.origin, cp.signed_at_ms)
        if (held.vector, held.count, held.root) != (cp.vector, cp.count, cp.root):
            return None  # the view moved past the note: the next note follows it
        return text

    def wait_signed(self, timeout: float | None = None) -> _Copy:
        """The copy reads use, once a signed state is held; Behind after
        `timeout` s (default READY_WAIT_S). Call with the condition held."""
        deadline = time.monotonic() + (READY_WAIT_S if timeout is None else timeout)
        while self._current is None or self._version % 2:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Behind("this worker has not caught up with its node; try again")
            self._cond.wait(left)
        return self._current

    @property
    def signed(self) -> bool:
        return self._current is not None

    @property
    def lagging(self) -> bool:
        """With a spare: the last catch-up found no state the node signed (the
        last signed one is served meanwhile); look again soon."""
        return self._unsigned_since is not None

    # ------------------------------------------------------------ reads
    def _consistent(self, read: Callable[[V.NationalView], _T]) -> tuple[str, _T]:
        """The node's note and `read(view)` of the one state it signs."""
        if len(self._copies) > 1:
            with self._cond:
                copy = self.wait_signed()
                copy.readers += 1  # not caught up until this read ends
            try:
                assert copy.note is not None and copy.view is not None
                return copy.note, read(copy.view)
            finally:
                with self._cond:
                    copy.readers -= 1
                    if not copy.readers:
                        self._cond.notify_all()
        # One store: the read is kept only when no catch-up began meanwhile.
        for _ in range(READ_TRIES):
            with self._cond:
                copy = self.wait_signed()
                version, text, view = self._version, copy.note, copy.view
            if text is None or view is None:
                continue
            try:
                got = read(view)
            except Exception:
                if self._version == version:
                    raise
                continue
            if self._version == version:
                return text, got
        with self._refresh_lock:  # no catch-up while this one batch is read
            with self._cond:
                copy = self.wait_signed(0)
            assert copy.note is not None and copy.view is not None
            return copy.note, read(copy.view)

    def checkpoint_note(self) -> str | None:
        with self._cond:
            return self.wait_signed().note


class CurrentLog:
    """The ReadLog of the copy reads use now (the first copy while behind):
    what PublicService asks of a LogKeeper and a NodeLedger."""

    def __init__(self, view: ReadView) -> None:
        self._view = view

    def _log(self) -> ReadLog:
        copy = self._view._current
        return (copy or self._view._copies[0]).log

    @property
    def ledger(self) -> NodeLedger:
        return self._log().ledger

    def checkpoint_note(self) -> str | None:
        return self._log().checkpoint_note()

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self._log().inclusion_proof(index, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self._log().consistency_proof(old_size, new_size)

    def leaf_hash(self, index: int) -> bytes:
        return self._log().leaf_hash(index)

    def feeds(self) -> dict:
        return self._log().feeds()


class ReadLog:
    """The node's log as its secondary store holds it: the served log
    checkpoint note, proofs and feed heads (what PublicService asks of its
    LogKeeper and NodeLedger), the ledger read again when the log grew."""

    def __init__(self, store: Store, consortium: Consortium, participant_id: str) -> None:
        self.store = store
        self.consortium = consortium
        self.participant_id = participant_id
        self._size: bytes | None = None
        self._ledger: NodeLedger | None = None

    def reload(self) -> None:
        size = self.store.get("meta", b"size")
        if self._ledger is None or size != self._size:
            self._ledger = NodeLedger(self.store, self.consortium, self.participant_id)
            self._size = size

    @property
    def ledger(self) -> NodeLedger:
        if self._ledger is None:
            raise Behind("this worker has not read its node's log yet")
        return self._ledger

    def checkpoint_note(self) -> str | None:
        raw = self.store.get("meta", LOG_NOTE_KEY)
        return None if raw is None else raw.decode()

    # NodeLedger's reads, of the ledger as of the last refresh
    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self.ledger.inclusion_proof(index, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self.ledger.consistency_proof(old_size, new_size)

    def leaf_hash(self, index: int) -> bytes:
        return self.ledger.leaf_hash(index)

    def feeds(self) -> dict:
        return self.ledger.feeds()
