"""The complaint commands (docs/complaints.md, "Commands"):

    markex complain --as complaints-1 NUMBER CATEGORY --at T --channel C --complainant N
    markex complaints --as CARRIER [--open|--overdue] [--at T]
    markex handle --as CARRIER COMPLAINT_ID (--confirmed [--mark ID] [--action A]
                  | --not-confirmed | --forward CARRIER)
    markex sanction --as regulator-1 --uscc CODE --name N --reason T --doc D [--delist]
    markex badlist --node ID [--check CODE_OR_NUMBER]

The issuing commands go to the acting participant's node with its admin
certificate; `complaints` reads its queue with its member certificate;
`badlist` asks a node's public port and believes nothing it is not shown:
each sanction's signature by the regulator, its inclusion proof and the log
checkpoint's cosignatures against the pinned consortium (`verify_bad_list`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ledger import merkle
from ledger.errors import LedgerError
from ledger.numbers import normalize
from ledger.payloads import MarketerLine, Sanction
from ledger.payloads.handling import (
    ACTION_CODES,
    CONFIRMED,
    FINDING_CODES,
    MARK,
    NONE,
    NOT_CONFIRMED,
    NOT_OURS,
)
from ledger.payloads.line import check_uscc
from ledger.record import Record
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from node.command import (
    NotVerified,
    UsageError,
    category_list,
    iso,
    node_endpoints,
    parse_time,
    pinned_consortium,
    show,
    table,
)
from node.connect import Connect, Dial
from node.issuecli import _endpoint, _now_ms, _record

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from node.recordcli import TrustedCheckpoint



def _role(cons: Consortium, who: str, role: str, what: str) -> None:
    """A command only `role` runs: say so before asking the node (which refuses too)."""
    p = cons.participant(who)
    if p is not None and p.role != role:
        ids = ", ".join(q.id for q in cons.participants if q.role == role) or "none"
        raise UsageError(f"{what} is for the {role} role; {who} is a {p.role} "
                         f"(--as one of: {ids})")


def _issued(args: argparse.Namespace, r: Any, extra: dict[str, Any] | None = None) -> None:
    if args.quiet and not args.json:  # -q: the id alone, for `ID=$(markex complain -q ...)`
        print(r.id.hex())
        return
    obj: dict[str, Any] = {"id": r.id.hex(), "issuer": r.issuer, "seq": r.seq, **(extra or {}),
                           "index": r.index}
    show(args, obj, table([(k.replace("_", " "), v) for k, v in obj.items()]))


# ------------------------------------------------------------------ complain


def cmd_complain(args: argparse.Namespace, connect: Connect) -> int:
    d, cons, who, ep = _endpoint(args)
    _role(cons, who, "complaints", "markex complain")
    if args.category not in cons.categories:
        raise UsageError(f"{args.category!r} is not a category of {cons.name}; "
                         f"categories: {category_list(cons)}")
    number = normalize(args.number)
    complainant = normalize(args.complainant)
    entry = cons.policy.protecting(number)
    if entry is not None:
        raise UsageError(f"{number} is a protected number ({entry} in the policy's "
                         "protected_numbers): complaints about it are refused")
    serving = cons.carrier_for(number)
    if serving is None:
        raise UsageError(f"no carrier of {cons.name} serves {number}: a complaint about it "
                         "has nobody to go to")
    req = pb.ComplaintRequest(number=number, category=args.category,
                              call_at_ms=parse_time(args.at), channel=args.channel,
                              complainant=complainant, description=args.description or "")
    r = connect("admin", Dial(d, ep, who)).IssueComplaint(req, timeout=30)
    _issued(args, r, {"addressed_to": serving})
    return 0


# ------------------------------------------------------------------ complaints


def complaint_json(c: pb.ComplaintSummary) -> dict[str, Any]:
    """One complaint of a queue as `markex complaints --json` prints it."""
    return {"id": c.id.hex(), "number": c.number, "category": c.category,
            "channel": c.channel, "call_at": iso(c.call_at_ms), "filed_at": iso(c.filed_at_ms),
            "status": c.status, "ack_due": iso(c.ack_due_ms), "close_due": iso(c.close_due_ms),
            "overdue": c.overdue, "addressed_to": c.addressed_to,
            "forwarded_from": list(c.forwarded_from),
            "acknowledged_at": iso(c.acknowledged_at_ms), "closed_at": iso(c.closed_at_ms),
            "closed_by": c.closed_by.hex() or None, "finding": c.finding or None,
            "centre": c.issuer}


def cmd_complaints(args: argparse.Namespace, connect: Connect) -> int:
    d, cons, who, ep = _endpoint(args)
    if args.open and args.overdue:
        raise UsageError("give at most one of --open or --overdue")
    at = parse_time(args.at) if args.at else 0
    got = connect("audit", Dial(d, ep, who)).ListComplaints(pb.ListComplaintsRequest(
        open_only=args.open, overdue_only=args.overdue, at_ms=at, carrier=args.carrier or ""),
        timeout=30)
    rows = [complaint_json(c) for c in got.complaints]
    obj = {"carrier": got.carrier, "at": iso(got.at_ms), "complaints": rows}
    lines = [f"{got.carrier}'s complaints at {iso(got.at_ms)}: {len(rows)}"]
    for c in rows:
        fwd = f" forwarded from {', '.join(c['forwarded_from'])}" if c["forwarded_from"] else ""
        lines.append(f"  {c['id'][:16]}  {c['number']:<15} {c['category']:<16} {c['status']:<8}"
                     f" filed {c['filed_at']}, close due {c['close_due']}{fwd}")
    show(args, obj, "\n".join(lines))
    return 0


# ------------------------------------------------------------------ handle


def cmd_handle(args: argparse.Namespace, connect: Connect) -> int:
    d, cons, who, ep = _endpoint(args)
    _role(cons, who, "carrier", "markex handle")
    given = [f for f, on in ((CONFIRMED, args.confirmed), (NOT_CONFIRMED, args.not_confirmed),
                             (NOT_OURS, bool(args.forward))) if on]
    if len(given) != 1:
        raise UsageError("give exactly one of --confirmed, --not-confirmed or --forward CARRIER")
    finding = given[0]
    if finding != CONFIRMED and (args.mark or args.action):
        raise UsageError("--mark and --action go with --confirmed only: only a confirmed "
                         "complaint is acted on")
    if args.mark and args.action not in (None, MARK):
        raise UsageError(f"--mark is the action; it does not go with --action {args.action}")
    if args.action == MARK and not args.mark:
        raise UsageError("--action mark names its mark: give --mark RECORD_ID")
    if args.forward:
        to = cons.participant(args.forward)
        if to is None or to.role != "carrier" or args.forward == who:
            carriers = ", ".join(p.id for p in cons.participants
                                 if p.role == "carrier" and p.id != who)
            raise UsageError(f"--forward {args.forward!r} is not another carrier of {cons.name}; "
                             f"carriers: {carriers or 'none'}")
    action = MARK if args.mark else (args.action or NONE)
    feedback = [parse_time(t) if t else 0
                for t in (args.feedback_reported, args.feedback_complainant)]
    if any(t < 0 for t in feedback):
        raise UsageError("a feedback time is not before 1970")
    complaint = _record(args.complaint_id, connect, d, ep, who)
    mark = _record(args.mark, connect, d, ep, who) if args.mark else b""
    h = rpb.Handling(complaints=[complaint], finding=FINDING_CODES[finding],
                     forward_to=args.forward or "", action=ACTION_CODES[action], mark_id=mark,
                     feedback_reported_at_ms=feedback[0], feedback_complainant_at_ms=feedback[1])
    _issued(args, connect("admin", Dial(d, ep, who)).IssueHandling(h, timeout=30))
    return 0


# ------------------------------------------------------------------ sanction


def cmd_sanction(args: argparse.Namespace, connect: Connect) -> int:
    d, cons, who, ep = _endpoint(args)
    _role(cons, who, "regulator", "markex sanction")
    check_uscc(args.uscc)   # BadCreditCode: exit 2, saying what is wrong with it
    at = parse_time(args.at) if args.at else _now_ms()
    s = Sanction(enterprise=args.name, uscc=args.uscc, licence=args.licence or "",
                 reason=args.reason or "", document=args.doc, listed_at_ms=at,
                 delist=args.delist)   # the record's own field rules (MalformedRecord: exit 2)
    r = connect("admin", Dial(d, ep, who)).IssueSanction(s.to_pb(), timeout=30)
    _issued(args, r, {"uscc": s.uscc, "delist": s.delist, "listed_at": iso(at)})
    return 0


# ------------------------------------------------------------------ badlist


@dataclass(frozen=True)
class ListedEnterprise:
    """A listing in force that verified: the regulator's signed Sanction, in the log."""

    record: Record
    index: int

    @property
    def sanction(self) -> Sanction:
        assert isinstance(self.record.payload, Sanction)
        return self.record.payload

    def to_json(self) -> dict[str, Any]:
        s = self.sanction
        return {"uscc": s.uscc, "enterprise": s.enterprise, "licence": s.licence,
                "reason": s.reason, "document": s.document, "listed_at": iso(s.listed_at_ms),
                "id": self.record.id.hex(), "issuer": self.record.issuer, "seq": self.record.seq,
                "index": self.index, "verified": True}


