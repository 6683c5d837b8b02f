"""The ledger's exception tree. Every error the ledger raises is one of these.

    LedgerError
    ├── BadInput                  malformed bytes or values        INVALID_ARGUMENT
    │   ├── MalformedRecord       envelope/body does not decode or breaks a field rule
    │   ├── InvalidNumber         not a phone number we can normalize to E.164
    │   ├── UnknownCategory       category not in the consortium taxonomy
    │   ├── ClockSkew             issued-at beyond the allowed skew
    │   ├── FeedTimeReversed      issued-at before the feed head's issued-at
    │   ├── MalformedProof        wrong length, non-32-byte hash, index out of range
    │   ├── MalformedNote         a signed note / checkpoint that does not parse
    │   └── MalformedConfig       consortium or node configuration that does not parse
    ├── TooLarge                  over a size limit                RESOURCE_EXHAUSTED
    ├── BufferFull                out-of-order buffer is full      RESOURCE_EXHAUSTED
    ├── BadSignature              a signature that does not verify UNAUTHENTICATED
    ├── NotAllowed                issuer may not do this           PERMISSION_DENIED
    │   └── UnknownIssuer         not a participant
    ├── OutOfOrder                not the feed's next record       FAILED_PRECONDITION
    │   ├── SequenceGap           seq != head + 1
    │   └── WrongPrevious         prev_id != id of the head
    ├── FeedFrozen                feed frozen by an equivocation   FAILED_PRECONDITION
    ├── ProofMismatch             well-formed proof, wrong root    FAILED_PRECONDITION
    ├── ForkDetected              evidence of misbehaviour         ABORTED
    │   ├── Equivocation          two records at one (issuer, seq) ALREADY_EXISTS
    │   └── CheckpointFork        two checkpoints no proof joins   ABORTED
    ├── NotFound                  no such record / index           NOT_FOUND
    └── StorageFailure            the store failed or is corrupt   INTERNAL

"Signature is wrong" (BadSignature) is kept apart from "could not verify at
all" (UnknownIssuer, MalformedRecord). Verifiers raise; they never return bool.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every ledger error."""


class BadInput(LedgerError):
    """Bytes or values that are malformed."""


class MalformedRecord(BadInput):
    pass


class InvalidNumber(BadInput):
    pass


class UnknownCategory(BadInput):
    pass


class ClockSkew(BadInput):
    pass


class FeedTimeReversed(BadInput):
    """A record issued earlier than the record before it in its feed."""


class MalformedProof(BadInput):
    pass


class MalformedNote(BadInput):
    pass


class MalformedConfig(BadInput):
    pass


class TooLarge(LedgerError):
    pass


class BufferFull(LedgerError):
    pass


class BadSignature(LedgerError):
    pass


class NotAllowed(LedgerError):
    pass


class UnknownIssuer(NotAllowed):
    pass


class OutOfOrder(LedgerError):
    pass


class SequenceGap(OutOfOrder):
    pass


class WrongPrevious(OutOfOrder):
    pass


class FeedFrozen(LedgerError):
    pass


class ProofMismatch(LedgerError):
    """A well-formed proof that does not lead to the expected root."""


class ForkDetected(LedgerError):
    """Evidence that some party showed two different histories."""


class Equivocation(ForkDetected):
    """Two different validly signed records at the same (issuer, seq)."""

    def __init__(self, message: str, first: bytes = b"", second: bytes = b"") -> None:
        super().__init__(message)
        self.first = first
        self.second = second


class CheckpointFork(ForkDetected):
    """Two signed checkpoints that no consistency proof joins."""

    def __init__(self, message: str, first: str = "", second: str = "") -> None:
        super().__init__(message)
        self.first = first
        self.second = second


class NotFound(LedgerError):
    pass


class StorageFailure(LedgerError):
    pass
