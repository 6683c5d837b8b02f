"""Client-side verification of lookups: what a phone app or a carrier's call
path runs to trust an answer without trusting the node that gave it. Pure:
no gRPC, no node; the answer is any object with the fields of a
`LookupResponse` (`Answer`), so an app imports this without a server.

An answer is `verified` only when (1) the view checkpoint is signed by the
node that served it, (2) it was signed no longer ago than the policy's
`view_max_age_ms` (and not in the future beyond `clock_skew_ms`), (3) at
least `policy.cosign_quorum` other members cosigned the same checkpoint at a
time that is fresh too, (4) the answer is for the number asked (normalized
here, never taken from the answer), and (5) the entry (or its absence) is
proven against the checkpoint's root. A client that keeps state (`ViewClient`)
also refuses a checkpoint older than the newest it has verified from that node.

Errors (each a ledger error, so it maps to one gRPC code like the rest):

    WrongNumber(ProofMismatch)   the node answered for another number
    StaleView(OutOfOrder)        the view checkpoint or its cosignatures are too old
    ViewRollback(OutOfOrder)     older than a checkpoint this client already verified
    ClockSkew                    the checkpoint claims a time in the future

`now_ms` (when the answer is verified) is always an argument."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from keys.consortium import Consortium, Policy
from ledger import note
from ledger import view as V
from ledger.errors import ClockSkew, LedgerError, MalformedNote, OutOfOrder, ProofMismatch
from ledger.names import origin_of, participant_of_view, witness_name
from ledger.numbers import normalize


class WrongNumber(ProofMismatch):
    """The answer is about another number than the one asked."""


class StaleView(OutOfOrder):
    """The view checkpoint is older than the policy allows."""


class ViewRollback(OutOfOrder):
    """The view checkpoint is older than one this client has already verified."""


class Answer(Protocol):
    """What a node answers about one number (markex.v1.LookupResponse has these)."""

    number: str
    entry: bytes
    proof: bytes
    view_checkpoint: str


@dataclass(frozen=True)
class CosignedView:
    """A view checkpoint whose signer's signature verified, with the members
    whose cosignature verified and the time (POSIX seconds) each cosigned at."""

    checkpoint: V.ViewCheckpoint
    signer: str
    cosigned_at: Mapping[str, int]

    def fresh_cosigners(self, policy: Policy, now_ms: int) -> list[str]:
        """Cosigners whose timestamp is within the policy's maximum age of
        `now_ms` and not beyond the clock skew in its future."""
        return [
            pid
            for pid, t in self.cosigned_at.items()
            if now_ms - policy.view_max_age_ms <= t * 1000 <= now_ms + policy.clock_skew_ms
        ]


def open_view(cons: Consortium, text: str) -> CosignedView:
    """Check the node's signature on a view checkpoint and every member
    cosignature on it (a line under a member's key that does not verify
    rejects the whole note). Raises MalformedNote, BadSignature."""
    origin = origin_of(text)  # a note's text starts with the checkpoint's origin line
    signer = participant_of_view(cons.name, cons.witnesses, origin)
    if signer is None:
        raise MalformedNote(f"view checkpoint origin {origin!r} names no node of the consortium")
    parsed, _ = note.verify_note(text, [note.Verifier.for_key(origin, signer.public_key)])
    cp = V.parse_view_checkpoint(parsed.text)
    witnesses: dict[tuple[str, bytes], tuple[str, bytes]] = {}
    for p in cons.witnesses:
        if p.id != signer.id:
            name = witness_name(cons.name, p.id)
            witnesses[(name, note.cosignature_key_id(name, p.public_key))] = (p.id, p.public_key)
    cosigned_at: dict[str, int] = {}
    for sig in parsed.signatures:
        known = witnesses.get((sig.name, sig.key_id))
        if known is None:
            continue  # not a member's witness key: ignored, as the spec says
        pid, public_key = known
        t = note.verify_cosignature(parsed.text, sig, sig.name, public_key)
        cosigned_at[pid] = max(t, cosigned_at.get(pid, 0))
    return CosignedView(cp, signer.id, cosigned_at)


def open_cosigned_view(cons: Consortium, text: str) -> tuple[V.ViewCheckpoint, str, list[str]]:
    """Check the node's signature and count member cosignatures (whatever
    their age). Returns (checkpoint, signer id, cosigner ids)."""
    v = open_view(cons, text)
    return v.checkpoint, v.signer, list(v.cosigned_at)


def check_fresh(view: CosignedView, policy: Policy, now_ms: int) -> list[str]:
    """Refuse a checkpoint signed longer than `policy.view_max_age_ms` before
    `now_ms` (StaleView) or beyond the clock skew after it (ClockSkew).
    Returns the cosigners whose cosignature is fresh too."""
    signed = view.checkpoint.signed_at_ms
    age = now_ms - signed
    if age > policy.view_max_age_ms:
        raise StaleView(
            f"view checkpoint is {age // 1000:,} s old; "
            f"the policy allows {policy.view_max_age_ms // 1000:,} s"
        )
    if -age > policy.clock_skew_ms:
        raise ClockSkew(
            f"view checkpoint is signed {-age // 1000:,} s in the future; "
            f"the policy allows a clock skew of {policy.clock_skew_ms // 1000:,} s"
        )
    return view.fresh_cosigners(policy, now_ms)


def _quorum_error(policy: Policy, fresh: list[str], view: CosignedView) -> str | None:
    if len(fresh) >= policy.cosign_quorum:
        return None
    stale = sorted(set(view.cosigned_at) - set(fresh))
    why = f"view checkpoint cosigned by {len(fresh)} member(s) at a fresh time"
    if fresh:
        why += f" ({', '.join(fresh)})"
    if stale:
        why += f", {len(stale)} more too long ago ({', '.join(stale)})"
    return why + f"; the policy needs {policy.cosign_quorum}"


def _verified_answer(
    cons: Consortium,
    number: str,
    resp: Answer,
    view: CosignedView,
    fresh: list[str],
    at_ms: int,
) -> dict[str, Any]:
    asked = normalize(number)
    if resp.number != asked:
        raise WrongNumber(f"asked about {asked}, the node answered about {resp.number[:40]!r}")
    cp = view.checkpoint
    entry = V.verify_lookup(
        asked, resp.entry or None, resp.proof, cp.root, cons.policy.view_bucket_bits
    )
    out: dict[str, Any] = {"number": asked}
    if entry is None:
        out.update(
            {"category": None, "risk": "none", "score": 0, "markers": [], "set_aside": [],
             "appeal": None, "appeals": [], "tenure_since": None}
        )
    else:
        res = entry.evaluate(at_ms).to_json()
        out.update({k: res.get(k) for k in ("category", "risk", "score", "markers", "set_aside")})
        out["appeal"] = res.get("appeal") or res.get("appeals")
        # Each appeal (id, appellant, filed_at, status, decided_at, decision_id) and the tenure.
        out["appeals"], out["tenure_since"] = res["appeals"], res["tenure_since"]
    out["view_root"] = cp.root.hex()
    out["view_signed_at_ms"] = cp.signed_at_ms
    out["signed_by"] = view.signer
    out["cosigned_by"] = fresh
    why = _quorum_error(cons.policy, fresh, view)
    out["verified"] = why is None
    if why is not None:
        out["error"] = why
    return out


def verify_answer(
    cons: Consortium,
    number: str,
    resp: Answer,
    text: str,
    at_ms: int,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Verify `resp` as the answer about `number` (what was asked, normalized
    here), evaluated at `at_ms`, under the view checkpoint `text`, at time
    `now_ms` (default: `at_ms`). Raises (see the module doc) when the answer
    is not about `number`, the proof or a signature fails, or the checkpoint
    is stale; returns a dict whose `verified` is False, with `error` saying
    why, when too few fresh member cosignatures back it."""
    now = at_ms if now_ms is None else now_ms
    view = open_view(cons, text)
    fresh = check_fresh(view, cons.policy, now)
    return _verified_answer(cons, number, resp, view, fresh, at_ms)


