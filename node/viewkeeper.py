"""The node's national view: kept up to date on the writer thread, signed at
every change (so every lookup proves against a signed root), cosigned by peers
that computed the same root for the same vector.

A view checkpoint carries the time it was signed, and clients refuse one older
than `policy.view_max_age_ms`: an idle node signs its unchanged view again every
quarter of that age (on the tick) and keeps serving the previous cosigned note
until the new one has its quorum. A peer's cosignature is verified before it is
kept; a bad one is refused and logged (`refused_cosignatures`).

The view lives in the node's store (NationalView.open): a start applies only
the ledger records beyond the stored view's vector (catch_up), so a crash
between a ledger commit and the view's commit heals at the next start, and a
restart does not re-read the whole log."""

from __future__ import annotations

import json
import logging
import struct
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, TypeVar

import grpc

from keys.consortium import Participant
from ledger import note, viewtree
from ledger import view as V
from ledger.errors import (
    BadSignature,
    CheckpointFork,
    ClockSkew,
    LedgerError,
    NotAllowed,
    OutOfOrder,
    StorageFailure,
    TooLarge,
)
from ledger.evidence import in_format
from ledger.names import view_origin, witness_name
from ledger.numbers import normalize
from ledger.store import read_u64, u64
from ledger.viewtree import view_key
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.derivedkeeper import DerivedKeeper
from node.logs import event

if TYPE_CHECKING:
    from ledger.log import NodeLedger

_T = TypeVar("_T")
log = logging.getLogger("markex.view")

MAX_LOOKUP_BATCH = 1000  # numbers per LookupBatch call
READ_TRIES = 3  # optimistic reads of one lookup before it reads under the lock
# In the "meta" family, for the public workers (node/workers.py, node/readview.py):
VIEW_NOTE_KEY = b"workers/view-note"  # the view checkpoint note served now, for the stored view
LOG_NOTE_KEY = b"workers/log-note"    # the log checkpoint note served now (node/workers.py)
CHANGES_SEQ_KEY = b"workers/view-seq"  # u64: how many notes were published
# + u64(seq): the view tree buckets (u32 BE each) changed since note seq - 1; b"*": any
CHANGES_KEY = b"workers/view-changes/"
CHANGES_KEPT = 1024  # journal entries kept; a worker further behind reads every bucket


class ViewReads(ABC):
    """Lookup, LookupBatch and the export snapshot, written once over
    `_consistent(read)`: the served view checkpoint note and `read(view)` of
    one state of the view. Each reader keeps them consistent its own way: the
    node's ViewKeeper (a version checked around a read outside the writer's
    lock), a public worker's ReadView (node/readview.py: the copy the node
    signed) and a replica (node/replica.py: under its lock)."""

    @abstractmethod
    def _consistent(self, read: Callable[[V.NationalView], _T]) -> tuple[str, _T]: ...

    def _lookup_read(
        self, read: Callable[[V.NationalView], list[pb.LookupResponse]]
    ) -> tuple[str, list[pb.LookupResponse]]:
        """The consistent read a lookup's answers come from (a replica's also
        refuses before its first verified note, and counts them)."""
        return self._consistent(read)

    @staticmethod
    def check_batch(numbers: list[str]) -> None:
        """The one bound on a lookup batch: TooLarge beyond MAX_LOOKUP_BATCH numbers."""
        if len(numbers) > MAX_LOOKUP_BATCH:
            raise TooLarge(f"at most {MAX_LOOKUP_BATCH} numbers per batch, got {len(numbers)}")

    @staticmethod
    def answers(
        view: V.NationalView, e164s: list[str], with_proofs: bool
    ) -> list[pb.LookupResponse]:
        """One answer per number, the entries read in one multi-get."""
        out = []
        for e164, entry in zip(e164s, view.entries_bytes(e164s), strict=True):
            proof = view.proof(e164).encode() if with_proofs else b""
            out.append(pb.LookupResponse(entry=entry or b"", proof=proof, number=e164))
        return out

    def _answered(
        self, numbers: list[str], with_proofs: bool
    ) -> tuple[str, list[pb.LookupResponse]]:
        """The note and one answer per number, of one state (TooLarge past
        the batch bound; InvalidNumber for a bad number fails the call)."""
        self.check_batch(numbers)
        e164s = [normalize(n) for n in numbers]
        return self._lookup_read(lambda view: self.answers(view, e164s, with_proofs))

    def lookup(self, number: str, with_proof: bool) -> pb.LookupResponse:
        """The entry of `number` (with its proof) under the served view
        checkpoint; the caller evaluates the entry at its own time."""
        note, answers = self._answered([number], with_proof)
        resp = answers[0]
        resp.view_checkpoint = note
        return resp

    def lookup_batch(self, numbers: list[str], with_proofs: bool) -> pb.LookupBatchResponse:
        """`lookup` for at most MAX_LOOKUP_BATCH numbers, under one checkpoint."""
        note, answers = self._answered(numbers, with_proofs)
        out = pb.LookupBatchResponse(view_checkpoint=note)
        out.results.extend(answers)
        return out

    def snapshot(self) -> tuple[str, list[bytes]]:
        """The served note and every entry's bytes (in number order) of one
        state of the view (ExportView)."""
        return self._consistent(_all_entries)


