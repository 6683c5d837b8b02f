"""Cosignature counting on a log's or a view's checkpoint: which members'
witness keys (never the log's own, never an auditor's) validly cosigned it,
and when the newest of them did. The quorum is `policy.cosign_quorum`."""

from __future__ import annotations

import contextlib

from keys.consortium import Consortium
from ledger import note
from ledger.audit.report import AuditReport
from ledger.errors import LedgerError
from ledger.names import witness_name


def _witnesses(cons: Consortium, log: str) -> dict[str, bytes]:
    return {witness_name(cons.name, p.id): p.public_key for p in cons.witnesses if p.id != log}


def cosigners(report: AuditReport, cons: Consortium, log: str, text: str, where: str) -> list[str]:
    """Names of members with a valid cosignature on `text`; a bad one is a finding."""
    try:
        return note.count_cosignatures(text, _witnesses(cons, log))
    except LedgerError as e:
        report.error("cosignature", f"{type(e).__name__}: {e}", where=where)
        return []


def newest_cosignature(cons: Consortium, log: str, text: str) -> int:
    """The newest timestamp (POSIX s) of a valid member cosignature on `text`
    (0: none; a bad line is `cosigners`' finding, not counted here)."""
    witnesses = _witnesses(cons, log)
    known = {(n, note.cosignature_key_id(n, k)): (n, k) for n, k in witnesses.items()}
    newest = 0
    try:
        parsed = note.Note.parse(text)
    except LedgerError:
        return 0
    for sig in parsed.signatures:
        w = known.get((sig.name, sig.key_id))
        if w is None:
            continue
        with contextlib.suppress(LedgerError):
            newest = max(newest, note.verify_cosignature(parsed.text, sig, w[0], w[1]))
    return newest