@dataclass(frozen=True)
class VerifiedBadList:
    at_ms: int
    listed: tuple[ListedEnterprise, ...]
    line: tuple[Record, int] | None    # a check by number: the line linking it, and its index


def _proven(cons: Consortium, p: pb.ProvenRecord, size: int, root: bytes, what: str) -> Record:
    """The record of `p`, its signature checked against the consortium and its
    inclusion proof against (size, root); NotVerified saying what failed."""
    from ledger.log import verify_envelopes

    try:
        rec = verify_envelopes([p.envelope], cons)[0]
    except LedgerError as e:
        raise NotVerified(f"{what} does not verify: {e}") from e
    if p.index >= size:
        raise NotVerified(f"{what} {rec.id.hex()[:16]} is past the log checkpoint of size "
                          f"{size}; ask again once the next one is signed")
    try:
        merkle.verify_inclusion(merkle.leaf_hash(p.envelope), p.index, size, list(p.path), root)
    except LedgerError as e:
        raise NotVerified(f"{what} {rec.id.hex()[:16]} is not at index {p.index} of the log "
                          f"checkpoint: {e}") from e
    return rec


def verify_bad_list(cons: Consortium, got: pb.BadList, size: int, root: bytes, at_ms: int,
                    check: tuple[str, str] | None = None) -> VerifiedBadList:
    """Verify a node's GetBadList answer for `at_ms` against a log checkpoint
    (size, root) the caller trusts: every sanction is signed by a participant
    of role regulator, is a listing in force at `at_ms` (listed_at up to it,
    not a delisting), one per credit code, in the log; for a `check` by code
    every listing is that code's; by number, a line of a carrier holding the
    number, in the log, links the listing's code. Raises NotVerified. What it
    cannot show is completeness: a node could leave a listing out."""
    if got.size != size:
        raise NotVerified(f"asked for proofs at size {size}, the node gave size {got.size}")
    if got.at_ms != at_ms:
        raise NotVerified(f"asked for the list at {iso(at_ms)}, the node answered for "
                          f"{iso(got.at_ms)}")
    listed: list[ListedEnterprise] = []
    seen: set[str] = set()
    for p in got.sanctions:
        rec = _proven(cons, p, size, root, "a sanction")
        who = cons.participant(rec.issuer)
        if who is None or who.role != "regulator":
            raise NotVerified(f"record {rec.id.hex()[:16]} is signed by {rec.issuer}, not by "
                              "the regulator: it lists nobody")
        s = rec.payload
        if not isinstance(s, Sanction):
            raise NotVerified(f"record {rec.id.hex()[:16]} is a {rec.kind}, not a sanction")
        if s.delist or s.listed_at_ms > at_ms:
            raise NotVerified(f"sanction {rec.id.hex()[:16]} of {s.uscc} is not a listing in "
                              f"force at {iso(at_ms)}")
        if s.uscc in seen:
            raise NotVerified(f"the answer lists {s.uscc} twice")
        seen.add(s.uscc)
        listed.append(ListedEnterprise(rec, p.index))
    line = None
    if check is not None and check[0] == "uscc" and seen - {check[1]}:
        raise NotVerified(f"asked about {check[1]}, the node answered about "
                          f"{', '.join(sorted(seen - {check[1]}))}")
    if check is not None and check[0] == "number":
        line = _check_line(cons, got, check[1], seen, size, root)
    return VerifiedBadList(at_ms, tuple(listed), line)


