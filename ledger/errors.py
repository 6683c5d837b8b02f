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
    │   ├── MalformedConfig       consortium or node configuration that does not parse
    │   ├── UnknownIndustry       industry not in the consortium's industries list
    │   └── WrongMembersKey       a sealed number under a members' key not in force
    ├── TooLarge                  over a size limit                RESOURCE_EXHAUSTED
    ├── BufferFull                out-of-order buffer is full      RESOURCE_EXHAUSTED
    ├── BadSignature              a signature that does not verify UNAUTHENTICATED
    ├── NotAllowed                issuer may not do this           PERMISSION_DENIED
    │   ├── UnknownIssuer         not a participant
    │   ├── UnmarkableNumber      a protected number (or a foreign one, by policy)
    │   ├── MembersKeyMissing     a carrier's preference, and this node has no members' key
    │   └── PortedAway            a carrier's preference for a number its block held, ported since
    ├── OutOfOrder                not the feed's next record       FAILED_PRECONDITION
    │   ├── SequenceGap           seq != head + 1
    │   └── WrongPrevious         prev_id != id of the head
    ├── FeedFrozen                feed frozen by an equivocation   FAILED_PRECONDITION
    ├── ProofMismatch             well-formed proof, wrong root    FAILED_PRECONDITION
    ├── ForkDetected              evidence of misbehaviour         ABORTED
    │   ├── Equivocation          two records at one (issuer, seq) ALREADY_EXISTS
    │   └── CheckpointFork        two checkpoints no proof joins   ABORTED
    ├── Ineffective               own record changing nothing      FAILED_PRECONDITION
    │   ├── NotAMark              a correction's target is not a mark (nor its own appeal)
    │   ├── NotAnAppeal           a decision's appeal id names no appeal
    │   ├── AlreadyDecided        a decision (or withdrawal) of an appeal already decided
    │   ├── NothingToRevoke       a revocation when no refusal is in force or ahead
    │   ├── SamePreference        a preference that leaves every answer as it is
    │   ├── NotALiveLine          a deregistration of no live registration of the issuer's
    │   └── LineOverlap           a registration overlapping a live registration
    ├── NotFound                  no such record / index           NOT_FOUND
    │   └── UnknownTarget         an own correction's target this node has not seen
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


class UnknownIndustry(BadInput):
    """An industry id that is not in the consortium's `industries` list."""


class WrongMembersKey(BadInput):
    """A sealed number whose key id is not the consortium's members_key_id."""


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


class UnmarkableNumber(NotAllowed):
    """A mark on a number the policy keeps unmarked (protected_numbers, or a
    foreign number when foreign_numbers is refuse)."""


class MembersKeyMissing(NotAllowed):
    """A carrier's preference, on a node (or an audit) that holds no members'
    key: whether the carrier serves the number cannot be checked, so the
    record is not accepted (the node needs its members.key)."""


class PortedAway(NotAllowed):
    """A carrier's preference for a number under one of its prefixes that the
    configuration now lists under another carrier (ported away). The ledger
    refuses it; the auditor notes it, since the record may predate the port."""


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


class Ineffective(LedgerError):
    """A record the issuing node refuses to sign because, given the records it
    holds, it can change nothing. Only a node's own records are checked: a
    peer's record that changes nothing is accepted (it is signed, and every
    log keeps it), and the view gives it no effect (docs/view.md)."""


class NotAMark(Ineffective):
    pass


class NotAnAppeal(Ineffective):
    pass


class AlreadyDecided(Ineffective):
    pass


class NothingToRevoke(Ineffective):
    """A revocation when the subscriber has no refusal in force or ahead."""


class SamePreference(Ineffective):
    """A preference that changes no answer from its effective time on."""


class NotALiveLine(Ineffective):
    """A deregistration of a record that is not a live registration of the issuer's."""


class LineOverlap(Ineffective):
    """A registration whose number or prefix overlaps a live registration
    (the same number, or a prefix covering it or covered by it)."""


class NotFound(LedgerError):
    pass


class UnknownTarget(NotFound):
    """An own correction (or decision) whose target this node has not seen,
    issued without asking to wait for it."""


class StorageFailure(LedgerError):
    pass
