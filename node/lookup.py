"""Verified lookups over gRPC: ask a node's Public service about a number and
verify the answer with ledger/verify.py (the pure verifier an app imports
without gRPC). The verifier's names are re-exported here for the callers
that import them from node.lookup."""

from __future__ import annotations

from typing import Any

from keys.consortium import Consortium
from ledger import verify
from ledger.errors import LedgerError
from ledger.numbers import normalize
from ledger.verify import (
    CosignedView,
    StaleView,
    ViewRollback,
    WrongNumber,
    check_fresh,
    open_cosigned_view,
    open_view,
    verify_answer,
    view_checkpoint_summary,
)
from markex.v1 import service_pb2 as pb

__all__ = [
    "CosignedView",
    "StaleView",
    "ViewClient",
    "ViewRollback",
    "WrongNumber",
    "check_fresh",
    "lookup_verified",
    "open_cosigned_view",
    "open_view",
    "verify_answer",
    "view_checkpoint_summary",
]

LOOKUP_TIMEOUT_S = 10


def _ask(stub: Any, number: str, at_ms: int) -> tuple[str, pb.LookupResponse]:
    """Normalize `number` (InvalidNumber for a bad one) and ask the node about it."""
    asked = normalize(number)
    return asked, stub.Lookup(pb.LookupRequest(number=asked, at_ms=at_ms), timeout=LOOKUP_TIMEOUT_S)


def lookup_verified(
    stub: Any, cons: Consortium, number: str, at_ms: int, now_ms: int | None = None
) -> dict[str, Any]:
    """Ask a node about `number` (normalized first; InvalidNumber for a bad
    one) and verify the answer against what was asked. A refused answer comes
    back as `verified: False` with `error` naming the reason."""
    asked, resp = _ask(stub, number, at_ms)
    try:
        return verify_answer(cons, asked, resp, resp.view_checkpoint, at_ms, now_ms)
    except LedgerError as e:
        return verify.refused(asked, e)


class ViewClient(verify.ViewClient):
    """ledger.verify.ViewClient, which also asks a node itself."""

    def lookup(self, stub: Any, number: str, at_ms: int, now_ms: int) -> dict[str, Any]:
        """Ask and verify, as `lookup_verified` does, with the rollback check."""
        asked, resp = _ask(stub, number, at_ms)
        try:
            return self.verify(asked, resp, at_ms, now_ms)
        except LedgerError as e:
            return verify.refused(asked, e)
