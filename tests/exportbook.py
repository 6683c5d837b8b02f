"""A small national view built in memory from signed records (fixed test
keys), with its view checkpoint signed by the institute and cosigned by
members: what tests/test_export.py and tests/test_stats.py export, verify
and count. The figures it should give are worked out by hand in FIGURES."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keys.consortium import Consortium
from ledger import note
from ledger.names import view_origin, witness_name
from ledger.record import REJECT, UPHOLD, WITHDRAW, Correction, Mark, Record
from ledger.view import Entry, NationalView, resolve, sign_view_checkpoint
from tests.conftest import KEYS, NOW, make_consortium

H = 3_600_000
T = NOW - 10 * H            # the first record; the checkpoint is signed at NOW
N = [f"+861380000000{i}" for i in range(1, 6)]
N6 = "+8613800000006"

# By hand, at NOW: N1 marked fraud by two participants (high), N2's only mark
# set aside by an upheld appeal (none), N3 marketing with its appeal rejected
# (medium), N4 fraud with its appeal pending (medium), N5 fraud by the
# institute (high). Decisions took 2 h (N2) and 1 h (N3).
FIGURES: dict[str, Any] = {
    "entries": 5,
    "by_category": {"fraud": 3, "marketing": 1, "none": 1},
    "by_risk": {"none": 1, "medium": 2, "high": 2},
    "marks_by_participant": {"carrier-1": 1, "institute": 1, "internet-1": 2, "internet-2": 1},
    "appeals": {"pending": 1, "decided": 2, "upheld": 1, "rejected": 1, "withdrawn": 0},
    "decision_ms": {"count": 2, "median": 1 * H, "p90": 2 * H},
}


@dataclass
class SmallView:
    cons: Consortium
    view: NationalView
    note: str                       # signed by the institute, cosigned by `cosigners`
    entries: list[Entry]            # in number order


def _records(cons: Consortium, later: bool) -> list[Record]:
    heads: dict[str, tuple[int, bytes]] = {}
    out: list[Record] = []

    def add(issuer: str, at: int, payload: Any) -> Record:
        seq, prev = heads.get(issuer, (0, b""))
        rec = Record.issue(KEYS[issuer], issuer, seq + 1, prev, at, payload,
                           consortium=cons.name)
        heads[issuer] = (seq + 1, rec.id)
        out.append(rec)
        return rec

    m1 = add("carrier-1", T, Mark(N[0], "fraud", 80, 3, T, 0))
    add("internet-1", T, Mark(N[0], "fraud", 60, 1, T, 0))
    m2 = add("internet-1", T, Mark(N[1], "harassment", 60, 1, T, 0))
    a2 = add("carrier-1", T + H, Correction((m2.id,), WITHDRAW, reason="a courier"))
    add("institute", T + 3 * H, Correction(appeal_id=a2.id, outcome=UPHOLD, reason="yes"))
    m3 = add("internet-2", T, Mark(N[2], "marketing", 50, 1, T, 0))
    a3 = add("carrier-2", T + H, Correction((m3.id,), WITHDRAW, reason="no"))
    add("institute", T + 2 * H, Correction(appeal_id=a3.id, outcome=REJECT, reason="no"))
    m4 = add("internet-1", T, Mark(N[3], "fraud", 70, 1, T, 0))
    add("carrier-1", T + 2 * H, Correction((m4.id,), WITHDRAW, reason="pending"))
    add("institute", T, Mark(N[4], "fraud", 90, 1, T, 0))
    if later:   # N1's carrier mark withdrawn by its issuer, a sixth number marked
        add("carrier-1", NOW, Correction((m1.id,), WITHDRAW, reason="mine, wrong"))
        add("internet-2", NOW, Mark(N6, "harassment", 40, 1, NOW, 0))
    return out


def small_view(
    cosigners: tuple[str, ...] = ("carrier-1", "carrier-2"), later: bool = False
) -> SmallView:
    """The view at NOW; `later`: one hour on, with two more records (LATER)."""
    cons = make_consortium()
    view = resolve(_records(cons, later), cons)
    at = NOW + H if later else NOW
    cp = view.checkpoint(view_origin(cons.name, "institute"), at)
    signed = sign_view_checkpoint(cp, KEYS["institute"])
    body = cp.body()
    lines = [note.cosign_line(body, witness_name(cons.name, p), KEYS[p], at // 1000 + 1)
             for p in cosigners]
    text = note.add_signature_lines(signed, lines)
    entries = [view.entry(n) for n in view.numbers()]
    return SmallView(cons, view, text, [e for e in entries if e is not None])
