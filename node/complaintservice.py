"""The complaint RPCs' logic (docs/complaints.md), called by the thin
servicers of node/services.py:

    Admin   IssueComplaint, IssueHandling, IssueSanction   the node's own operator
    Audit   ListComplaints                                  a carrier's queue (members)
    Public  GetBadList                                      the bad list, proven (anyone)

Personal information stays on the member side: a complaint's complainant
arrives in clear on the member port and is sealed here with the members' key
(purpose COMPLAINANT) before the node signs; the description arrives in clear
and only its SHA-256 is recorded (the text is dropped here). The queue never
carries the complainant, sealed or not; the bad list carries sanctions (and,
for a check by number, the marketer lines linking it), which hold no personal
data (docs/publication.md).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol

from ledger.complaints import ComplaintStatus, Listing, SanctionFact
from ledger.errors import (
    BadInput,
    MalformedRecord,
    MembersKeyMissing,
    NotAllowed,
    NotFound,
    WrongAddressee,
)
from ledger.numbers import normalize
from ledger.payloads import Complaint, Sanction
from ledger.payloads.handling import decode_handling
from ledger.payloads.line import BadCreditCode, check_uscc
from ledger.payloads.sanction import decode_sanction
from ledger.sealing import COMPLAINANT
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.consent.facts import LineFact
    from ledger.log import NodeLedger
    from ledger.payloads import Handling

MAX_DESCRIPTION = 4000   # characters of a description the centre passes (only its digest stays)
MAX_CHECK = 64           # characters of a bad-list check (a credit code or a number)
# Who reads which queue: a carrier its own; these roles name any carrier.
QUEUE_READERS = frozenset({"institute", "regulator"})


class ComplaintReader(Protocol):
    """node.complaints (node/complaintkeeper.py): what these RPCs read."""

    def queue(self, carrier: str, at_ms: int, open_only: bool = False,
              overdue_only: bool = False) -> list[ComplaintStatus]: ...
    def listed(self, at_ms: int) -> list[tuple[Listing, SanctionFact]]: ...
    def listing(self, uscc: str) -> Listing | None: ...


class LineReader(Protocol):
    def line_at(self, number: str, at_ms: int) -> LineFact | None: ...


# ------------------------------------------------------------------ admin


def complaint_of(cons: Consortium, req: pb.ComplaintRequest) -> Complaint:
    """The Complaint the node signs for `req`: the complainant sealed with the
    members' key (MembersKeyMissing without one), the description's SHA-256, and
    addressed to the number's serving carrier by the configuration (the
    ledger's check says WrongAddressee when none serves it). Raises
    InvalidNumber, MalformedRecord."""
    key = cons.members_key
    if key is None:
        raise MembersKeyMissing("this node holds no members' key (node.toml members_key): it "
                           "cannot seal a complainant, so it files no complaint")
    if len(req.description) > MAX_DESCRIPTION:
        raise MalformedRecord(f"a description is at most {MAX_DESCRIPTION} characters")
    if not req.complainant:
        raise MalformedRecord("a complaint names its complainant's number (sealed by the node)")
    number = normalize(req.number)
    complainant = normalize(req.complainant)
    serving = cons.carrier_for(number)
    if serving is None:
        raise WrongAddressee(f"no carrier serves {number} in the consortium configuration: a "
                             "complaint about it has nobody to go to")
    return Complaint(
        number=number, category=req.category, call_at_ms=req.call_at_ms, channel=req.channel,
        complainant=key.seal(complainant, COMPLAINANT), key_id=key.id,
        description_digest=hashlib.sha256(req.description.encode("utf-8")).digest(),
        addressed_to=serving,
    )


def handling_of(req: rpb.Handling) -> Handling:
    """The Handling `req` encodes (MalformedRecord)."""
    return decode_handling(req)


def sanction_of(req: rpb.Sanction) -> Sanction:
    """The Sanction `req` encodes (MalformedRecord, BadCreditCode)."""
    return decode_sanction(req)


# ------------------------------------------------------------------ the queue


def queue_carrier(cons: Consortium, caller: str, asked: str) -> str:
    """Whose queue `caller` reads: a carrier its own (naming another is
    NotAllowed); the institute and the regulator name one (BadInput
    without); anyone else NotAllowed."""
    p = cons.participant(caller)
    role = p.role if p is not None else "nobody"
    if role == "carrier":
        if asked and asked != caller:
            raise NotAllowed(f"{caller} reads its own complaint queue, not {asked}'s")
        return caller
    if role not in QUEUE_READERS:
        raise NotAllowed(f"{caller} is a {role}: only carriers (their own), the institute and "
                         "the regulator read complaint queues")
    if not asked:
        raise BadInput(f"{caller} names the carrier whose queue it reads")
    q = cons.participant(asked)
    if q is None or q.role != "carrier":
        raise BadInput(f"{asked!r} is not a carrier of the consortium")
    return asked


def summary_of(st: ComplaintStatus, at_ms: int) -> pb.ComplaintSummary:
    """One complaint of a queue, at `at_ms`: never the complainant."""
    c = st.complaint.complaint
    closed = st.closed_at is not None and st.closed_at <= at_ms
    acked = st.acknowledged_at is not None and st.acknowledged_at <= at_ms
    return pb.ComplaintSummary(
        id=st.id, number=c.number, category=c.category, call_at_ms=c.call_at_ms,
        filed_at_ms=st.complaint.issued_at, channel=c.channel, status=st.state_at(at_ms),
        ack_due_ms=st.ack_due, close_due_ms=st.close_due, overdue=st.overdue_at(at_ms),
        forwarded_from=[f.by for f in st.forwards if f.at <= at_ms],
        addressed_to=st.addressed_to,
        acknowledged_at_ms=st.acknowledged_at if acked else 0,
        closed_at_ms=st.closed_at if closed and st.closed_at is not None else 0,
        closed_by=st.closed_by if closed else b"",
        finding=st.closer.handling.finding if closed and st.closer is not None else "",
        issuer=st.complaint.issuer, description_digest=c.description_digest,
    )


def list_complaints(cons: Consortium, keeper: ComplaintReader, caller: str,
                    req: pb.ListComplaintsRequest, now_ms: int) -> pb.ComplaintList:
    if req.open_only and req.overdue_only:
        raise BadInput("ask for open or for overdue complaints, not both")
    if req.at_ms < 0:
        raise BadInput("a queue's time is not before 1970")
    carrier = queue_carrier(cons, caller, req.carrier)
    at = req.at_ms or now_ms
    got = keeper.queue(carrier, at, req.open_only, req.overdue_only)
    return pb.ComplaintList(carrier=carrier, at_ms=at,
                            complaints=[summary_of(st, at) for st in got])


# ------------------------------------------------------------------ the bad list


def parse_check(check: str) -> tuple[str, str]:
    """("uscc", code) or ("number", E.164) for a bad-list check; BadInput for
    anything else, saying what a check is."""
    if len(check) > MAX_CHECK:
        raise BadInput(f"a check is a credit code or a number, at most {MAX_CHECK} characters")
    try:
        check_uscc(check)
        return "uscc", check
    except BadCreditCode as code_error:
        looks_like_code = len(check) == 18 and not check.lstrip("+").isdigit()
        try:
            return "number", normalize(check)
        except BadInput as e:
            raise BadInput(
                str(code_error) if looks_like_code else
                f"{check!r} is neither a unified social credit code (18 characters) nor a "
                f"phone number ({e})") from e


def bad_list(cons: Consortium, ledger: NodeLedger, keeper: ComplaintReader,
             lines: LineReader | None, req: pb.BadListRequest, now_ms: int) -> pb.BadList:
    """The listings in force at the request's time (those of `check`), each
    envelope with its index and its inclusion proof in the tree of `size`
    (a record at or past `size` comes without a path)."""
    if req.size > ledger.size:
        raise NotFound(f"the log has {ledger.size} entries, not {req.size}")
    if req.at_ms < 0:
        raise BadInput("the bad list's time is not before 1970")
    at = req.at_ms or now_ms
    out = pb.BadList(size=req.size, at_ms=at)
    kind, value = parse_check(req.check) if req.check else ("", "")
    line = None
    if kind == "number":
        out.number = value
        if lines is None:
            raise NotFound("this node keeps no marketer lines")
        line = lines.line_at(value, at)
        wanted = {line.uscc} if line is not None else set()
    if kind == "uscc":
        wanted = {value}
    if not kind:
        listed = [s for _, s in keeper.listed(at)]
    else:
        listed = [s for s in (_in_force(keeper, u, at) for u in sorted(wanted)) if s is not None]
    for s in listed:
        _prove(ledger, s.id, req.size, out.sanctions.add())
    if line is not None and listed:
        _prove(ledger, line.id, req.size, out.lines.add())
    return out


def _in_force(keeper: ComplaintReader, uscc: str, at: int) -> SanctionFact | None:
    listing = keeper.listing(uscc)
    return None if listing is None else listing.in_force(at)


def _prove(ledger: NodeLedger, rid: bytes, size: int, into: pb.ProvenRecord) -> None:
    found = ledger.record_by_id(rid)
    if found is None:   # the state holds only records of this log
        raise NotFound(f"record {rid.hex()} of the bad list is not in this node's log")
    index, env = found
    into.envelope, into.index = env, index
    if index < size:
        into.path.extend(ledger.inclusion_proof(index, size))

