"""Signed records: the only thing participants write.

A record's body is a serialized `markex.v1.Record`; the participant signs
``RECORD_CONTEXT || consortium name || 0x00 || body`` with Ed25519 (the name
makes a record signed for one consortium worthless in any other); the
envelope is a `SignedRecord` holding both. The ledger signs, stores and
hashes those exact bytes and never re-serializes a body to verify it. A
record's id is SHA-256(envelope bytes).

`Record.from_envelope` checks everything that needs no context (structure,
field ranges, the number's E.164 form). What needs the consortium (issuer,
signature, role, taxonomy, clock) is checked by `ledger.log.NodeLedger`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError

from ledger import payloads
from ledger.errors import MalformedConfig, MalformedRecord, TooLarge
from ledger.payloads import (
    RECATEGORIZE,
    REJECT,
    UPHOLD,
    WITHDRAW,
    Correction,
    Mark,
    Payload,
    Reassignment,
    payload_kind,
)
from ledger.payloads._fields import ID_SIZE, MAX_CATEGORY, MAX_REASON, MAX_TARGETS
from markex.v1 import record_pb2 as pb

if TYPE_CHECKING:
    from keys.signing import SigningKey

__all__ = [  # the payload names are re-exported: callers import them from here
    "ID_SIZE", "MAX_CATEGORY", "MAX_ENVELOPE_BYTES", "MAX_REASON", "MAX_TARGETS",
    "RECATEGORIZE", "RECORD_CONTEXT", "REJECT", "UPHOLD", "WITHDRAW", "Correction",
    "Fields", "Mark", "Payload", "Reassignment", "Record", "canonical_split",
    "parse_envelope", "payload_kind", "record_context", "record_id", "signing_message",
]

RECORD_CONTEXT = b"markex/v1/record\x00"
MAX_ENVELOPE_BYTES = 64 * 1024  # hard ceiling; the consortium policy sets a lower one
MAX_ISSUER = 64


def record_id(envelope: bytes) -> bytes:
    return hashlib.sha256(envelope).digest()


def record_context(consortium: str) -> bytes:
    """The bytes a record signature covers before the body: the fixed context,
    the consortium's name and a NUL (which no name holds, so the split between
    name and body is unambiguous). Raises MalformedConfig for a name that is
    empty or holds a NUL. Hot paths compute it once and prepend it per body."""
    if not consortium or "\x00" in consortium:
        raise MalformedConfig("a consortium name is non-empty and holds no NUL")
    return RECORD_CONTEXT + consortium.encode() + b"\x00"


def signing_message(consortium: str, body: bytes) -> bytes:
    """What the issuer's Ed25519 key signs for `consortium`: the record
    context (`record_context`), then the exact body bytes."""
    return record_context(consortium) + body


# ---------------------------------------------------------------- record


@dataclass(frozen=True)
class Record:
    """A parsed, structurally valid record and the exact bytes it came in."""

    issuer: str
    seq: int
    prev_id: bytes
    issued_at_ms: int
    payload: Payload
    body: bytes
    signature: bytes
    envelope: bytes
    id: bytes

    @property
    def kind(self) -> str:
        return payload_kind(self.payload)

    @classmethod
    def from_envelope(cls, envelope: bytes, max_bytes: int = MAX_ENVELOPE_BYTES) -> Record:
        """Parse and check an envelope. Raises TooLarge or a BadInput subclass."""
        return cls(*parse_envelope(envelope, max_bytes))

    @classmethod
    def issue(
        cls,
        key: SigningKey,
        issuer: str,
        seq: int,
        prev_id: bytes,
        issued_at_ms: int,
        payload: Payload,
        *,
        consortium: str,
    ) -> Record:
        """Build, sign for `consortium` (its name) and re-parse a record (so an
        issued record passes the same checks as a received one)."""
        msg = pb.Record(issuer=issuer, seq=seq, prev_id=prev_id, issued_at_ms=issued_at_ms)
        getattr(msg, payloads.type_of(payload).field).CopyFrom(payload.to_pb())
        body = msg.SerializeToString()
        signature = key.sign(signing_message(consortium, body))
        envelope = pb.SignedRecord(body=body, signature=signature).SerializeToString()
        return cls.from_envelope(envelope)


class Fields(NamedTuple):
    """A checked envelope's parts, in `Record`'s field order."""

    issuer: str
    seq: int
    prev_id: bytes
    issued_at_ms: int
    payload: Payload
    body: bytes
    signature: bytes
    envelope: bytes
    id: bytes


def parse_envelope(envelope: bytes, max_bytes: int = MAX_ENVELOPE_BYTES) -> Fields:
    """What `Record.from_envelope` checks and returns, as a tuple: for
    callers that read the fields and keep no Record (the auditor's pass)."""
    if type(envelope) is not bytes:
        if not isinstance(envelope, bytes | bytearray | memoryview):
            raise MalformedRecord("an envelope is bytes")
        envelope = bytes(envelope)
    if len(envelope) > max_bytes:
        raise TooLarge(f"envelope is {len(envelope)} bytes; the limit is {max_bytes}")
    # One encoding per envelope, so one record has one id.
    split = canonical_split(envelope)
    if split is None:
        split = _split_or_raise(envelope)
    body, signature = split
    rec = _decode(pb.Record, body, "record body")
    which = rec.WhichOneof("payload")
    if which is None:  # an unset payload has no fields at all
        raise MalformedRecord("record has no payload (mark, correction or reassignment)")
    sub = getattr(rec, which)
    if len(unknown_fields.UnknownFieldSet(sub)):
        raise MalformedRecord("record body has fields this version does not know")
    issuer, seq, prev_id, issued_at_ms = rec.issuer, rec.seq, rec.prev_id, rec.issued_at_ms
    if not issuer or len(issuer) > MAX_ISSUER:
        raise MalformedRecord("record issuer must be a participant id")
    if seq < 1:
        raise MalformedRecord("feed sequence numbers start at 1")
    if seq == 1:
        if prev_id:
            raise MalformedRecord("the first record of a feed has no previous id")
    elif len(prev_id) != ID_SIZE:
        raise MalformedRecord("previous id must be a 32-byte record id")
    if issued_at_ms <= 0:
        raise MalformedRecord("issued-at must be a positive UTC millisecond time")
    payload = payloads.by_field(which).decode(sub)
    return Fields(
        issuer, seq, prev_id, issued_at_ms, payload, body, signature, envelope, record_id(envelope)
    )


def canonical_split(envelope: bytes) -> tuple[bytes, bytes] | None:
    """(body, signature) when `envelope` is byte for byte the canonical
    encoding of a SignedRecord with a 64-byte signature, else None.

    That encoding is ``0x0a varint(len(body)) body 0x12 0x40 signature``
    (the body field is left out when empty; varints are minimal), so it is
    read here without a protobuf parse and re-serialization. It accepts
    exactly what `_split_or_raise` accepts (tests/test_fuzz.py holds the
    two to agreement); that one runs only when this says None, to say why."""
    n = len(envelope) - 66  # where the signature field starts
    if n < 0 or envelope[n] != 0x12 or envelope[n + 1] != 0x40:
        return None
    if n == 0:
        return b"", envelope[2:]
    if envelope[0] != 0x0A or n < 3:
        return None
    # The body's length: a minimal varint of 1 to 3 bytes (bodies are < 64 KiB).
    b = envelope[1]
    if b < 0x80:
        length, start = b, 2
    else:
        c = envelope[2]
        if c < 0x80:
            length, start = (b & 0x7F) | c << 7, 3
        elif n > 3 and (d := envelope[3]) < 0x80:
            length, start = (b & 0x7F) | (c & 0x7F) << 7 | d << 14, 4
        else:
            return None
        if envelope[start - 1] == 0:  # a trailing zero byte: not minimal
            return None
    if start + length != n or length == 0:
        return None
    return envelope[start:n], envelope[n + 2 :]


def _split_or_raise(envelope: bytes) -> tuple[bytes, bytes]:
    """(body, signature) by protobuf parse, or the MalformedRecord saying
    what is wrong with the envelope."""
    env = _decode(pb.SignedRecord, envelope, "envelope")
    if env.SerializeToString() != envelope:
        raise MalformedRecord("envelope is not canonically encoded (body, then signature)")
    if len(env.signature) != 64:
        raise MalformedRecord(f"signature must be 64 bytes, got {len(env.signature)}")
    return env.body, env.signature


def _decode(cls, data: bytes, what: str):  # type: ignore[no-untyped-def]
    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as e:
        raise MalformedRecord(f"{what} is not a valid protobuf message") from e
    if len(unknown_fields.UnknownFieldSet(msg)):
        raise MalformedRecord(f"{what} has fields this version does not know")
    return msg
