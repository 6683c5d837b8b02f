"""The call-path screen: "caller A calls B now: allow, label, warn or block, and why?"

`decide(...)` is pure and deterministic: it reads only its arguments (the
consortium's policy, the caller's resolution at the call's time, the
caller's marketer line and the callee's preference in force at that time)
and evaluates ONE rule table, `RULES`, in order; the first rule whose
condition holds gives the action. docs/screen.md writes the same table
(tests/test_screen.py holds the two equal).

    rule (code)                 action  when
    caller-protected            ALLOW   the caller is one of policy.protected_numbers
    caller-risk-block           BLOCK   caller risk at/above policy.screen_block_risk
    callee-refused-industry     BLOCK   the caller is marketing (its line's industry, or
                                        its marks' category by policy.marketing_categories)
                                        and the callee's preference refuses it now
    caller-risk-warn            WARN    caller risk at/above policy.screen_warn_risk
    caller-category             LABEL   the caller's resolution has a category
    caller-registered-marketer  LABEL   the caller has a live marketer line
    caller-unknown              ALLOW   nothing else fired

Times are China Standard Time (UTC+8, no daylight saving) for time bands and
day types; `weekday` is Monday to Friday, `weekend` Saturday and Sunday.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ledger.consent.facts import LineFact, PreferenceFact
from ledger.errors import BadInput, LedgerError, NotAllowed
from ledger.payloads.preference import ALL, MODES

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.view.resolution import Resolution

ALLOW, LABEL, WARN, BLOCK = "ALLOW", "LABEL", "WARN", "BLOCK"
ACTIONS = (ALLOW, LABEL, WARN, BLOCK)
RISK_LEVELS = ("none", "medium", "high")
RISK_OFF = "off"
SCREENING_ROLES = frozenset({"carrier", "institute", "callcenter"})
MARKETING_FALLBACK = "marketing"   # the label of a registered line whose industry no category maps
CST_OFFSET_MS = 8 * 3600 * 1000    # China Standard Time: UTC+8 all year
_DAY_MS = 86_400_000
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Reason codes: stable strings (docs/screen.md). The first reason of a
# decision is the rule that fired; the others name the facts it rests on.
CALLER_PROTECTED = "caller-protected"
CALLER_RISK_BLOCK = "caller-risk-block"
CALLEE_REFUSED = "callee-refused-industry"
CALLER_RISK_WARN = "caller-risk-warn"
CALLER_CATEGORY = "caller-category"
CALLER_REGISTERED = "caller-registered-marketer"
CALLER_UNKNOWN = "caller-unknown"
# Supporting reasons (never first).
CALLER_LINE = "caller-line"              # the registration a refusal or a label rests on
# the marks that made an unregistered caller marketing
CALLER_MARKED_MARKETING = "caller-marked-marketing"
REASON_CODES = (CALLER_PROTECTED, CALLER_RISK_BLOCK, CALLEE_REFUSED, CALLER_RISK_WARN,
                CALLER_CATEGORY, CALLER_REGISTERED, CALLER_UNKNOWN, CALLER_LINE,
                CALLER_MARKED_MARKETING)


class NotAScreener(NotAllowed):
    """The asking participant's role does not screen (only carriers, the
    institute and call centres do)."""


class BadCallMode(BadInput):
    """A call mode that is not voice or sms."""


class NoMembersKey(LedgerError):
    """This node holds no members' key (or no consent state): it cannot read
    preferences, so it answers no screen rather than a wrong one
    (FAILED_PRECONDITION, node/status.py)."""


@dataclass(frozen=True, slots=True)
class Reason:
    code: str                     # one of REASON_CODES
    records: tuple[bytes, ...]    # the record ids it rests on (marks, a preference, a line)
    detail: str                   # one sentence

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "records": [r.hex() for r in self.records],
                "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Decision:
    """One call's answer. `reasons[0]` is the rule that fired; `category` is
    the taxonomy id the callee's phone shows ("" none); `redress` says where
    the caller appeals ("" when the call is simply allowed)."""

    action: str
    category: str
    risk: str
    reasons: tuple[Reason, ...]
    redress: str

    @property
    def code(self) -> str:
        """The code of the rule that fired."""
        return self.reasons[0].code

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "category": self.category, "risk": self.risk,
                "reasons": [r.to_json() for r in self.reasons], "redress": self.redress}


@dataclass(frozen=True, slots=True)
class Call:
    """What every rule reads: the call and the facts at its time."""

    cons: Consortium
    caller: str
    callee: str
    at_ms: int
    mode: str
    res: Resolution | None
    line: LineFact | None
    preference: PreferenceFact | None


# A rule's condition returns None (does not fire) or (category, reasons).
Fired = tuple[str, tuple[Reason, ...]]


@dataclass(frozen=True)
class Rule:
    code: str
    action: str
    when: str                     # the condition, as docs/screen.md writes it
    names: str                    # what its reasons name
    test: Callable[[Call], Fired | None]


# ------------------------------------------------------------------ facts


def risk_at_least(risk: str, threshold: str) -> bool:
    """`risk` (none|medium|high) is at or above `threshold` (a level, or "off": never)."""
    if threshold == RISK_OFF:
        return False
    return RISK_LEVELS.index(risk) >= RISK_LEVELS.index(threshold)


def cst_minute_and_day(at_ms: int) -> tuple[int, str]:
    """The minute of the day (0..1439) and the weekday (mon..sun) at `at_ms`, CST."""
    local = at_ms + CST_OFFSET_MS
    day, ms = divmod(local, _DAY_MS)
    return ms // 60_000, _WEEKDAYS[(day + 3) % 7]   # 1970-01-01 was a Thursday


def _day_matches(day: str, types: tuple[str, ...]) -> bool:
    for t in types:
        if t == day or (t == "weekday" and day in _WEEKDAYS[:5]) or (
            t == "weekend" and day in _WEEKDAYS[5:]
        ):
            return True
    return False


def allowance_holds(p: PreferenceFact, at_ms: int) -> bool:
    """Whether `at_ms` is inside the preference's allowance: one of its bands
    (every minute when it lists none) on one of its day types (every day when
    it lists none). A preference with neither bands nor days allows nothing."""
    if not p.allowed and not p.days:
        return False
    minute, day = cst_minute_and_day(at_ms)
    if p.days and not _day_matches(day, p.days):
        return False
    return not p.allowed or any(s <= minute < e for s, e in p.allowed)


def in_force(p: PreferenceFact, at_ms: int) -> bool:
    return p.effective_from <= at_ms and (not p.until or at_ms < p.until)


def refuses(p: PreferenceFact | None, industries: tuple[str, ...], mode: str, at_ms: int) -> bool:
    """Whether preference `p` refuses marketing of `industries` (() an unknown
    industry: refused only by "all") by `mode` at `at_ms`. A revocation
    refuses nothing; neither does a preference outside its effective span."""
    if p is None or not p.refuse or not in_force(p, at_ms):
        return False
    if p.modes and mode not in p.modes:
        return False
    hit = ALL in p.refuse or any(i in p.refuse for i in industries)
    return hit and not allowance_holds(p, at_ms)


def _markers(res: Resolution | None, category: str | None = None) -> tuple[bytes, ...]:
    if res is None:
        return ()
    return tuple(m.record_id for m in res.markers if category is None or m.category == category)


def marketing_of(c: Call) -> tuple[tuple[str, ...], Reason] | None:
    """The industries the caller markets for and the reason naming why: its
    live registration's industry; unregistered, the industries its resolved
    category maps to by policy.marketing_categories. None: not marketing."""
    ln = c.line
    if ln is not None and (not ln.ended_at or c.at_ms < ln.ended_at):
        what = f"prefix {ln.number}" if ln.prefix else ln.number
        return (ln.industry,), Reason(
            CALLER_LINE, (ln.id,),
            f"{what} is registered to {ln.enterprise} ({ln.uscc}) for {ln.industry} marketing "
            f"by {ln.issuer}")
    cats: dict[str, tuple[str, ...]] = c.cons.policy.marketing_categories
    if c.res is not None and c.res.category in cats:
        cat = c.res.category
        inds = tuple(cats[cat])
        shown = ", ".join(inds) if inds else "an unknown industry"
        return inds, Reason(
            CALLER_MARKED_MARKETING, _markers(c.res, cat),
            f"unregistered, marked {cat}: counts as marketing of {shown}")
    return None


def _risk_reason(c: Call, code: str, threshold: str, extra: str) -> Fired | None:
    if c.res is None or not risk_at_least(c.res.risk, threshold):
        return None
    return c.res.category or "", (Reason(
        code, _markers(c.res),
        f"{c.caller} is {c.res.risk} risk ({c.res.category}, score {c.res.score}, "
        f"{len(c.res.markers)} marks){extra}"),)


# ------------------------------------------------------------------ the rules


def _protected(c: Call) -> Fired | None:
    entry = c.cons.policy.protecting(c.caller)
    if entry is None:
        return None
    return "", (Reason(CALLER_PROTECTED, (),
                       f"{c.caller} is a protected number ({entry} in protected_numbers)"),)


def _risk_block(c: Call) -> Fired | None:
    return _risk_reason(c, CALLER_RISK_BLOCK, c.cons.policy.screen_block_risk,
                        ": blocked whatever the callee's preferences")


def _refused(c: Call) -> Fired | None:
    m = marketing_of(c)
    p = c.preference
    if m is None or p is None or not refuses(p, m[0], c.mode, c.at_ms):
        return None
    industries, basis = m
    what = ALL if ALL in p.refuse else ", ".join(i for i in industries if i in p.refuse)
    category = c.res.category if c.res is not None and c.res.category else ""
    return category or _label_for(c, industries), (
        Reason(CALLEE_REFUSED, (p.id,),
               f"the callee refuses {what} marketing by {c.mode} (preference of {p.issuer} "
               f"#{p.seq}, in force since {p.effective_from})"),
        basis,
    )


def _risk_warn(c: Call) -> Fired | None:
    return _risk_reason(c, CALLER_RISK_WARN, c.cons.policy.screen_warn_risk, "")


def _category(c: Call) -> Fired | None:
    if c.res is None or not c.res.category:
        return None
    cat = c.res.category
    reasons = [Reason(CALLER_CATEGORY, _markers(c.res, cat),
                      f"{c.caller} is labelled {cat} (score {c.res.score})")]
    m = marketing_of(c)
    if m is not None and m[1].code == CALLER_LINE:
        reasons.append(m[1])
    return cat, tuple(reasons)


def _registered(c: Call) -> Fired | None:
    m = marketing_of(c)
    if m is None or m[1].code != CALLER_LINE:
        return None
    label = _label_for(c, m[0])
    first = Reason(CALLER_REGISTERED, m[1].records,
                   f"a registered {m[0][0]} marketer the callee does not refuse now: "
                   f"labelled {label}")
    return label, (first, m[1])


def _unknown(c: Call) -> Fired | None:
    return "", (Reason(CALLER_UNKNOWN, (), "no rule applies: the caller is not marked"),)


def _label_for(c: Call, industries: tuple[str, ...]) -> str:
    """The category a marketer of `industries` is shown with: the first
    (sorted) category of policy.marketing_categories mapping to its industry,
    else "marketing"."""
    cats: dict[str, tuple[str, ...]] = c.cons.policy.marketing_categories
    for cat in sorted(cats):
        if any(i in cats[cat] for i in industries):
            return cat
    return MARKETING_FALLBACK


RULES: tuple[Rule, ...] = (
    Rule(CALLER_PROTECTED, ALLOW,
         "the caller is one of policy.protected_numbers (exact or prefix)",
         "the protected_numbers entry", _protected),
    Rule(CALLER_RISK_BLOCK, BLOCK,
         "the caller's risk is at or above policy.screen_block_risk, whatever the "
         "callee's preferences",
         "the marks that count (Resolution.markers)", _risk_block),
    Rule(CALLEE_REFUSED, BLOCK,
         "the caller is marketing (its live line's industry; unregistered, its "
         "category's industries by policy.marketing_categories, () refused only by "
         "\"all\") and the callee's preference in force refuses that industry for "
         "this mode, outside its allowed bands and day types (CST)",
         "the preference, then the line (caller-line) or the marks "
         "(caller-marked-marketing)", _refused),
    Rule(CALLER_RISK_WARN, WARN,
         "the caller's risk is at or above policy.screen_warn_risk",
         "the marks that count", _risk_warn),
    Rule(CALLER_CATEGORY, LABEL,
         "the caller's resolution has a category",
         "the marks of that category (and the line, when registered)", _category),
    Rule(CALLER_REGISTERED, LABEL,
         "the caller has a live marketer line the callee does not refuse now "
         "(labelled with the category marketing_categories maps its industry from, "
         "else marketing)",
         "the line", _registered),
    Rule(CALLER_UNKNOWN, ALLOW, "nothing above applies", "nothing", _unknown),
)


def redress(cons: Consortium, caller: str) -> str:
    """policy.redress_text with the caller's number in place of {caller}."""
    text: str = cons.policy.redress_text
    return text.replace("{caller}", caller)


def decide(
    cons: Consortium,
    caller: str,
    callee: str,
    at_ms: int,
    mode: str,
    caller_resolution: Resolution | None,
    line: LineFact | None,
    preference: PreferenceFact | None,
) -> Decision:
    """The decision for `caller` (E.164) calling `callee` (E.164) at `at_ms`
    by `mode` (voice|sms): the first rule of RULES that fires. The facts are
    the caller's resolution at `at_ms` (None: no view entry), the caller's
    marketer line at `at_ms` and the callee's preference in force at `at_ms`
    (either None). Raises BadCallMode for another mode."""
    if mode not in MODES:
        raise BadCallMode(f"call mode {mode!r} is not one of {', '.join(MODES)}")
    c = Call(cons, caller, callee, at_ms, mode, caller_resolution, line, preference)
    risk = caller_resolution.risk if caller_resolution is not None else "none"
    for rule in RULES:
        fired = rule.test(c)
        if fired is not None:
            category, reasons = fired
            return Decision(rule.action, category, risk, reasons,
                            "" if rule.action == ALLOW else redress(cons, caller))
    raise AssertionError("the last rule always fires")  # pragma: no cover
