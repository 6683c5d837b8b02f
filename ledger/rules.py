"""Bounds on the times an issuer chooses, the one home of these rules: the
ledger refuses a record that breaks one (`check_times` raises), the view
ignores it (`time_violation` says why), the auditor reports it.

- a mark is observed no later than it was issued;
- a mark expires at most `policy.max_expiry_ms` after it was observed;
- a reassignment takes effect at most `policy.reassignment_window_ms` before
  it was issued, and at most `policy.clock_skew_ms` after;
- a preference takes effect no earlier than `policy.clock_skew_ms` before it
  was issued (no backdating: a refusal cannot reach into calls already
  screened), and at most `policy.preference_max_ahead_ms` after (0: when issued).

Feed-order rules (issued-at never decreases along a feed) need the previous
record and live with the feed checks in `ledger.log`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledger.errors import MalformedRecord
from ledger.payloads.preference import Preference
from ledger.record import Mark, Payload, Reassignment

if TYPE_CHECKING:
    from keys.consortium import Policy


def time_violation(issued_at_ms: int, payload: Payload, policy: Policy) -> str | None:
    """Why the record's own times break a bound, or None when they do not."""
    if isinstance(payload, Mark):
        if payload.observed_at_ms > issued_at_ms:
            return (
                f"a mark is observed at or before it is issued; observed_at is "
                f"{payload.observed_at_ms - issued_at_ms} ms after issued_at"
            )
        if payload.expires_at_ms and (
            payload.expires_at_ms - payload.observed_at_ms > policy.max_expiry_ms
        ):
            return (
                f"a mark expires at most {policy.max_expiry_ms // 86_400_000} days after "
                "it was observed (policy max_expiry_ms)"
            )
        return None
    if isinstance(payload, Reassignment):
        if payload.effective_at_ms < issued_at_ms - policy.reassignment_window_ms:
            return (
                f"a reassignment takes effect at most "
                f"{policy.reassignment_window_ms // 86_400_000} days before it is issued "
                "(policy reassignment_window_ms)"
            )
        if payload.effective_at_ms > issued_at_ms + policy.clock_skew_ms:
            return "a reassignment cannot take effect after it is issued"
        return None
    if isinstance(payload, Preference) and payload.effective_from_ms:
        if payload.effective_from_ms < issued_at_ms - policy.clock_skew_ms:
            return (
                f"a preference takes effect no earlier than it is issued (less the clock "
                f"skew, {policy.clock_skew_ms} ms); effective_from is "
                f"{issued_at_ms - payload.effective_from_ms} ms before issued_at"
            )
        if payload.effective_from_ms > issued_at_ms + policy.preference_max_ahead_ms:
            return (
                f"a preference takes effect at most "
                f"{policy.preference_max_ahead_ms // 86_400_000} days after it is issued "
                "(policy preference_max_ahead_ms)"
            )
        return None
    return None


def check_times(issued_at_ms: int, payload: Payload, policy: Policy) -> None:
    """Raise MalformedRecord when the record's own times break a bound."""
    why = time_violation(issued_at_ms, payload, policy)
    if why is not None:
        raise MalformedRecord(why)
