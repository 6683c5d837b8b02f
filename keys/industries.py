"""Consent by industry: the industries of consortium.json, and the checks of
the policy values the consent records and the call-path screen read
(docs/config.md). keys/consortium.py re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from keys import ConfigError

RESERVED_INDUSTRY = "all"  # a preference refusing "all" refuses every industry
MAX_INDUSTRY_ID = 32
MAX_INDUSTRIES = 256
MAX_REDRESS_TEXT = 300
CALLER = "{caller}"
# A screen threshold: the least risk level that blocks (or warns); "off" never does.
SCREEN_RISKS = ("none", "medium", "high", "off")
MEMBERS_KEY_ID_BYTES = 8  # keys.sealing.KEY_ID_BYTES


@dataclass(frozen=True)
class Industry:
    id: str     # what records and the CLI name, e.g. real-estate
    label: str  # the name subscribers know, e.g. 房产中介


DEFAULT_INDUSTRIES: tuple[Industry, ...] = (
    Industry("finance", "贷款理财"),
    Industry("insurance", "保险推销"),
    Industry("securities", "股票证券"),
    Industry("real-estate", "房产中介"),
    Industry("education", "教育培训"),
    Industry("health", "医疗保健"),
    Industry("consumer-goods", "商品销售"),
    Industry("telecom", "通信服务"),
    Industry("tourism", "旅游休闲"),
    Industry("recruitment", "招聘猎头"),
)

# Mark category -> the industries an unregistered caller marked so counts as
# marketing for; () = marketing of an unknown industry (refused only by "all").
DEFAULT_MARKETING_CATEGORIES: Mapping[str, tuple[str, ...]] = {
    "marketing": (),
    "real-estate": ("real-estate",),
    "finance-insurance": ("finance", "insurance", "securities"),
    "recruitment": ("recruitment",),
}

DEFAULT_REDRESS_TEXT = (
    "号码 {caller} 如被误拦截，可在 /numbers/{caller} 申诉或拨打 12321 举报。"
    " If {caller} was screened in error, appeal at /numbers/{caller} or call 12321."
)


def check_industry_id(iid: object) -> str:
    """Raise ConfigError unless `iid` may name an industry: a non-empty string
    of at most 32 letters, digits, '-', '_' or '.', and not the reserved "all"."""
    if not isinstance(iid, str) or not iid:
        raise ConfigError("an industry id must be a non-empty string")
    if len(iid) > MAX_INDUSTRY_ID:
        raise ConfigError(f"industry id {iid[:40]!r} is {len(iid)} characters; "
                          f"at most {MAX_INDUSTRY_ID}")
    if not all(c.isascii() and (c.isalnum() or c in "-_.") for c in iid):
        raise ConfigError(f"industry id {iid!r} holds a character other than ASCII "
                          "letters, digits, '-', '_' and '.'")
    if iid == RESERVED_INDUSTRY:
        raise ConfigError(f"industry id {RESERVED_INDUSTRY!r} is reserved: a preference "
                          "refusing it refuses every industry")
    return iid


def industries_from_json(v: Any) -> tuple[Industry, ...]:
    """consortium.json's "industries" ([{"id", "label"}]); None (a file older
    than them) gives DEFAULT_INDUSTRIES. Raises ConfigError."""
    if v is None:
        return DEFAULT_INDUSTRIES
    if not isinstance(v, list) or not v or len(v) > MAX_INDUSTRIES:
        raise ConfigError(f"industries must be a list of 1..{MAX_INDUSTRIES} objects")
    out: list[Industry] = []
    seen: set[str] = set()
    for item in v:
        if not isinstance(item, dict) or set(item) - {"id", "label"}:
            raise ConfigError('an industry must be an object {"id", "label"}')
        iid = check_industry_id(item.get("id"))
        label = item.get("label", "")
        if not isinstance(label, str):
            raise ConfigError(f"industry {iid}: label must be a string")
        if iid in seen:
            raise ConfigError(f"industries list {iid!r} twice; ids must be unique")
        seen.add(iid)
        out.append(Industry(iid, label))
    return tuple(out)


def industries_to_json(industries: tuple[Industry, ...]) -> list[dict[str, str]]:
    return [{"id": i.id, "label": i.label} for i in industries]


def members_key_id_from_json(v: Any) -> bytes:
    """consortium.json's "members_key_id" (hex of 8 bytes); None gives b""."""
    if v is None:
        return b""
    try:
        raw = bytes.fromhex(v) if isinstance(v, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != MEMBERS_KEY_ID_BYTES:
        raise ConfigError(f"members_key_id must be the hex of {MEMBERS_KEY_ID_BYTES} bytes, "
                          f"got {str(v)[:40]!r}")
    return raw


class _ScreenPolicy(Protocol):
    marketing_categories: Any
    screen_block_risk: str
    screen_warn_risk: str
    redress_text: str


def check_policy_screen(policy: _ScreenPolicy) -> None:
    """The consent and screen values of a Policy in their forms (ConfigError
    naming the value); stores marketing_categories as a dict of tuples. That
    its names are in the taxonomy and the industries is checked with the whole
    configuration (`check_marketing_categories`)."""
    for name in ("screen_block_risk", "screen_warn_risk"):
        v = getattr(policy, name)
        if v not in SCREEN_RISKS:
            raise ConfigError(f"policy {name} is {v!r}; it must be one of "
                              f"{', '.join(SCREEN_RISKS)}")
    text = policy.redress_text
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("policy redress_text must be a non-empty string")
    if len(text) > MAX_REDRESS_TEXT:
        raise ConfigError(f"policy redress_text is {len(text)} characters; "
                          f"at most {MAX_REDRESS_TEXT}")
    if CALLER not in text:
        raise ConfigError(f"policy redress_text must contain {CALLER} (where the caller's "
                          "number goes)")
    if "{" in text.replace(CALLER, "") or "}" in text.replace(CALLER, ""):
        # The screen fills in {caller} only; any other brace is a typo to catch here.
        raise ConfigError(f"policy redress_text holds a brace other than {CALLER}")
    cats = policy.marketing_categories
    if not isinstance(cats, Mapping):
        raise ConfigError("policy marketing_categories must be an object: "
                          "category -> list of industry ids")
    out: dict[str, tuple[str, ...]] = {}
    for cat, inds in cats.items():
        if not isinstance(cat, str) or not cat:
            raise ConfigError("policy marketing_categories: a category must be a "
                              "non-empty string")
        if isinstance(inds, (str, bytes)) or not isinstance(inds, (list, tuple)):
            raise ConfigError(f"policy marketing_categories[{cat!r}] must be a list of "
                              "industry ids")
        if not all(isinstance(i, str) for i in inds) or len(set(inds)) != len(inds):
            raise ConfigError(f"policy marketing_categories[{cat!r}] must list distinct "
                              "industry ids")
        out[cat] = tuple(inds)
    object.__setattr__(policy, "marketing_categories", out)


def check_marketing_categories(cats: Mapping[str, tuple[str, ...]], categories: set[str],
                               industries: set[str]) -> None:
    """Raise ConfigError unless every category is in the taxonomy and every
    industry in the industries list."""
    for cat, inds in cats.items():
        if cat not in categories:
            raise ConfigError(f"policy marketing_categories names {cat!r}, which is not a "
                              "category of the taxonomy")
        for i in inds:
            if i not in industries:
                raise ConfigError(f"policy marketing_categories[{cat!r}] names {i!r}, "
                                  "which is not an industry of the consortium")
