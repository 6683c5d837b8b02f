"""The node's log checkpoints, beside the view keeper: a new checkpoint is
signed when the log grew (the node's ticker asks), at most once every
`every_s` seconds, each peer is asked to cosign it (with a consistency proof
from the size that peer last cosigned), and the checkpoint is served with the
cosignatures collected.

Why `every_s`: each new checkpoint costs its quorum and a spare of Cosign
calls out and as many in (a consistency proof, a note verified, the
witness's synced write, a cosignature verified). Signed at every tick of a
busy node (four a second), cosigning was about a sixth of twelve nodes'
sampled CPU (docs/deploy.md); a record now waits up to `every_s` longer for
a checkpoint that covers it.

A checkpoint with a quorum of cosignatures is kept in the store (not synced:
lost in a crash, the cosignatures are collected again) and served until the
next one has its own quorum, so clients never see a gap."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import grpc

from ledger import note
from ledger.log import NodeLedger
from ledger.names import witness_name
from ledger.record import Record
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.core import wall_ms

COSIGNED_KEY = b"log/cosigned"  # in the "checkpoints" family
COSIGN_TIMEOUT_S = 5


class LogKeeper:
    def __init__(
        self,
        ledger: NodeLedger,
        clock: Callable[[], int] = wall_ms,
        every_s: float = 0.0,
        pace: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` gives the signing times (ms) `signed_at_ms` reports;
        `every_s`: a grown log is signed again only this long (by `pace`, a
        monotonic clock in seconds) after the last signing (0: at every ask)."""
        self.ledger = ledger
        self.consortium = ledger.consortium
        self.clock = clock
        self.every_s = every_s
        self._pace = pace
        self._paced_at: float | None = None  # `pace()` at the last signing of this run
        # Told (size, cosigners) when a checkpoint first reaches its quorum (the node's log).
        self.on_cosigned: Callable[[int, list[str]], None] | None = None
        self._sign_lock = threading.Lock()
        self._grown = threading.Event()  # the log grew since the last checkpoint
        self._signed_at: int | None = None
        if ledger.latest_checkpoint() is not None:
            # Signed before this start, when is not kept: the first tick signs it again
            # (the same bytes: a checkpoint holds no time and Ed25519 is deterministic).
            self._grown.set()
        self._lock = threading.Lock()  # the cosignatures below
        self._cosigs: dict[str, str] = {}  # peer -> its line on _cosig_text
        self._cosig_text: str | None = None
        self._cosigned_size: dict[str, int] = {}  # the size each peer last cosigned
        self._parsed: tuple[str, str, note.Checkpoint] | None = None  # see _opened
        self._cosigned_at: dict[str, float] = {}  # `pace()` when each peer last cosigned

    @property
    def quorum(self) -> int:
        return self.consortium.policy.cosign_quorum

    # ------------------------------------------------------------ signing
    def grew(self, records: Sequence[Record]) -> None:
        """A NodeCore subscriber: records were appended, the next tick signs."""
        self._grown.set()

    def sign_if_grown(self) -> str | None:
        """Sign a new log checkpoint when the log grew since the last one (or
        none was ever signed), but not within `every_s` of the last signing
        (the growth is kept for a later ask). Returns the new note, or None."""
        with self._sign_lock:
            latest = self.ledger.latest_checkpoint()
            if latest is not None and not self._grown.is_set():
                return None
            at = self._pace()
            last = self._paced_at
            if latest is not None and last is not None and at - last < self.every_s:
                return None
            self._grown.clear()
            now = self.clock()
            text = self.ledger.sign_checkpoint()
            self._signed_at, self._paced_at = now, at
            return text

    @property
    def signed_at_ms(self) -> int | None:
        """When the latest checkpoint was signed (ms), None before the first."""
        return self._signed_at

    def cosignatures(self) -> int:
        """How many peers have cosigned the latest checkpoint so far."""
        latest = self.ledger.latest_checkpoint()
        with self._lock:
            return len(self._cosigs) if latest is not None and latest == self._cosig_text else 0

    def current(self) -> tuple[str | None, int]:
        """The newest signed checkpoint (no cosignatures) and its size."""
        text = self.ledger.latest_checkpoint()
        if text is None:
            return None, 0
        return text, self._opened(text)[1].size

    def _opened(self, text: str) -> tuple[str, note.Checkpoint]:
        """The body and checkpoint of our own signed `text`, parsed once per
        checkpoint (asked again at every peer's cosigning, several a second)."""
        last = self._parsed
        if last is not None and last[0] == text:
            return last[1], last[2]
        body = note.Note.parse(text).text
        cp = note.Checkpoint.parse_body(body)
        self._parsed = (text, body, cp)
        return body, cp

    # ------------------------------------------------------------ cosignatures
    def cosigned_within(self, peer: str, seconds: float) -> bool:
        """Whether `peer` cosigned a checkpoint of this log (its witness
        checked our consistency) less than `seconds` ago, in this run."""
        at = self._cosigned_at.get(peer)
        return at is not None and self._pace() - at < seconds

    def has_cosignature(self, peer: str, text: str) -> bool:
        with self._lock:
            return self._cosig_text == text and peer in self._cosigs

    def add_cosignature(self, peer: str, text: str, line: str) -> None:
        """Keep `peer`'s cosignature `line` on checkpoint `text` once it
        verifies under the peer's witness key (BadSignature, MalformedNote
        otherwise); a non-member's line is ignored."""
        p = self.consortium.participant(peer)
        if p is None:
            return
        body, cp = self._opened(text)
        sig = note.NoteSignature.from_line(line.rstrip("\n"))
        note.verify_cosignature(body, sig, witness_name(self.consortium.name, peer), p.public_key)
        with self._lock:
            if self._cosig_text != text:
                # A newer checkpoint: the quorum-cosigned one was stored when it
                # reached its quorum and is served until this one has its own.
                self._cosig_text, self._cosigs = text, {}
            reached = peer not in self._cosigs and len(self._cosigs) + 1 == self.quorum
            self._cosigs[peer] = line if line.endswith("\n") else line + "\n"
            if reached:
                # Once, at the quorum: the note served from memory (checkpoint_note)
                # carries any later lines; the stored one needs only the quorum.
                self._store_cosigned()
            by = sorted(self._cosigs)
        if reached and self.on_cosigned is not None:
            self.on_cosigned(cp.size, by)

    def _store_cosigned(self) -> None:
        assert self._cosig_text is not None
        full = note.add_signature_lines(self._cosig_text, sorted(self._cosigs.values()))
        # Not synced: lost in a crash, the cosignatures are collected again.
        self.ledger.store.put("checkpoints", COSIGNED_KEY, full.encode(), sync=False)

    def checkpoint_note(self) -> str | None:
        """The newest checkpoint with a quorum of cosignatures; else the newest
        signed one with what cosignatures it has so far."""
        with self._lock:
            latest = self.ledger.latest_checkpoint()
            partial = latest
            if latest is not None and latest == self._cosig_text and self._cosigs:
                partial = note.add_signature_lines(latest, sorted(self._cosigs.values()))
                if len(self._cosigs) >= self.quorum:
                    return partial
        v = self.ledger.store.get("checkpoints", COSIGNED_KEY)
        if v is not None:
            return v.decode()
        return partial

    def request_cosign(self, peer: str, stub: rpc.ExchangeStub) -> None:
        """Ask `peer` (its Exchange `stub`) to cosign the newest checkpoint,
        proving it extends the size the peer last cosigned; when the peer's
        witness knows another size, prove from that one. Raises grpc.RpcError
        when the peer refuses."""
        text, size = self.current()
        if text is None or self.has_cosignature(peer, text):
            return
        old = min(self._cosigned_size.get(peer, 0), size)
        for _ in range(2):
            proof = self.ledger.consistency_proof(old, size) if 0 < old < size else []
            try:
                resp = stub.Cosign(
                    pb.CosignRequest(note=text, old_size=old, proof=proof),
                    timeout=COSIGN_TIMEOUT_S,
                )
            except grpc.RpcError as e:
                detail = e.details() or ""
                if (
                    e.code() == grpc.StatusCode.FAILED_PRECONDITION
                    and "witness knows size" in detail
                ):
                    old = int(detail.rsplit(" ", 1)[-1])
                    continue
                raise
            self._cosigned_size[peer] = size
            self.add_cosignature(peer, text, resp.signature_line)
            self._cosigned_at[peer] = self._pace()
            return