def verify_answers(
    cons: Consortium,
    numbers: Sequence[str],
    answers: Sequence[Answer],
    text: str,
    at_ms: int,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """`verify_answer` for a batch under one view checkpoint `text`: the
    checkpoint and its cosignatures are checked once. A checkpoint that does
    not verify refuses every answer; an answer that does not verify is its
    own `refused` row (a LedgerError never escapes for one number)."""
    now = at_ms if now_ms is None else now_ms
    try:
        view = open_view(cons, text)
        fresh = check_fresh(view, cons.policy, now)
    except LedgerError as e:
        return [refused(n, e) for n in numbers]
    out = []
    for number, resp in zip(numbers, answers, strict=True):
        try:
            out.append(_verified_answer(cons, number, resp, view, fresh, at_ms))
        except LedgerError as e:
            out.append(refused(number, e))
    return out


def refused(number: str, e: Exception) -> dict[str, Any]:
    """The answer shape of a refused answer: `verified` False, `error` naming why."""
    return {
        "number": number,
        "category": None,
        "risk": None,
        "score": None,
        "markers": [],
        "set_aside": [],
        "appeal": None,
        "view_root": None,
        "verified": False,
        "error": f"{type(e).__name__}: {e}",
    }


class ViewClient:
    """A verifier that keeps state: for each node's view it remembers the
    signing time of the newest checkpoint it has verified, and refuses an
    older one (a node rolling its view back to before a mark or an upheld
    appeal), on top of everything `verify_answer` checks."""

    def __init__(self, cons: Consortium, newest: Mapping[str, int] | None = None) -> None:
        self.cons = cons
        self._newest: dict[str, tuple[int, bytes]] = {
            pid: (t, b"") for pid, t in (newest or {}).items()
        }

    @property
    def newest(self) -> dict[str, int]:
        """Signer id -> signing time (ms) of the newest checkpoint verified: the state to keep."""
        return {pid: t for pid, (t, _) in self._newest.items()}

    def verify(self, number: str, resp: Answer, at_ms: int, now_ms: int) -> dict[str, Any]:
        """`verify_answer` plus the rollback check; the newest time moves
        only when the answer is verified. Raises as `verify_answer` does, and
        ViewRollback."""
        view = open_view(self.cons, resp.view_checkpoint)
        fresh = check_fresh(view, self.cons.policy, now_ms)
        cp = view.checkpoint
        seen, seen_root = self._newest.get(view.signer, (-1, b""))
        if cp.signed_at_ms < seen:
            raise ViewRollback(
                f"{view.signer}'s view checkpoint is signed at {cp.signed_at_ms} ms, "
                f"{(seen - cp.signed_at_ms) // 1000:,} s before one this client has verified"
            )
        if cp.signed_at_ms == seen and seen_root and cp.root != seen_root:
            raise ViewRollback(f"{view.signer} signed two view roots at {cp.signed_at_ms} ms")
        out = _verified_answer(self.cons, number, resp, view, fresh, at_ms)
        if out["verified"]:
            self._newest[view.signer] = (cp.signed_at_ms, cp.root)
        return out


def view_checkpoint_summary(cons: Consortium, text: str) -> dict[str, Any]:
    """What `markex view checkpoint --json` prints of a verified view checkpoint."""
    v = open_view(cons, text)
    return {
        "vector": dict(v.checkpoint.vector),
        "root": v.checkpoint.root.hex(),
        "entries": v.checkpoint.count,
        "signed_at_ms": v.checkpoint.signed_at_ms,
        "signers": [v.signer, *v.cosigned_at],
    }
