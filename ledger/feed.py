"""An issuer's feed as a node holds it (`FeedState`, its stored encoding) and
the offline-checkable evidence that a feed forked (`EquivocationProof`).
`ledger.log` keeps both in the store and re-exports them."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from keys.consortium import Consortium
from ledger.errors import BadSignature, MalformedRecord, StorageFailure, UnknownIssuer
from ledger.record import Record, record_context

NOT_FROZEN = (1 << 64) - 1
_FEED = struct.Struct(">Q32sQQ")  # seq, head id, frozen at, head's issued-at
_FEED_V1 = struct.Struct(">Q32sQ")  # before the head's issued-at was kept; still read


@dataclass(frozen=True)
class FeedState:
    """An issuer's feed as this node holds it."""

    issuer: str
    seq: int = 0  # head sequence; 0 = empty
    head_id: bytes = b""
    frozen_at: int | None = None  # set by an equivocation: the last seq that counts
    head_issued_at_ms: int = 0  # the head record's issued-at; the next may not be earlier

    def encode(self) -> bytes:
        return _FEED.pack(
            self.seq,
            self.head_id or bytes(32),
            NOT_FROZEN if self.frozen_at is None else self.frozen_at,
            self.head_issued_at_ms,
        )

    @classmethod
    def decode(cls, issuer: str, data: bytes) -> FeedState:
        """The 56-byte encoding, or the older 48-byte one without the head's
        issued-at (0 then: `NodeLedger` reads it from the head record)."""
        if len(data) == _FEED.size:
            seq, head, frozen, issued_at = _FEED.unpack(data)
        elif len(data) == _FEED_V1.size:
            (seq, head, frozen), issued_at = _FEED_V1.unpack(data), 0
        else:
            raise StorageFailure(
                f"feed state of {issuer} is {len(data)} bytes, not {_FEED.size} "
                f"(or {_FEED_V1.size} before issued-at was kept)"
            )
        return cls(
            issuer,
            seq,
            head if seq else b"",
            None if frozen == NOT_FROZEN else frozen,
            issued_at if seq else 0,
        )

    @property
    def counted_seq(self) -> int:
        """The last sequence that counts for the view (capped by a freeze)."""
        return self.seq if self.frozen_at is None else min(self.seq, self.frozen_at)


@dataclass(frozen=True)
class EquivocationProof:
    """Two different, validly signed records at one (issuer, seq). Checkable
    offline with only the issuer's public key."""

    first: bytes
    second: bytes

    def encode(self) -> bytes:
        return struct.pack(">I", len(self.first)) + self.first + self.second

    @classmethod
    def decode(cls, data: bytes) -> EquivocationProof:
        if len(data) < 4:
            raise MalformedRecord("equivocation proof is truncated")
        (n,) = struct.unpack(">I", data[:4])
        if 4 + n > len(data):
            raise MalformedRecord("equivocation proof is truncated")
        return cls(data[4 : 4 + n], data[4 + n :])

    def verify(self, consortium: Consortium) -> tuple[Record, Record]:
        """Both records parse, are from one issuer at one seq, differ, and both
        signatures hold. Raises a LedgerError otherwise."""
        a = Record.from_envelope(self.first)
        b = Record.from_envelope(self.second)
        if (a.issuer, a.seq) != (b.issuer, b.seq):
            raise MalformedRecord("an equivocation proof needs two records at one (issuer, seq)")
        if a.id == b.id:
            raise MalformedRecord("an equivocation proof needs two different records")
        if a.body == b.body:
            raise MalformedRecord("the two records carry the same body")
        p = consortium.participant(a.issuer)
        if p is None:
            raise UnknownIssuer(f"{a.issuer!r} is not a participant")
        context = record_context(consortium.name)
        for r in (a, b):
            if not p.verify(r.signature, context + r.body):
                raise BadSignature(f"record {r.id.hex()} is not signed by {a.issuer}")
        return a, b
