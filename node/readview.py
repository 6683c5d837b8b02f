"""A public worker's read-only view of its node (node/workers.py): the node's
RocksDB opened as a secondary instance, caught up on a short timer, and
served only at a vector the node signed.

The primary writes, after each change of its view, the view checkpoint note
it serves now (ViewKeeper.publish, key `view/served` in the "checkpoints"
family) and, on its tick, its log checkpoint note (`log/served`). After each
catch-up the worker reads the view's vector, count and bucket hashes from the
store and the served note, and takes the new state only when the note signs
exactly that vector, count and root; otherwise (the view moved past the note,
the note is written a moment later) it is *behind* and catches up again a few
milliseconds later. A lookup is never answered with entries read at a vector
other than its note's: reads are checked against a version the refresh bumps
around every catch-up (a seqlock), and a read that raced one is read again.

    ReadView.refresh()  catch up; True when a state signed by the node is held
    ReadView.lookup / lookup_batch / checkpoint_note / check_batch
                        what PublicService asks of a ViewKeeper
    ReadLog             what PublicService asks of a LogKeeper and a NodeLedger
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
from ledger.numbers import normalize
from ledger.store import Store, read_u64
from ledger.view.stored import StoredState, config_digest
from markex.v1 import service_pb2 as pb
from node.viewkeeper import LOG_NOTE_KEY, VIEW_NOTE_KEY, ViewKeeper

_T = TypeVar("_T")
_U32 = struct.Struct(">I")
READY_WAIT_S = 2.0  # how long a call waits for a signed state before UNAVAILABLE
READ_TRIES = 3


class Behind(StorageFailure):
    """The worker holds no state the node signed (yet): the call is not answered."""


class SecondaryState(StoredState):
    """A StoredState that only reads: `reload()` takes what a catch-up
    brought (vector, count, bucket hashes: the changed ones into the tree).
    Raises Behind while the store holds no view of this configuration."""

    def __init__(self, store: Store, consortium: Consortium, bucket_bits: int) -> None:
        self._leaves: dict[int, bytes] = {}
        self._meta: tuple[bytes | None, bytes | None] | None = None  # vector, count read last
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
        if (raw, count) == self._meta:
            return  # the same vector: the same view (a pure function of the records)
        try:
            vector = json.loads(raw) if raw else {}
            leaves = {_U32.unpack(k)[0]: v for k, v in st.items("viewbuckethash")}
        except (ValueError, struct.error) as e:
            raise StorageFailure(f"the node's view metadata does not parse: {e}") from e
        changes = {b: h for b, h in leaves.items() if self._leaves.get(b) != h}
        changes.update((b, viewtree.EMPTY) for b in self._leaves if b not in leaves)
        self.tree.update(changes)
        self._leaves = leaves
        self.vector = vector
        self.count = read_u64(count) if count else 0
        self._meta = (raw, count)


class _ReadOnlyView(V.NationalView):
    """A NationalView over a SecondaryState (reads and proofs only)."""

    def __init__(self, consortium: Consortium, state: SecondaryState) -> None:
        super().__init__(consortium)
        self._state = state
        self._stored = True

    def apply(self, records):  # type: ignore[no-untyped-def]
        raise StorageFailure("a worker's view is read-only")


class ReadView:
    """The worker's view (see the module doc): thread-safe reads, one
    refresher (`refresh`, called on the worker's timer)."""

    def __init__(self, store: Store, consortium: Consortium, participant_id: str) -> None:
        self.store = store
        self.consortium = consortium
        self.participant_id = participant_id
        self.bucket_bits = min(consortium.policy.view_bucket_bits, viewtree.MAX_TOP_BITS)
        self._digest = config_digest(consortium, self.bucket_bits)
        self._state: SecondaryState | None = None
        self._view: _ReadOnlyView | None = None
        self._version = 0            # odd while a catch-up changes what reads see
        self._note: str | None = None  # the node's note for the state held; None: behind
        self._cond = threading.Condition()
        self._refresh_lock = threading.Lock()
        self.log = ReadLog(store, consortium, participant_id)

    # ------------------------------------------------------------ refresh
    def refresh(self) -> bool:
        """Catch up with the node and take its state when the node's served
        note signs it. True when a signed state is held after the call."""
        with self._refresh_lock:
            with self._cond:
                self._version += 1          # reads from here on are read again
                self._note = None
            note_text: str | None = None
            try:
                self.store.catch_up()
                note_text = self._take()
                self.log.reload()
            finally:
                with self._cond:
                    self._note = note_text
                    self._version += 1
                    self._cond.notify_all()
            return note_text is not None

    def _take(self) -> str | None:
        """The served note when it signs the store's view now, else None."""
        raw = self.store.get("checkpoints", VIEW_NOTE_KEY)
        if raw is None:
            return None
        try:
            if self._state is None:
                self._state = SecondaryState(self.store, self.consortium, self.bucket_bits)
                self._view = _ReadOnlyView(self.consortium, self._state)
            else:
                self._state.reload()
        except Behind:
            return None
        text = raw.decode()
        try:
            cp = V.parse_view_checkpoint(note.Note.parse(text).text)
        except LedgerError as e:
            raise StorageFailure(f"the node's served view note does not parse: {e}") from e
        assert self._view is not None
        held = self._view.checkpoint(cp.origin, cp.signed_at_ms)
        if (held.vector, held.count, held.root) != (cp.vector, cp.count, cp.root):
            return None  # the view moved past the note: the next note follows it
        return text

    def wait_signed(self, timeout: float | None = None) -> None:
        """Return once a signed state is held; Behind after `timeout` s
        (default READY_WAIT_S)."""
        deadline = time.monotonic() + (READY_WAIT_S if timeout is None else timeout)
        with self._cond:
            while self._note is None or self._version % 2:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Behind("this worker has not caught up with its node; try again")
                self._cond.wait(left)

    @property
    def signed(self) -> bool:
        return self._note is not None

    # ------------------------------------------------------------ reads
    def _consistent(self, read: Callable[[V.NationalView], _T]) -> tuple[str, _T]:
        """The node's note and `read(view)` of the one state it signs: the
        read is kept only when no catch-up began meanwhile."""
        for _ in range(READ_TRIES):
            self.wait_signed()
            with self._cond:
                version, text, view = self._version, self._note, self._view
            if text is None or version % 2 or view is None:
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
            self.wait_signed(0)
            assert self._note is not None and self._view is not None
            return self._note, read(self._view)

    check_batch = staticmethod(ViewKeeper.check_batch)

    def checkpoint_note(self) -> str | None:
        self.wait_signed()
        return self._note

    def lookup(self, number: str, with_proof: bool) -> pb.LookupResponse:
        e164 = normalize(number)
        text, answers = self._consistent(
            lambda view: ViewKeeper.answers(view, [e164], with_proof))
        resp = answers[0]
        resp.view_checkpoint = text
        return resp

    def lookup_batch(self, numbers: list[str], with_proofs: bool) -> pb.LookupBatchResponse:
        self.check_batch(numbers)
        e164s = [normalize(n) for n in numbers]
        text, answers = self._consistent(
            lambda view: ViewKeeper.answers(view, e164s, with_proofs))
        out = pb.LookupBatchResponse(view_checkpoint=text)
        out.results.extend(answers)
        return out


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
        raw = self.store.get("checkpoints", LOG_NOTE_KEY)
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
