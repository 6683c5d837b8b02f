"""The complaint policy values (issue 16) and their checks.

Kept beside keys/consortium.py (which holds the Policy fields) so that file
stays one concern; the meaning of each value is in docs/complaints.md:

- `complaint_window_ms`: a complaint is filed at most this long after the
  call it reports (TRAI's 2025 rules: within 7 days of the call);
- `complaint_ack_ms`, `complaint_close_ms`: the SLA clock of a complaint at
  the carrier it is addressed to: acknowledged (any handling of it) within
  24 hours, closed (a finding) within 5 days of its filing;
- `complaint_risk_complainants`, `complaint_risk_window_ms`, `complaint_risk`:
  a number reported by at least that many distinct complainants about calls
  within the window has at least that risk in its entry's answer (TRAI: 5
  complaints in 10 days trigger action); 0 complainants turns the rule off.
"""

from __future__ import annotations

from typing import Protocol

from keys import ConfigError

_HOUR = 3_600_000
_DAY = 24 * _HOUR
COMPLAINT_RISKS = ("medium", "high")  # a rule that raises to "none" would raise nothing

DEFAULT_COMPLAINT_WINDOW_MS = 7 * _DAY
DEFAULT_COMPLAINT_ACK_MS = 24 * _HOUR
DEFAULT_COMPLAINT_CLOSE_MS = 5 * _DAY
DEFAULT_COMPLAINT_RISK_COMPLAINANTS = 5
DEFAULT_COMPLAINT_RISK_WINDOW_MS = 10 * _DAY
DEFAULT_COMPLAINT_RISK = "medium"
# An entry keeps 64 complaints, at most 4 of one complainant
# (ledger.view.parts.MAX_ENTRY_COMPLAINTS, PER_COMPLAINANT): its count of
# distinct complainants is exact up to 16, so the rule asks for at most 16.
MAX_COMPLAINT_RISK_COMPLAINANTS = 16


class _ComplaintPolicy(Protocol):
    complaint_window_ms: int
    complaint_ack_ms: int
    complaint_close_ms: int
    complaint_risk_complainants: int
    complaint_risk_window_ms: int
    complaint_risk: str


def check_policy_complaints(policy: _ComplaintPolicy) -> None:
    """Each complaint value in its range (ConfigError naming it and the range).
    The integers' types are checked with the rest of the policy."""
    if policy.complaint_risk not in COMPLAINT_RISKS:
        raise ConfigError(f"policy complaint_risk is {policy.complaint_risk!r}; it must be "
                          f"one of {', '.join(COMPLAINT_RISKS)}")
    bounds = (
        ("complaint_window_ms", _HOUR, 365 * _DAY, ""),
        ("complaint_ack_ms", _HOUR, 30 * _DAY, ""),
        ("complaint_close_ms", policy.complaint_ack_ms, 365 * _DAY,
         "complaint_ack_ms: a complaint is acknowledged before it is closed"),
        ("complaint_risk_complainants", 0, MAX_COMPLAINT_RISK_COMPLAINANTS,
         "0: the rule is off; an entry counts up to 16 distinct complainants exactly"),
        ("complaint_risk_window_ms", _HOUR, 365 * _DAY, ""),
    )
    for name, low, high, why in bounds:
        v = getattr(policy, name)
        if isinstance(v, bool) or not isinstance(v, int):
            continue  # Policy.__post_init__ names the type error
        if not low <= v <= high:
            note = f" ({why})" if why else ""
            raise ConfigError(f"policy {name} is {v}; it must be {low}..{high}{note}")