def _check_line(cons: Consortium, got: pb.BadList, number: str, codes: set[str], size: int,
                root: bytes) -> tuple[Record, int] | None:
    if got.number != number:
        raise NotVerified(f"asked about {number}, the node answered about {got.number[:40]!r}")
    if not codes:
        if got.lines:
            raise NotVerified("the answer links a line to no listing")
        return None
    if len(got.lines) != 1 or len(codes) != 1:
        raise NotVerified(f"a listing of {number} rests on exactly one marketer line; the "
                          f"answer gives {len(got.lines)} line(s) for {len(codes)} listing(s)")
    rec = _proven(cons, got.lines[0], size, root, "the marketer line")
    ln = rec.payload
    who = cons.participant(rec.issuer)
    if not isinstance(ln, MarketerLine) or ln.deregisters or who is None or (
            who.role != "carrier"):
        raise NotVerified(f"record {rec.id.hex()[:16]} is no carrier's marketer line "
                          "registration")
    if not ln.covers(number) or ln.uscc not in codes:
        raise NotVerified(f"line {rec.id.hex()[:16]} ({ln.number}, {ln.uscc}) does not link "
                          f"{number} to {', '.join(sorted(codes))}")
    return rec, got.lines[0].index


def fetch_bad_list(cons: Consortium, public: Any, at_ms: int, check: str = ""
                   ) -> tuple[VerifiedBadList, TrustedCheckpoint]:
    """Ask a node's public port for the bad list at `at_ms` and verify it
    against its log checkpoint, which must carry the cosignature quorum."""
    from node.complaintservice import parse_check
    from node.recordcli import open_log_checkpoint

    parsed = None
    if check:
        try:
            parsed = parse_check(check)
        except LedgerError as e:
            raise UsageError(f"--check {check[:70]!r}: {e}") from e
    cp_note = public.GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=10).note
    trusted = open_log_checkpoint(cons, cp_note)
    if trusted.why_not is not None:
        raise NotVerified(f"the log checkpoint is not trusted: {trusted.why_not}")
    cp = trusted.checkpoint
    got = public.GetBadList(pb.BadListRequest(at_ms=at_ms, size=cp.size, check=check),
                            timeout=30)
    return verify_bad_list(cons, got, cp.size, cp.root, at_ms, parsed), trusted


