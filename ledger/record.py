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

from ledger.errors import InvalidNumber, MalformedConfig, MalformedRecord, TooLarge
from ledger.numbers import normalize
from markex.v1 import record_pb2 as pb

if TYPE_CHECKING:
    from keys.signing import SigningKey

RECORD_CONTEXT = b"markex/v1/record\x00"
ID_SIZE = 32
MAX_ENVELOPE_BYTES = 64 * 1024  # hard ceiling; the consortium policy sets a lower one
MAX_TARGETS = 64
MAX_REASON = 1024
MAX_ISSUER = 64
MAX_CATEGORY = 64

WITHDRAW = "withdraw"
RECATEGORIZE = "recategorize"
UPHOLD = "uphold"
REJECT = "reject"

_ACTIONS = {
    pb.CORRECTION_ACTION_WITHDRAW: WITHDRAW,
    pb.CORRECTION_ACTION_RECATEGORIZE: RECATEGORIZE,
}
_ACTION_CODES = {v: k for k, v in _ACTIONS.items()}
_OUTCOMES = {pb.APPEAL_OUTCOME_UPHOLD: UPHOLD, pb.APPEAL_OUTCOME_REJECT: REJECT}
_OUTCOME_CODES = {v: k for k, v in _OUTCOMES.items()}


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


# ---------------------------------------------------------------- payloads


@dataclass(frozen=True)
class Mark:
    number: str  # E.164, normalized
    category: str
    score: int = 50  # 0..100
    reports: int = 0
    observed_at_ms: int = 0
    expires_at_ms: int = 0  # 0: the policy's default expiry
    evidence_digest: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.score <= 100:
            raise MalformedRecord(f"mark score must be 0..100, got {self.score}")
        if not self.category or len(self.category) > MAX_CATEGORY:
            raise MalformedRecord("mark category must be a non-empty taxonomy id")
        if self.evidence_digest and len(self.evidence_digest) != 32:
            raise MalformedRecord("evidence digest must be empty or 32 bytes (SHA-256)")
        if self.observed_at_ms < 0 or self.expires_at_ms < 0:
            raise MalformedRecord("mark times must not be negative")
        if self.expires_at_ms and self.expires_at_ms <= self.observed_at_ms:
            raise MalformedRecord("a mark must expire after it was observed")
        if self.reports < 0:
            raise MalformedRecord("report count must not be negative")

    def to_pb(self) -> pb.Mark:
        return pb.Mark(
            number=self.number,
            category=self.category,
            score=self.score,
            reports=self.reports,
            observed_at_ms=self.observed_at_ms,
            expires_at_ms=self.expires_at_ms,
            evidence_digest=self.evidence_digest,
        )


