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
    caller-enterprise-listed    BLOCK   its live line's enterprise is on the bad list now
                                        and policy.screen_badlist_action is block
    callee-refused-industry     BLOCK   the caller is marketing (its line's industry, or
                                        its marks' category by policy.marketing_categories)
                                        and the callee's preference refuses it now
                                        (ledger/consent/rules.py refuses)
    caller-enterprise-listed    WARN    the same listing, policy.screen_badlist_action warn
    caller-risk-warn            WARN    caller risk at/above policy.screen_warn_risk
    caller-category             LABEL   the caller's resolution has a category
    caller-registered-marketer  LABEL   the caller has a live marketer line
    caller-unknown              ALLOW   nothing else fired

Whether a preference refuses a call (modes, allowed time bands in China
Standard Time, day types) is the consent state's rule, ledger/consent/rules.py
`refuses` (docs/consent.md): one home, asked here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ledger.consent import rules as consent_rules
from ledger.consent.facts import LineFact, PreferenceFact
from ledger.errors import BadInput, LedgerError, NotAllowed
from ledger.payloads.preference import ALL, MODES

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.complaints.facts import SanctionFact


class CallerMark(Protocol):
    @property
    def record_id(self) -> bytes: ...
    @property
    def category(self) -> str: ...


class CallerView(Protocol):
    """What the rules read of the caller's resolution at the call's time: a
    `ledger.view.Resolution`, or the screen's summary of it
    (`ledger.view.summary.CallerFacts`, the same fields)."""

    @property
    def category(self) -> str | None: ...
    @property
    def risk(self) -> str: ...
    @property
    def score(self) -> int: ...
    @property
    def markers(self) -> Sequence[CallerMark]: ...

ALLOW, LABEL, WARN, BLOCK = "ALLOW", "LABEL", "WARN", "BLOCK"
ACTIONS = (ALLOW, LABEL, WARN, BLOCK)
RISK_LEVELS = ("none", "medium", "high")
RISK_OFF = "off"
SCREENING_ROLES = frozenset({"carrier", "institute", "callcenter"})
MARKETING_FALLBACK = "marketing"   # the label of a registered line whose industry no category maps

# Reason codes: stable strings (docs/screen.md). The first reason of a
# decision is the rule that fired; the others name the facts it rests on.
CALLER_PROTECTED = "caller-protected"
CALLER_RISK_BLOCK = "caller-risk-block"
CALLER_LISTED = "caller-enterprise-listed"
CALLEE_REFUSED = "callee-refused-industry"
CALLER_RISK_WARN = "caller-risk-warn"
CALLER_CATEGORY = "caller-category"
CALLER_REGISTERED = "caller-registered-marketer"
CALLER_UNKNOWN = "caller-unknown"
# Supporting reasons (never first).
CALLER_LINE = "caller-line"              # the registration a refusal or a label rests on
# the marks that made an unregistered caller marketing
CALLER_MARKED_MARKETING = "caller-marked-marketing"
REASON_CODES = (CALLER_PROTECTED, CALLER_RISK_BLOCK, CALLER_LISTED, CALLEE_REFUSED,
                CALLER_RISK_WARN, CALLER_CATEGORY, CALLER_REGISTERED, CALLER_UNKNOWN, CALLER_LINE,
                CALLER_MARKED_MARKETING)


class NotAScreener(NotAllowed):
    """The asking participant's role does not screen (only carriers, the
    institute and call centres do)."""


class BadCallMode(BadInput):
    """A call mode that is not voice or sms."""


class NoMembersKey(LedgerError):
    """This node holds no members' key: it cannot read
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


class Facts(NamedTuple):
    """What every rule reads: the call and the facts at its time (a
    NamedTuple, not a frozen dataclass: built once per call on the call
    path, where a frozen dataclass's __init__ costs four times as much)."""

    cons: Consortium
    caller: str
    callee: str
    at_ms: int
    mode: str
    res: CallerView | None
    line: LineFact | None
    preference: PreferenceFact | None
    marketing: Marketing | None          # marketing_of(...), computed once per call
    listed: SanctionFact | None = None   # the listing in force of the caller's line's enterprise


# What the caller markets for, and the reason naming why (None: not marketing).
Marketing = tuple[tuple[str, ...], "Reason"]
# A rule's condition returns None (does not fire) or (category, reasons).
Fired = tuple[str, tuple[Reason, ...]]


@dataclass(frozen=True)
class Rule:
    code: str
    action: str
    when: str                     # the condition, as docs/screen.md writes it
    names: str                    # what its reasons name
    test: Callable[[Facts], Fired | None]


# ------------------------------------------------------------------ facts


def risk_at_least(risk: str, threshold: str) -> bool:
    """`risk` (none|medium|high) is at or above `threshold` (a level, or "off": never)."""
    if threshold == RISK_OFF:
        return False
    return RISK_LEVELS.index(risk) >= RISK_LEVELS.index(threshold)


def refuses_any(p: PreferenceFact | None, industries: tuple[str, ...], mode: str,
                at_ms: int) -> bool:
    """Whether the preference in force `p` refuses marketing of one of
    `industries` (() an unknown industry: refused only by "all") by `mode`
    at `at_ms`: the consent state's rule (ledger/consent/rules.py `refuses`,
    docs/consent.md), asked per industry."""
    if not industries:
        return consent_rules.refuses(p, None, mode, at_ms)
    return any(consent_rules.refuses(p, i, mode, at_ms) for i in industries)


@lru_cache(maxsize=4096)   # a preference's or a sanction's time recurs from call to call
def _iso(ms: int) -> str:
    """A time in a reason's sentence: ISO 8601, UTC."""
    t = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
    return t.replace("+00:00", "Z")


def _markers(res: CallerView | None, category: str | None = None) -> tuple[bytes, ...]:
    if res is None:
        return ()
    return tuple(m.record_id for m in res.markers if category is None or m.category == category)


def _live(ln: LineFact | None, at_ms: int) -> bool:
    return ln is not None and (not ln.ended_at or at_ms < ln.ended_at)


def is_marketing(cons: Consortium, res: CallerView | None, ln: LineFact | None,
                 at_ms: int) -> bool:
    """`marketing_of(...) is not None`, without building its reason. Only a
    marketing caller's decision reads the callee's preference (rule 4), so a
    screen may skip reading it for any other caller: `decide` answers the
    same with the preference or None (tests/test_screen.py checks it)."""
    return _live(ln, at_ms) or (
        res is not None and res.category in cons.policy.marketing_categories)


def marketing_of(cons: Consortium, res: CallerView | None, ln: LineFact | None,
                 at_ms: int) -> Marketing | None:
    """The industries the caller markets for and the reason naming why: its
    live registration's industry; unregistered, the industries its resolved
    category maps to by policy.marketing_categories. None: not marketing."""
    if ln is not None and _live(ln, at_ms):
        return (ln.industry,), _line_reason(ln)
    cats: dict[str, tuple[str, ...]] = cons.policy.marketing_categories
    if res is not None and res.category in cats:
        cat = res.category
        inds = tuple(cats[cat])
        shown = ", ".join(inds) if inds else "an unknown industry"
        return inds, Reason(
            CALLER_MARKED_MARKETING, _markers(res, cat),
            f"unregistered, marked {cat}: counts as marketing of {shown}")
    return None


@lru_cache(maxsize=4096)   # a line's reason is the same at every call of its numbers
def _line_reason(ln: LineFact) -> Reason:
    what = f"prefix {ln.number}" if ln.prefix else ln.number
    return Reason(
        CALLER_LINE, (ln.id,),
        f"{what} is registered to {ln.enterprise} ({ln.uscc}) for {ln.industry} marketing "
        f"by {ln.issuer}")


def _risk_reason(c: Facts, code: str, threshold: str, extra: str) -> Fired | None:
    if c.res is None or not risk_at_least(c.res.risk, threshold):
        return None
    return c.res.category or "", (Reason(
        code, _markers(c.res),
        f"{c.caller} is {c.res.risk} risk ({c.res.category}, score {c.res.score}, "
        f"{len(c.res.markers)} marks){extra}"),)


# ------------------------------------------------------------------ the rules


def _protected(c: Facts) -> Fired | None:
    entry = c.cons.policy.protecting(c.caller)
    if entry is None:
        return None
    return "", (Reason(CALLER_PROTECTED, (),
                       f"{c.caller} is a protected number ({entry} in protected_numbers)"),)


def _risk_block(c: Facts) -> Fired | None:
    return _risk_reason(c, CALLER_RISK_BLOCK, c.cons.policy.screen_block_risk,
                        ": blocked whatever the callee's preferences")


def _listed(c: Facts, action: str) -> Fired | None:
    """The caller's live line's enterprise is listed at the call's time, and
    the policy's bad-list action is `action` (one rule per place in the order)."""
    s, ln, m = c.listed, c.line, c.marketing
    if s is None or ln is None or m is None or c.cons.policy.screen_badlist_action != action:
        return None
    if not _live(ln, c.at_ms) or s.uscc != ln.uscc or s.sanction.delist or (
            s.sanction.listed_at_ms > c.at_ms):
        return None          # only a listing in force of this very line's enterprise counts
    category = c.res.category if c.res is not None and c.res.category else ""
    sc = s.sanction
    return category or _label_for(c, (ln.industry,)), (
        Reason(CALLER_LISTED, (s.id,),
               f"{sc.enterprise} ({sc.uscc}) is on the bad list since {_iso(sc.listed_at_ms)} "
               f"under {sc.document}: {sc.reason} (sanction of {s.issuer} #{s.seq})"),
        m[1],
    )


def _refused(c: Facts) -> Fired | None:
    m = c.marketing
    p = c.preference
    if m is None or p is None or not refuses_any(p, m[0], c.mode, c.at_ms):
        return None
    industries, basis = m
    what = ALL if ALL in p.refuse else ", ".join(i for i in industries if i in p.refuse)
    category = c.res.category if c.res is not None and c.res.category else ""
    return category or _label_for(c, industries), (
        Reason(CALLEE_REFUSED, (p.id,),
               f"the callee refuses {what} marketing by {c.mode} (preference of {p.issuer} "
               f"#{p.seq}, in force since {_iso(p.effective_from)})"),
        basis,
    )


def _risk_warn(c: Facts) -> Fired | None:
    return _risk_reason(c, CALLER_RISK_WARN, c.cons.policy.screen_warn_risk, "")


def _category(c: Facts) -> Fired | None:
    if c.res is None or not c.res.category:
        return None
    cat = c.res.category
    reasons = [Reason(CALLER_CATEGORY, _markers(c.res, cat),
                      f"{c.caller} is labelled {cat} (score {c.res.score})")]
    m = c.marketing
    if m is not None and m[1].code == CALLER_LINE:
        reasons.append(m[1])
    return cat, tuple(reasons)


def _registered(c: Facts) -> Fired | None:
    m = c.marketing
    if m is None or m[1].code != CALLER_LINE:
        return None
    label = _label_for(c, m[0])
    first = Reason(CALLER_REGISTERED, m[1].records,
                   f"a registered {m[0][0]} marketer the callee does not refuse now: "
                   f"labelled {label}")
    return label, (first, m[1])


def _unknown(c: Facts) -> Fired | None:
    return "", (Reason(CALLER_UNKNOWN, (), "no rule applies: the caller is not marked"),)


def _label_for(c: Facts, industries: tuple[str, ...]) -> str:
    """The category a marketer of `industries` is shown with: the first
    (sorted) category of policy.marketing_categories mapping to its industry,
    else "marketing"."""
    cats: dict[str, tuple[str, ...]] = c.cons.policy.marketing_categories
    kept = _LABELS.get((id(cats), industries))
    if kept is not None and kept[0] is cats:    # the same policy's very mapping
        return kept[1]
    label = next((cat for cat in sorted(cats) if any(i in cats[cat] for i in industries)),
                 MARKETING_FALLBACK)
    if len(_LABELS) >= 4096:
        _LABELS.clear()
    _LABELS[(id(cats), industries)] = (cats, label)   # cats kept: its id is not reused
    return label


# (id of a policy's marketing_categories, industries) -> (that mapping, its label)
_LABELS: dict[tuple[int, tuple[str, ...]], tuple[dict[str, tuple[str, ...]], str]] = {}


RULES: tuple[Rule, ...] = (
    Rule(CALLER_PROTECTED, ALLOW,
         "the caller is one of policy.protected_numbers (exact or prefix)",
         "the protected_numbers entry", _protected),
    Rule(CALLER_RISK_BLOCK, BLOCK,
         "the caller's risk is at or above policy.screen_block_risk, whatever the "
         "callee's preferences",
         "the marks that count (the resolution's markers)", _risk_block),
    Rule(CALLER_LISTED, BLOCK,
         "the caller's live marketer line's enterprise (its credit code) is listed on the "
         "bad list at the call's time, and policy.screen_badlist_action is block",
         "the sanction in force, then the line (caller-line)",
         lambda c: _listed(c, BLOCK.lower())),
    Rule(CALLEE_REFUSED, BLOCK,
         "the caller is marketing (its live line's industry; unregistered, its "
         "category's industries by policy.marketing_categories, () refused only by "
         "\"all\") and the callee's preference in force refuses that industry for "
         "this mode, outside its allowed bands and day types (CST)",
         "the preference, then the line (caller-line) or the marks "
         "(caller-marked-marketing)", _refused),
    Rule(CALLER_LISTED, WARN,
         "the same listing, and policy.screen_badlist_action is warn",
         "the sanction in force, then the line (caller-line)",
         lambda c: _listed(c, WARN.lower())),
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
    caller_resolution: CallerView | None,
    line: LineFact | None,
    preference: PreferenceFact | None,
    listed: SanctionFact | None = None,
) -> Decision:
    """The decision for `caller` (E.164) calling `callee` (E.164) at `at_ms`
    by `mode` (voice|sms): the first rule of RULES that fires. The facts are
    the caller's resolution at `at_ms` (None: no view entry), the caller's
    marketer line at `at_ms` and the callee's preference in force at `at_ms`
    (either None); `listed`, the bad list's listing in force at `at_ms` of
    the line's enterprise (ledger/complaints `listing(uscc).in_force(at_ms)`),
    or None. Raises BadCallMode for another mode."""
    if mode not in MODES:
        raise BadCallMode(f"call mode {mode!r} is not one of {', '.join(MODES)}")
    c = Facts(cons, caller, callee, at_ms, mode, caller_resolution, line, preference,
              marketing_of(cons, caller_resolution, line, at_ms), listed)
    risk = caller_resolution.risk if caller_resolution is not None else "none"
    for rule in RULES:
        fired = rule.test(c)
        if fired is not None:
            category, reasons = fired
            return Decision(rule.action, category, risk, reasons,
                            "" if rule.action == ALLOW else redress(cons, caller))
    raise AssertionError("the last rule always fires")  # pragma: no cover
