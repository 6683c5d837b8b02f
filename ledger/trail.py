"""A number's trail: every record about it in causal order, each proven in
the log (docs/trail.md). Pure: what a client runs on a node's answer.

Which records are about a number is, first, what the number's view entry
names (`ids_of_entry`): its marks, the corrections and appeals of them, the
decisions closing the appeals (and the protections they set), its
reassignments, its complaints. The entry is proven against a cosigned view
checkpoint, so a node cannot leave one of these out without breaking that
proof. Then what the node's indexes link to them (`linked`): the carriers'
handlings of those complaints, the marketer line registered for the number
(and its deregistration) and the sanctions of that line's enterprise (by its
credit code). Each linked record must link to the trail (`_check_about`),
but only the node's word says none is missing: a step says which it is
(`source`: "entry" or "index"). Every record is checked against its id (its
SHA-256), its issuer's signature, and an inclusion proof in a cosigned log
checkpoint's tree.

Causal order (`causal_order`): a record comes after every record of the
trail it names (a correction after its targets, a decision after its
appeal); otherwise by issue time, then issuer, then seq.

Errors (ledger errors, one gRPC code each):

    IncompleteTrail(ProofMismatch)  a record the entry names is missing, or one is given
                                    twice
    NotAboutNumber(ProofMismatch)   a record in the answer is about another number, or
                                    links to nothing of the trail
    WrongNumber, StaleView, ...     the view answer itself (ledger/verify.py)
    ProofMismatch, MalformedProof   a record's inclusion proof (ledger/merkle.py)
    BadSignature, UnknownIssuer     a record's signature
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from keys.consortium import Consortium
from ledger import merkle
from ledger import view as V
from ledger.errors import ProofMismatch
from ledger.log import verify_envelopes
from ledger.numbers import normalize
from ledger.payloads import Complaint, Handling, MarketerLine, Sanction
from ledger.record import Correction, Mark, Reassignment, Record
from ledger.verify import Answer, WrongNumber, check_fresh, open_view
from ledger.view.facts import appealed


class IncompleteTrail(ProofMismatch):
    """The records given are not exactly those the proven entry names."""


class NotAboutNumber(ProofMismatch):
    """A record of the trail is about another number than the one asked."""


# ------------------------------------------------------------------ what is about a number


def ids_of_entry(entry: V.Entry | None) -> set[bytes]:
    """The ids of every record a view entry rests on: marks, own corrections
    (recategorizations, withdrawals), appeals and what closed them (decision or
    withdrawal), the decisions behind protections, reassignments."""
    if entry is None:
        return set()
    ids: set[bytes] = set()
    for m in entry.marks:
        ids.add(m.id)
        ids.update(r.ref for r in m.recategorized)
        ids.update(s.ref for s in m.set_aside)
    for a in entry.appeals:
        ids.add(a.id)
        if a.closed_by:
            ids.add(a.closed_by)
    ids.update(r.id for r in entry.reassignments)
    ids.update(p.decision for p in entry.protections)
    ids.update(c.id for c in entry.complaints)
    return ids


def names_of(rec: Record) -> tuple[bytes, ...]:
    """The record ids `rec` names: a correction's targets, a decision's appeal,
    a handling's complaints (and the mark it issued), a deregistration's line."""
    p = rec.payload
    if isinstance(p, Correction):
        return (p.appeal_id,) if p.is_decision else p.targets
    if isinstance(p, Handling):
        return p.complaints + ((p.mark_id,) if p.mark_id else ())
    if isinstance(p, MarketerLine) and p.is_deregistration:
        return (p.deregisters,)
    return ()


def kind_in_trail(rec: Record, by_id: dict[bytes, Record]) -> str:
    """mark | correction (of one's own marks) | appeal (of another's mark) |
    withdrawal (of one's own appeal) | decision | reassignment | forward (a
    handling finding not-ours), or the payload's kind for any other record
    (complaint, handling, line, deregistration, sanction, delisting)."""
    p = rec.payload
    if isinstance(p, Handling) and p.forward_to:
        return "forward"
    if not isinstance(p, Correction) or p.is_decision:
        return rec.kind

    def mark_issuer(t: bytes) -> str | None:
        r = by_id.get(t)
        return r.issuer if r is not None and isinstance(r.payload, Mark) else None

    if appealed(rec.issuer, p, mark_issuer):  # the view's rule of what is an appeal
        return "appeal"
    targets = [by_id.get(t) for t in p.targets]
    if any(t is not None and isinstance(t.payload, Correction) for t in targets):
        return "withdrawal"
    return "correction"


def _tie(rec: Record) -> tuple[int, str, int]:
    return (rec.issued_at_ms, rec.issuer, rec.seq)


def causal_order(records: Iterable[Record]) -> list[Record]:
    """The records with each after the ones of the set it names, ties (and
    unrelated records) by (issued_at, issuer, seq). Names outside the set
    are ignored; ids name their record's hash, so the names form no cycle."""
    by_id = {r.id: r for r in records}
    waits: dict[bytes, int] = {}
    named_by: dict[bytes, list[bytes]] = {}
    for r in by_id.values():
        deps = {n for n in names_of(r) if n in by_id and n != r.id}
        waits[r.id] = len(deps)
        for n in deps:
            named_by.setdefault(n, []).append(r.id)
    ready = [(_tie(r), r.id) for r in by_id.values() if waits[r.id] == 0]
    heapq.heapify(ready)
    out: list[Record] = []
    while ready:
        _, rid = heapq.heappop(ready)
        out.append(by_id[rid])
        for later in named_by.get(rid, ()):
            waits[later] -= 1
            if waits[later] == 0:
                heapq.heappush(ready, (_tie(by_id[later]), later))
    return out