@dataclass(frozen=True)
class Correction:
    """A correction of marks, or (with `appeal_id`) the institute's decision.

    - own mark: immediate withdraw / recategorize;
    - another participant's mark: an appeal, pending until decided;
    - decision: `appeal_id` names the appeal, `outcome` is uphold or reject.
    """

    targets: tuple[bytes, ...] = ()
    action: str = ""  # WITHDRAW | RECATEGORIZE | "" for a decision
    category: str = ""  # new category for RECATEGORIZE
    reason: str = ""
    appeal_id: bytes = b""
    outcome: str = ""  # UPHOLD | REJECT for a decision

    def __post_init__(self) -> None:
        if len(self.reason) > MAX_REASON:
            raise MalformedRecord(f"reason is longer than {MAX_REASON} characters")
        if self.is_decision:
            if len(self.appeal_id) != ID_SIZE:
                raise MalformedRecord("a decision's appeal id must be a 32-byte record id")
            if self.outcome not in (UPHOLD, REJECT):
                raise MalformedRecord("a decision needs the outcome uphold or reject")
            if self.targets or self.action or self.category:
                raise MalformedRecord("a decision names only the appeal, not targets or actions")
            return
        if self.outcome:
            raise MalformedRecord("an outcome belongs only to a decision (appeal id missing)")
        if not self.targets:
            raise MalformedRecord("a correction must target at least one record")
        if len(self.targets) > MAX_TARGETS:
            raise MalformedRecord(f"a correction targets at most {MAX_TARGETS} records")
        for t in self.targets:
            if len(t) != ID_SIZE:
                raise MalformedRecord(f"a target must be a 32-byte record id, got {len(t)} bytes")
        if len(set(self.targets)) != len(self.targets):
            raise MalformedRecord("a correction names the same target twice")
        if self.action == WITHDRAW:
            if self.category:
                raise MalformedRecord("a withdrawal takes no new category")
        elif self.action == RECATEGORIZE:
            if not self.category or len(self.category) > MAX_CATEGORY:
                raise MalformedRecord("a recategorization needs the new category")
        else:
            raise MalformedRecord("a correction's action must be withdraw or recategorize")

    @property
    def is_decision(self) -> bool:
        return bool(self.appeal_id)

    def to_pb(self) -> pb.Correction:
        return pb.Correction(
            targets=list(self.targets),
            action=_ACTION_CODES.get(self.action, pb.CORRECTION_ACTION_UNSPECIFIED),
            category=self.category,
            reason=self.reason,
            appeal_id=self.appeal_id,
            outcome=_OUTCOME_CODES.get(self.outcome, pb.APPEAL_OUTCOME_UNSPECIFIED),
        )


@dataclass(frozen=True)
class Reassignment:
    number: str  # E.164, normalized
    effective_at_ms: int

    def __post_init__(self) -> None:
        if self.effective_at_ms <= 0:
            raise MalformedRecord("a reassignment needs its effective time")

    def to_pb(self) -> pb.Reassignment:
        return pb.Reassignment(number=self.number, effective_at_ms=self.effective_at_ms)


Payload = Mark | Correction | Reassignment


def payload_kind(p: Payload) -> str:
    if isinstance(p, Mark):
        return "mark"
    if isinstance(p, Correction):
        return "decision" if p.is_decision else "correction"
    return "reassignment"


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
        if isinstance(payload, Mark):
            msg.mark.CopyFrom(payload.to_pb())
        elif isinstance(payload, Correction):
            msg.correction.CopyFrom(payload.to_pb())
        else:
            msg.reassignment.CopyFrom(payload.to_pb())
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
    payload = _payload(sub, which)
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


def _number(raw: str) -> str:
    try:
        return normalize(raw)
    except InvalidNumber:
        raise
    except Exception as e:  # phonenumbers must never take the node down
        raise InvalidNumber(f"{raw[:32]!r} is not a phone number") from e


def _payload(sub: pb.Mark | pb.Correction | pb.Reassignment, which: str) -> Payload:
    """The payload from the record's set oneof field `which`, message `sub`."""
    if which == "mark":
        m: pb.Mark = sub  # type: ignore[assignment]
        return Mark(
            _number(m.number),
            m.category,
            m.score,
            m.reports,
            m.observed_at_ms,
            m.expires_at_ms,
            m.evidence_digest,
        )
    if which == "correction":
        c: pb.Correction = sub  # type: ignore[assignment]
        if c.action not in _ACTIONS and c.action != pb.CORRECTION_ACTION_UNSPECIFIED:
            raise MalformedRecord(f"unknown correction action {c.action}")
        if c.outcome not in _OUTCOMES and c.outcome != pb.APPEAL_OUTCOME_UNSPECIFIED:
            raise MalformedRecord(f"unknown appeal outcome {c.outcome}")
        return Correction(
            targets=tuple(c.targets),
            action=_ACTIONS.get(c.action, ""),
            category=c.category,
            reason=c.reason,
            appeal_id=c.appeal_id,
            outcome=_OUTCOMES.get(c.outcome, ""),
        )
    r: pb.Reassignment = sub  # type: ignore[assignment]
    return Reassignment(number=_number(r.number), effective_at_ms=r.effective_at_ms)