def _badlist_text(out: dict[str, Any]) -> str:
    cp = out["checkpoint"]
    lines = [f"the bad list at {out['at']}: {len(out['listed'])} enterprise(s) listed"]
    for e in out["listed"]:
        lines.append(f"  {e['uscc']}  {e['enterprise']}  listed {e['listed_at']} under "
                     f"{e['document']}: {e['reason']} (log index {e['index']})")
    if "check" in out:
        c = out["check"]
        via = f" through line {c['line']['id'][:16]}" if c.get("line") else ""
        lines.append(f"{c['query']}: {'LISTED' if c['listed'] else 'not listed'}{via}")
    lines.append(f"verified: yes, against {cp['node']}'s log checkpoint of size {cp['size']} "
                 f"(cosigned by {', '.join(cp['cosigned_by'])})")
    return "\n".join(lines)


def cmd_badlist(args: argparse.Namespace, connect: Connect) -> int:
    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    public = connect("public", Dial(d, node_endpoints(cons, args.node)))
    at = parse_time(args.at) if args.at else _now_ms()
    got, trusted = fetch_bad_list(cons, public, at, args.check or "")
    out: dict[str, Any] = {"at": iso(at), "listed": [e.to_json() for e in got.listed],
                           "verified": True, "checkpoint": trusted.to_json()}
    if args.check:
        c: dict[str, Any] = {"query": args.check, "listed": bool(got.listed)}
        if got.line is not None:
            rec, index = got.line
            assert isinstance(rec.payload, MarketerLine)
            c["line"] = {"id": rec.id.hex(), "issuer": rec.issuer, "number": rec.payload.number,
                         "prefix": rec.payload.prefix, "uscc": rec.payload.uscc,
                         "index": index}
        out["check"] = c
    show(args, out, _badlist_text(out))
    return 0