def _check_about(number: str, recs: dict[bytes, Record]) -> None:
    """Each record is about `number`: a mark, reassignment or complaint of it,
    a line registered for it, a sanction of a registered line's enterprise,
    or a record naming one of the trail (NotAboutNumber otherwise)."""
    lines = {r.payload.uscc for r in recs.values()
             if isinstance(r.payload, MarketerLine) and r.payload.covers(number)}
    for r in recs.values():
        p = r.payload
        if isinstance(p, Mark | Reassignment | Complaint):
            if p.number != number:
                raise NotAboutNumber(f"record {r.id.hex()[:16]} is a {r.kind} of {p.number}, "
                                     f"not of {number}")
        elif isinstance(p, MarketerLine) and not p.is_deregistration:
            if not p.covers(number):
                raise NotAboutNumber(f"record {r.id.hex()[:16]} registers the line {p.number}, "
                                     f"which does not hold {number}")
        elif isinstance(p, Sanction):
            if p.uscc not in lines:
                raise NotAboutNumber(f"record {r.id.hex()[:16]} sanctions {p.uscc}, the "
                                     f"enterprise of no line of the trail holding {number}")
        elif not any(n in recs for n in names_of(r)):
            raise NotAboutNumber(f"record {r.id.hex()[:16]} ({r.kind}) names no record "
                                 f"about {number}")


# ------------------------------------------------------------------ verification


@dataclass(frozen=True)
class Proven:
    """One record as a node gave it: its envelope, its log index, and its
    inclusion proof in the tree of the checkpoint's size (empty when the
    checkpoint does not cover the index yet)."""

    envelope: bytes
    index: int
    path: tuple[bytes, ...]


ENTRY, INDEX = "entry", "index"   # where a step comes from (module doc)


@dataclass(frozen=True)
class TrailStep:
    record: Record
    index: int
    kind: str
    verified: bool          # False: the log checkpoint does not cover its index yet
    source: str             # ENTRY: named by the proven entry; INDEX: linked by the node

    def to_json(self) -> dict[str, Any]:
        r = self.record
        out: dict[str, Any] = {
            "index": self.index, "id": r.id.hex(), "kind": self.kind, "issuer": r.issuer,
            "seq": r.seq, "issued_at_ms": r.issued_at_ms,
            "names": [n.hex() for n in names_of(r)], "verified": self.verified,
            "source": self.source,
        }
        out.update(_summary(r))
        return out


