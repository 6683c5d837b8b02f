"""`markex lookup`: the national view's entry for a number (or, with
`--batch FILE`, for every number of a file through LookupBatch), verified
against a cosigned view checkpoint (node/lookup.py), shown as a readable
table or one JSON object whose times carry ISO 8601 beside the milliseconds.

An appeal's reasons are not in the view (docs/view.md: entries hold no free
text); they are read from the appeal's and the decision's records on the
member port, as --as or the consortium's auditor, each checked against its
id and its issuer's signature. Without member credentials they show as unknown.
"""

from __future__ import annotations

import argparse
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from keys import KeysError
from ledger.errors import InvalidNumber, LedgerError
from ledger.numbers import normalize
from markex.v1 import service_pb2 as pb
from node.command import (
    NotVerified,
    UsageError,
    iso,
    node_endpoints,
    parse_time,
    pinned_consortium,
    show,
    table,
)
from node.connect import Connect, Dial, reader_id

if TYPE_CHECKING:
    from keys.consortium import Consortium

BATCH = 1000  # numbers per LookupBatch call: the node's own cap
# Times in milliseconds that the JSON output repeats in ISO 8601 as `<key>_iso`.
TIME_KEYS = frozenset({"observed_at", "expires_at", "since", "filed_at", "decided_at",
                       "tenure_since", "view_signed_at_ms"})


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def with_iso(obj: Any) -> Any:
    """`obj` with every time of TIME_KEYS repeated in ISO 8601 beside it
    (`view_signed_at_ms` -> `view_signed_at`, `filed_at` -> `filed_at_iso`)."""
    if isinstance(obj, list):
        return [with_iso(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for k, v in obj.items():
        out[k] = with_iso(v)
        if k in TIME_KEYS and (v is None or isinstance(v, int)):
            out[k[:-3] if k.endswith("_ms") else f"{k}_iso"] = iso(v)
    return out


# ------------------------------------------------------------------ appeal reasons


def _reason(audit: Any, cons: Consortium, rid_hex: str) -> tuple[str, str]:
    """(issuer, reason) of a correction record read by id, checked against the id."""
    from ledger.log import verify_envelopes  # only when an entry has appeals

    rid = bytes.fromhex(rid_hex)
    got = audit.GetRecord(pb.GetRecordRequest(id=rid), timeout=10)
    if hashlib.sha256(got.envelope).digest() != rid:
        raise NotVerified(f"the node answered with another record than {rid_hex}")
    rec = verify_envelopes([got.envelope], cons)[0]
    return rec.issuer, getattr(rec.payload, "reason", "")


def add_reasons(obj: dict[str, Any], cons: Consortium, audit: Any) -> None:
    """Each appeal's `reason` and its decision's `decision_reason`, read from
    their records; None (and `reasons_error`) when they cannot be read."""
    for a in obj.get("appeals") or []:
        try:
            _, a["reason"] = _reason(audit, cons, a["appeal_id"])
            a["decision_reason"] = None
            if a.get("decision_id"):
                _, a["decision_reason"] = _reason(audit, cons, a["decision_id"])
        except (grpc.RpcError, LedgerError, KeysError, OSError, NotVerified) as e:
            a.setdefault("reason", None)
            a.setdefault("decision_reason", None)
            detail = e.details() if isinstance(e, grpc.RpcError) else str(e)
            obj["reasons_error"] = f"the appeal records could not be read: {detail}"


# ------------------------------------------------------------------ rendering


def _mark_line(m: dict[str, Any]) -> str:
    when = f"observed {iso(m.get('observed_at'))}"
    if m.get("expires_at"):
        when += f", expires {iso(m['expires_at'])}"
    return (f"{m['participant']}: {m['category']}, score {m['score']}, "
            f"{m.get('reports', 0)} report(s), {when}")


def _appeal_lines(a: dict[str, Any]) -> list[str]:
    lines = [f"{a['appeal_id']}", f"  by {a['appellant']}, filed {iso(a['filed_at'])}, "
             f"{a['status']}"]
    if a.get("reason"):
        lines.append(f"  reason: {a['reason']}")
    if a.get("decided_at"):
        lines.append(f"  decision: {a['status']} at {iso(a['decided_at'])} "
                     f"(record {a['decision_id']})")
        if a.get("decision_reason"):
            lines.append(f"  decision reason: {a['decision_reason']}")
    return lines


def render(obj: dict[str, Any], cons: Consortium) -> str:
    """The human table of one verified (or refused) answer."""
    cat = obj.get("category")
    label = cons.categories.get(cat).label if cat in cons.categories else None
    rows: list[tuple[str, Any]] = [
        ("number", obj["number"]),
        ("category", f"{cat} ({label})" if label else (cat or "none")),
        ("risk", obj.get("risk") or "unknown"),
        ("score", obj.get("score")),
        ("appeal", obj.get("appeal") or "none"),
    ]

    def block(name: str, lines: list[str]) -> None:
        for i, line in enumerate(lines or ["-"]):
            rows.append((name if i == 0 else "", line))

    block("marked by", [_mark_line(m) for m in obj.get("markers") or []])
    block("set aside", [f"{s['participant']}: {s['category']}, {s['reason']} since "
                        f"{iso(s['since'])}" for s in obj.get("set_aside") or []])
    for a in obj.get("appeals") or []:
        block("appeal id", _appeal_lines(a))
    if obj.get("reasons_error"):
        rows.append(("reasons", obj["reasons_error"]))
    if obj.get("tenure_since"):
        rows.append(("holder since", f"{iso(obj['tenure_since'])} (number reassigned)"))
    if obj.get("view_root"):
        by = ", ".join(obj.get("cosigned_by") or []) or "nobody"
        rows.append(("view", f"root {obj['view_root'][:16]}…, signed by {obj.get('signed_by')} "
                             f"at {iso(obj.get('view_signed_at_ms'))}, cosigned by {by}"))
    rows.append(("verified", "yes" if obj["verified"] else "no"))
    return table(rows)


def _why(obj: dict[str, Any], quorum: int) -> str:
    """The reason an answer is not verified, without the error class it starts
    with; too few cosignatures first says how many of how many."""
    err = str(obj.get("error") or "no reason given")
    head, sep, rest = err.partition(": ")
    if sep and head.isidentifier() and head[:1].isupper():
        return rest  # refused by a check (node/lookup.py's errors)
    fresh = len(obj.get("cosigned_by") or [])
    return f"{fresh} of {quorum} required cosignatures ({err})"


# ------------------------------------------------------------------ commands


def _numbers(path: Path) -> list[str]:
    """One number a line (the first comma-separated field; blank lines and # comments skipped)."""
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        field = line.split(",", 1)[0].strip()
        if not field or field.startswith("#") or field.lower() == "number":
            continue
        try:
            out.append(normalize(field))
        except InvalidNumber as e:
            raise UsageError(f"{path}:{i}: {e}") from e
    if not out:
        raise UsageError(f"{path} holds no numbers (one a line)")
    return out


def _batch(args: argparse.Namespace, stub: Any, cons: Consortium, at: int, now: int) -> int:
    from ledger.verify import verify_answers

    numbers = _numbers(Path(args.batch))
    results: list[dict[str, Any]] = []
    for i in range(0, len(numbers), BATCH):
        chunk = numbers[i : i + BATCH]
        resp = stub.LookupBatch(pb.LookupBatchRequest(numbers=chunk, at_ms=at, with_proofs=True),
                                timeout=60)
        if len(resp.results) != len(chunk):
            raise NotVerified(f"asked about {len(chunk)} numbers, the node answered "
                              f"{len(resp.results)}")
        results += verify_answers(cons, chunk, list(resp.results), resp.view_checkpoint, at, now)
    bad = [r for r in results if not r["verified"]]
    obj = {"count": len(results), "verified": not bad, "results": with_iso(results)}
    rows = [(r["number"], f"{r.get('category') or 'none'}, risk {r.get('risk') or 'unknown'}, "
                          f"score {r.get('score')}, appeal {r.get('appeal') or 'none'}, "
                          f"{'verified' if r['verified'] else 'NOT verified'}")
            for r in results]
    show(args, obj, table(rows))
    if bad:
        raise NotVerified(f"{len(bad)} of {len(results)} answers (first, {bad[0]['number']}: "
                          f"{_why(bad[0], cons.policy.cosign_quorum)})")
    return 0


def cmd_lookup(args: argparse.Namespace, connect: Connect) -> int:
    from node.lookup import lookup_verified

    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    if bool(args.number) == bool(args.batch):
        raise UsageError("give a NUMBER or --batch FILE (one number a line)")
    ep = node_endpoints(cons, args.node)
    now = _now_ms()
    at = parse_time(args.at) if args.at else now
    number = normalize(args.number) if args.number else ""  # before any call: InvalidNumber
    stub = connect("public", Dial(d, ep))
    if args.batch:
        return _batch(args, stub, cons, at, now)
    # Freshness is judged at the real time, whatever time the entry is evaluated at.
    obj = lookup_verified(stub, cons, number, at, now_ms=now)
    if obj.get("appeals"):
        try:
            audit = connect("audit", Dial(d, ep, reader_id(cons, args.as_id)))
            add_reasons(obj, cons, audit)
        except KeysError as e:
            obj["reasons_error"] = f"the appeal records could not be read: {e}"
    show(args, with_iso(obj), render(obj, cons))
    if not obj["verified"]:
        raise NotVerified(_why(obj, cons.policy.cosign_quorum))
    return 0