class ViewKeeper(DerivedKeeper[V.NationalView], ViewReads):
    """The national view as a state derived from the log (node/derivedkeeper.py:
    apply, tick and the catch-ups), with its signed note around every change."""

    def __init__(self, ledger: NodeLedger, clock: Callable[[], int],
                 journal: bool = True) -> None:
        """The view of `ledger`'s records, kept in its store and signed with
        its key; `clock` gives the signing times (ms); `journal`: the view
        writes its change journal (for the screen's rows; NationalView.open)."""
        if ledger.signer is None:
            raise ValueError("the view keeper signs with its ledger's key; this ledger has none")
        super().__init__(ledger)
        self.store = ledger.store
        self.consortium = ledger.consortium
        self.participant_id = ledger.participant_id
        self.key = ledger.signer
        self.clock = clock
        self.journal = journal
        self.origin = view_origin(self.consortium.name, self.participant_id)
        self._lock = threading.RLock()  # re-entered: a change publishes, a publish signs
        self._note: str | None = None
        self._cp: V.ViewCheckpoint | None = None  # what _note signs
        self._stale = False  # the view moved since _note was signed
        self._cosigs: dict[str, str] = {}
        # The note signed before _note for the same view, and its cosignatures:
        # served until _note has a quorum, so a re-signing never leaves a gap.
        self._prev: tuple[str, dict[str, str]] | None = None
        self.refused_cosignatures: dict[str, str] = {}  # peer -> why its last line was refused
        # Bumped under the lock before every change of the view: a lookup read
        # outside the lock is the view of one version if the version held (_consistent).
        self._version = 0
        # Told which numbers' entries changed (None: any may have), on the
        # writer thread: the screen's index (node/screenindex.py).
        self.on_change: list[Callable[[set[str] | None], None]] = []
        # With public workers: write the served note with every change (publish).
        self.publishes = False
        self._published: str | None = None
        self._pub_seq = 0
        self._dirty: set[int] | None = None  # buckets changed since the last publish; None: any

    def start(self) -> None:
        with self._lock:
            self._version += 1
            view = V.NationalView.open(self.store, self.consortium, self.journal)
            V.catch_up(view, self.ledger)
            self.state = view
            self._sign()
        self.publish()

    @property
    def view(self) -> V.NationalView | None:
        """The national view (the keeper's state); None before `start`."""
        return self.state

    # ------------------------------------------------------------ updates
    # DerivedKeeper applies and catches up; around each change of the view:
    def _changing(self) -> None:
        self._version += 1

    def _settled(self, ok: bool) -> None:
        self._sign()
        if ok:
            self.publish()

    def _changed(self, numbers: set[str] | None) -> None:
        if self.publishes and self.view is not None:
            if numbers is None:
                self._dirty = None
            elif self._dirty is not None:
                shift = viewtree.DEPTH - self.view.bucket_bits
                self._dirty.update(viewtree.position(view_key(n)) >> shift for n in numbers)
        for fn in self.on_change:
            fn(numbers)

    @property
    def version(self) -> int:
        """A number that changes whenever the view does (bumped before each change)."""
        return self._version

    @property
    def write_lock(self) -> AbstractContextManager[bool]:
        """Held from every change of the stored view until `on_change` has
        been told of it (node/screenindex.py checks its rows under it)."""
        return self._lock

    def numbers(self) -> Iterator[str]:
        """Every number with an entry now (read as the store iterates)."""
        assert self.view is not None
        return iter(self.view.numbers())

    def publish(self) -> None:
        """With `publishes`: write the note served now (signed for the view
        as the store holds it, cosignatures included) to VIEW_NOTE_KEY when
        it changed, under the lock that every change of the view holds, so a
        worker reading the store finds the note of the vector beside it (or
        a moment later). Unsynced: rewritten after a restart."""
        if not self.publishes:
            return
        with self._lock:
            text = self.checkpoint_note()
            if text is None or text == self._published:
                return
            if self._published is None:  # the first of this run: continue the stored journal
                raw = self.store.get("meta", CHANGES_SEQ_KEY)
                self._pub_seq = read_u64(raw) if raw else 0
            seq = self._pub_seq + 1
            dirty = self._dirty
            # The note and the buckets that changed since the last one, in one write:
            # a worker re-reads only those (node/readview.py).
            b = self.store.batch()
            b.put("meta", VIEW_NOTE_KEY, text.encode())
            b.put("meta", CHANGES_KEY + u64(seq),
                  b"*" if dirty is None else b"".join(struct.pack(">I", x) for x in sorted(dirty)))
            b.put("meta", CHANGES_SEQ_KEY, u64(seq))
            if seq > CHANGES_KEPT:
                b.delete("meta", CHANGES_KEY + u64(seq - CHANGES_KEPT))
            self.store.write(b, sync=False)
            self._pub_seq, self._dirty, self._published = seq, set(), text

    def tick(self) -> None:
        self._refresh()
        self.publish()  # a re-signing, or cosignatures that arrived
        super().tick()  # the catch-up an update failure or a freeze left due

    def _sign(self) -> None:
        """The view changed: its checkpoint is signed when next asked for
        (a lookup, a cosigning round), not once per group commit."""
        self._stale = True

    def _refresh(self) -> None:
        """Sign the view again when its checkpoint is a quarter of the
        policy's maximum age old, so clients of an idle node never see it stale."""
        with self._lock:
            if self._cp is None or self.view is None:
                return
            now = self.clock()
            if now - self._cp.signed_at_ms < self.consortium.policy.view_max_age_ms // 4:
                return
            self._stale = True
            self._current_note(force=True)

    def _current_note(self, force: bool = False) -> str | None:
        """The signed view checkpoint of the view as it is now (signed again
        only when the view moved, or with `force`). Call with the lock."""
        if self._stale and self.view is not None:
            cp = self.view.checkpoint(self.origin, self.clock())
            same_view = self._cp is not None and _same_view(cp, self._cp)
            if not same_view or force:
                if not same_view:
                    self._prev = None
                elif self._note is not None and self._has_quorum(self._cosigs):
                    self._prev = (self._note, self._cosigs)
                self._note = V.sign_view_checkpoint(cp, self.key)
                self._cp = cp
                self._cosigs = {}
            self._stale = False
        return self._note

    def _has_quorum(self, cosigs: dict[str, str]) -> bool:
        return len(cosigs) >= self.consortium.policy.cosign_quorum

    def cosigned(self) -> bool:
        """Whether the view as it is now has a checkpoint with its quorum
        (False when the view moved since the last one was signed; True
        before the view is open). Signs nothing."""
        with self._lock:
            if self.view is None:
                return True
            return self._note is not None and not self._stale and self._has_quorum(self._cosigs)

    # ------------------------------------------------------------ reads
    def checkpoint_note(self) -> str | None:
        with self._lock:
            current = self._current_note()
            if current is None:
                return None
            if self._prev is not None and not self._has_quorum(self._cosigs):
                prev, cosigs = self._prev
                return note.add_signature_lines(prev, sorted(cosigs.values()))
            return note.add_signature_lines(current, sorted(self._cosigs.values()))

    def signed_at_ms(self) -> int | None:
        """When the view checkpoint served now was signed (ms), None before the first."""
        with self._lock:
            self._current_note()
            return None if self._cp is None else self._cp.signed_at_ms

    def _consistent(self, read: Callable[[V.NationalView], _T]) -> tuple[str, _T]:
        """The signed view checkpoint and `read(view)` of one version of the
        view, read outside the lock the writer needs: the read is kept only
        if no change began meanwhile (the writer is never held by it). After
        READ_TRIES collisions it is read under the lock. rocksdict's
        snapshots cannot serve this: their iterators (a proof reads a
        bucket's members) ignore the snapshot."""
        for _ in range(READ_TRIES):
            with self._lock:
                version, view = self._version, self.view
                text = self.checkpoint_note() or ""
            assert view is not None
            try:
                got = read(view)
            except Exception:
                if self._version == version:
                    raise  # not a read torn by a change: a real error
                continue
            if self._version == version:
                return text, got
        with self._lock:
            assert self.view is not None
            return self.checkpoint_note() or "", read(self.view)

    def entries_bytes(self, e164s: list[str]) -> list[bytes | None]:
        """The entry bytes of each E.164 number (None: no entry), all of one
        version of the view (the lookups' consistent read; node/screen.py)."""
        return self._consistent(lambda view: view.entries_bytes(e164s))[1]

    # ------------------------------------------------------------ cosigning
    def cosign(self, peer: str, text: str) -> str:
        """Cosign `peer`'s view checkpoint when its origin is `peer`'s view
        (BadSignature), it is signed by `peer`, was signed within the clock
        skew of this node's clock (ClockSkew), and names this node's vector
        (OutOfOrder) with this node's root (else CheckpointFork, kept as
        evidence). A note at another vector is refused before its signature
        is checked: under load most asks are (docs/deploy.md), and a refusal
        keeps nothing."""
        cons = self.consortium
        p = cons.participant(peer)
        if p is None:
            raise NotAllowed(f"{peer!r} is not a member")
        origin = view_origin(cons.name, peer)
        parsed = note.Note.parse(text)
        theirs = V.parse_view_checkpoint(parsed.text)
        # The note names the peer's own view: its origin must be the key name
        # the signature is checked under (style: never let the two differ).
        if theirs.origin != origin:
            raise BadSignature(f"view checkpoint origin {theirs.origin!r} is not {peer}'s view")
        if not self._at_vector(theirs):
            raise OutOfOrder("this node's view is at another vector")
        note.verify_parsed(parsed, [note.Verifier.for_key(origin, p.public_key)])
        now = self.clock()
        off = theirs.signed_at_ms - now
        if abs(off) > cons.policy.clock_skew_ms:
            raise ClockSkew(
                f"the view checkpoint is signed {abs(off) // 1000:,} s "
                f"{'after' if off > 0 else 'before'} this node's clock; "
                f"the policy allows {cons.policy.clock_skew_ms // 1000:,} s"
            )
        with self._lock:
            assert self.view is not None
            if not self._at_vector(theirs):  # the view moved while the signature was checked
                raise OutOfOrder("this node's view is at another vector")
            if theirs.root != self.view.root() or theirs.count != self.view.count:
                self._fork(peer, text)
                raise CheckpointFork(f"{peer} signed another view root for the same vector")
        return note.cosign_line(
            parsed.text,
            witness_name(cons.name, self.participant_id),
            self.key,
            now // 1000,
        )

    def _at_vector(self, theirs: V.ViewCheckpoint) -> bool:
        """Whether this node's view is at the vector `theirs` names."""
        with self._lock:
            assert self.view is not None
            return dict(theirs.vector) == dict(self.view.vector)

    def request_cosign(self, peer: Participant, stub: rpc.ExchangeStub) -> bool:
        """Ask `peer` (its Exchange `stub`) to cosign the current view
        checkpoint and keep its line once it checks. A peer at another vector
        or root is no error here: then False (else True, also when nothing
        was asked); other refusals raise grpc.RpcError."""
        with self._lock:
            text = self._current_note()
            if text is None or peer.id in self._cosigs:
                return True
        try:
            resp = stub.CosignView(pb.CosignRequest(note=text), timeout=5)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED):
                return False
            raise
        why = self._check_cosignature(peer, text, resp.signature_line)
        with self._lock:
            if why is not None:
                self.refused_cosignatures[peer.id] = why
                return True  # a bad line is logged and kept apart, not a vector apart
            self.refused_cosignatures.pop(peer.id, None)
            if self._note == text:
                self._cosigs[peer.id] = resp.signature_line
                if self._has_quorum(self._cosigs):
                    self._prev = None
        return True

    def _check_cosignature(self, peer: Participant, text: str, line: str) -> str | None:
        """Why `line` is no good cosignature by `peer` on `text` (None when
        it is): it must verify under the peer's witness key and carry a time
        within the clock skew. A refusal is logged."""
        cons = self.consortium
        try:
            body = note.Note.parse(text).text
            t = note.verify_cosignature(
                body, line, witness_name(cons.name, peer.id), peer.public_key
            )
            off = t * 1000 - self.clock()
            if abs(off) > cons.policy.clock_skew_ms + 1000:  # +1 s: the line holds whole seconds
                raise ClockSkew(f"cosignature time is {off // 1000:,} s off this node's clock")
        except LedgerError as e:
            why = f"{type(e).__name__}: {e}"
            event(log, logging.WARNING, "view-cosignature-refused", peer=peer.id, error=why[:300])
            return why
        return None

    def _fork(self, peer: str, text: str) -> None:
        """Keep the first proof that `peer` signed another view root; later
        ones add nothing, so a peer cannot fill our disk with them."""
        prefix = b"viewfork/" + peer.encode() + b"\x00"
        if next(iter(self.store.items("witness", prefix, prefix[:-1] + b"\x01")), None):
            return
        from ledger.evidence import view_fork_evidence  # only a fork needs the format

        ours = self._current_note()
        if ours is None:  # no view of our own signed yet: nothing to set against theirs
            return
        try:
            ev = view_fork_evidence(self.consortium, self.participant_id, ours, peer, text)
        except LedgerError as e:  # e.g. a note whose origin is not its key's: proves nothing
            event(log, logging.WARNING, "view-fork-unproven", peer=peer,
                  error=f"{type(e).__name__}: {e}"[:300])
            return
        self.store.put("witness", prefix + u64(self.clock()), json.dumps(ev).encode())
        event(log, logging.ERROR, "fork", kind="view-fork", issuer=peer)

    def forks(self) -> list[bytes]:
        """Every view-fork proof kept, one per peer (GetEvidence serves them)."""
        return [
            in_format(v, self.consortium)
            for _, v in self.store.items("witness", b"viewfork/", b"viewfork0")
        ]


def _all_entries(view: V.NationalView, chunk: int = 1000) -> list[bytes]:
    """Every entry's bytes in number order, read `chunk` numbers per multi-get."""
    out: list[bytes] = []
    numbers = list(view.numbers())
    for i in range(0, len(numbers), chunk):
        for n, raw in zip(numbers[i : i + chunk], view.entries_bytes(numbers[i : i + chunk]),
                          strict=True):
            if raw is None:
                raise StorageFailure(f"the view lists {n} but holds no entry for it")
            out.append(raw)
    return out


def _same_view(a: V.ViewCheckpoint, b: V.ViewCheckpoint) -> bool:
    """The two checkpoints sign one view (they may differ in their time)."""
    return (a.origin, a.vector, a.count, a.root) == (b.origin, b.vector, b.count, b.root)