def _summary(r: Record) -> dict[str, Any]:
    """What a reader needs of the payload. No free text (reasons, descriptions)
    and no description digest; a complaint's complainant only sealed, under
    `complainant` (the web front end leaves it out)."""
    p = r.payload
    if isinstance(p, Mark):
        return {"category": p.category, "score": p.score, "observed_at_ms": p.observed_at_ms}
    if isinstance(p, Correction):
        if p.is_decision:
            return {"outcome": p.outcome}
        return {"action": p.action, "category": p.category or None}
    if isinstance(p, Reassignment):
        return {"effective_at_ms": p.effective_at_ms}
    if isinstance(p, Complaint):
        return {"category": p.category, "channel": p.channel, "call_at_ms": p.call_at_ms,
                "addressed_to": p.addressed_to, "complainant": p.complainant.hex()}
    if isinstance(p, Handling):
        return {"finding": p.finding, "action": p.action, "forward_to": p.forward_to or None,
                "feedback_reported_at_ms": p.feedback_reported_at_ms or None,
                "feedback_complainant_at_ms": p.feedback_complainant_at_ms or None}
    if isinstance(p, MarketerLine):
        if p.is_deregistration:
            return {}
        return {"line": p.number, "prefix": p.prefix, "enterprise": p.enterprise,
                "uscc": p.uscc, "industry": p.industry}
    if isinstance(p, Sanction):
        return {"enterprise": p.enterprise, "uscc": p.uscc, "document": p.document,
                "listed_at_ms": p.listed_at_ms, "delist": p.delist}
    return {}


@dataclass(frozen=True)
class VerifiedTrail:
    number: str
    steps: tuple[TrailStep, ...]
    view_root: bytes
    log_size: int
    why_not: str | None     # None: every step proven and the view checkpoint has its quorum

    @property
    def verified(self) -> bool:
        return self.why_not is None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "number": self.number, "records": [s.to_json() for s in self.steps],
            "view_root": self.view_root.hex(), "log_size": self.log_size,
            "verified": self.verified,
        }
        if self.why_not is not None:
            out["error"] = self.why_not
        return out


def verify_trail(
    cons: Consortium,
    number: str,
    answer: Answer,
    records: Sequence[Proven],
    log_size: int,
    log_root: bytes,
    now_ms: int,
) -> VerifiedTrail:
    """Verify a node's trail of `number` (what was asked, normalized here):
    `answer` is its view entry with proof and cosigned view checkpoint,
    `records` the records with their inclusion proofs in the tree of
    (`log_size`, `log_root`), a log checkpoint the caller verified. Raises
    (module doc) when anything is wrong; a record past `log_size`, or too
    few fresh cosignatures on the view, leave the trail unverified, saying why."""
    asked = normalize(number)
    if answer.number != asked:
        raise WrongNumber(f"asked about {asked}, the node answered about {answer.number[:40]!r}")
    view = open_view(cons, answer.view_checkpoint)
    fresh = check_fresh(view, cons.policy, now_ms)
    entry = V.verify_lookup(asked, answer.entry or None, answer.proof, view.checkpoint.root,
                            cons.policy.view_bucket_bits)
    want = ids_of_entry(entry)
    recs = dict(zip((hashlib.sha256(p.envelope).digest() for p in records), records,
                    strict=True))
    if len(recs) != len(records):
        raise IncompleteTrail("the answer gives a record twice")
    missing = want - set(recs)
    if missing:
        raise IncompleteTrail(
            f"the trail of {asked} is not the one its view entry proves: {len(missing)} "
            f"record(s) the entry names are missing "
            f"({', '.join(sorted(m.hex()[:16] for m in missing))})")
    parsed = {rid: rec for rid, rec in
              zip(recs, verify_envelopes([p.envelope for p in recs.values()], cons),
                  strict=True)}
    _check_about(asked, parsed)
    pending = 0
    steps = []
    for rec in causal_order(parsed.values()):
        p = recs[rec.id]
        covered = p.index < log_size
        if covered:
            merkle.verify_inclusion(merkle.leaf_hash(p.envelope), p.index, log_size,
                                    list(p.path), log_root)
        else:
            pending += 1
        steps.append(TrailStep(rec, p.index, kind_in_trail(rec, parsed), covered,
                               ENTRY if rec.id in want else INDEX))
    why = None
    if len(fresh) < cons.policy.cosign_quorum:
        why = (f"the view checkpoint has {len(fresh)} of {cons.policy.cosign_quorum} "
               "fresh cosignatures")
    elif pending:
        why = (f"{pending} record(s) are past the log checkpoint of size {log_size}; "
               "ask again once the next one is signed")
    return VerifiedTrail(asked, tuple(steps), view.checkpoint.root, log_size, why)
