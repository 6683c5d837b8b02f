"""The consortium configuration: who takes part, with which keys, roles and
number ranges, the mark taxonomy, and the policy every node applies.

`consortium.json` holds the exact bytes the institute signed with its
configuration key (a key of its own, kept apart from every node, named in the
file as `config_key`); the signature is in `consortium.json.sig`. Loading
verifies the signature over those exact bytes against the configuration key
pinned in the node's configuration; nothing is ever re-serialized to be verified.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keys import ConfigError, ConfigSignatureError
from keys.complaints import (
    DEFAULT_COMPLAINT_ACK_MS,
    DEFAULT_COMPLAINT_CLOSE_MS,
    DEFAULT_COMPLAINT_RISK,
    DEFAULT_COMPLAINT_RISK_COMPLAINANTS,
    DEFAULT_COMPLAINT_RISK_WINDOW_MS,
    DEFAULT_COMPLAINT_WINDOW_MS,
    check_policy_complaints,
)
from keys.industries import (
    DEFAULT_INDUSTRIES,
    DEFAULT_MARKETING_CATEGORIES,
    DEFAULT_REDRESS_TEXT,
    RESERVED_INDUSTRY,
    SCREEN_RISKS,
    Industry,
    check_marketing_categories,
    check_policy_screen,
    industries_from_json,
    industries_to_json,
    members_key_id_from_json,
)
from keys.sealing import MembersKey
from keys.signing import SigningKey

# Re-exported: the agreed names live here (keys/industries.py holds their checks).
__all__ = ["DEFAULT_INDUSTRIES", "DEFAULT_MARKETING_CATEGORIES", "DEFAULT_REDRESS_TEXT",
           "RESERVED_INDUSTRY", "SCREEN_RISKS", "Industry"]

CONFIG_CONTEXT = b"markex/v1/consortium\x00"
ROLES = ("institute", "carrier", "internet", "auditor", "callcenter", "complaints", "regulator")
# Roles that hold a member certificate but issue nothing and run no node: the
# ledger refuses every record they sign, the view never counts one. A call
# centre (a carrier's or a firm's switch) only asks the screen (docs/screen.md).
ISSUES_NOTHING = frozenset({"auditor", "callcenter"})
# Roles that run a node but issue only their own payloads (ledger/payloads
# ROLE_PAYLOADS): the complaints centre (12321) files complaints, the regulator
# lists enterprises on the bad list; neither marks, so their weight is 0.
ISSUES_ONLY_OWN = frozenset({"complaints", "regulator"})
# Roles whose certificate serves one purpose: a call centre screens calls
# (the Screening service) and reads no record, entry bundle or appeal.
SCREENS_ONLY = frozenset({"callcenter"})
FORMAT_VERSION = 1

# Ceilings the ledger enforces too; keys imports no ledger, so they are
# restated here and tests/test_keys.py holds them equal to the ledger's.
MAX_ENVELOPE_BYTES = 64 * 1024  # ledger.record.MAX_ENVELOPE_BYTES
MAX_VIEW_BUCKET_BITS = 22  # ledger.viewtree.MAX_TOP_BITS: the in-memory top of the view tree
MIN_ENVELOPE_BYTES = 1024  # room for a mark with evidence, or a correction with a reason
_SECOND = 1000
HOME_COUNTRY = "+86"  # numbers outside it are foreign (policy foreign_numbers)
FOREIGN_NUMBERS = ("allow", "refuse")
MAX_PROTECTED = 10_000  # protected_numbers entries at most: every mark is checked against them
# Numbers that must never carry a mark: emergency lines, public-service
# hotlines, the police's anti-fraud warning lines. Short numbers are kept as
# +86 and the short number (ledger/numbers.py); an entry ending in "*" is a prefix.
DEFAULT_PROTECTED_NUMBERS: tuple[str, ...] = (
    "+86110",  # police
    "+86119",  # fire
    "+86120",  # ambulance
    "+86122",  # traffic accidents
    "+86112",  # mobile emergency
    "+8612110",  # police by SMS
    "+8612119",  # forest fire
    "+8612395",  # maritime distress
    "+8612345",  # government service hotline
    "+8612315",  # consumer complaints
    "+8612321",  # harmful information and fraud reports
    "+8612306",  # railway
    "+8612320",  # public health
    "+8612333",  # social security
    "+8612348",  # legal aid
    "+8612358",  # prices
    "+8612366",  # taxes
    "+8612369",  # environment
    "+8612381",  # the anti-fraud warning SMS line
    "+8696110",  # the police's anti-fraud warning calls
)
_HOUR = 3600 * _SECOND
_DAY = 24 * _HOUR
_YEAR = 365 * _DAY


def check_consortium_name(name: object) -> None:
    """Raise ConfigError unless `name` is a valid C2SP note key name that is
    printable: non-empty, no whitespace, no '+', no control or other
    unprintable character (so no NUL, which the record context relies on).
    Every origin (<name>/log/<id>, <name>/view/<id>) starts with it."""
    if not isinstance(name, str) or not name:
        raise ConfigError("consortium name must be a non-empty string")
    bad = next((c for c in name if c.isspace() or c == "+" or not c.isprintable()), None)
    if bad is not None:
        raise ConfigError(
            f"consortium name {name!r} is not a note key name: it holds {bad!r} (names are "
            "printable, without whitespace or '+', since they prefix every origin)"
        )


@dataclass(frozen=True)
class Participant:
    id: str
    role: str
    public_key: bytes
    weight: int
    member_endpoint: str
    public_endpoint: str
    name: str = ""

    @cached_property
    def verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when the participant's key signed `message`."""
        if len(signature) != 64:
            return False
        try:
            self.verifier.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Category:
    id: str
    label: str          # the name users know, e.g. 诈骗
    rank: int           # higher wins a tie
    risk: bool          # False for identity labels (delivery, taxi, customer service)


DEFAULT_TAXONOMY: tuple[Category, ...] = (
    Category("fraud", "诈骗", 100, True),
    Category("harassment", "骚扰", 80, True),
    Category("debt-collection", "催收", 70, True),
    Category("one-ring", "响一声", 60, True),
    Category("marketing", "广告推销", 50, True),
    Category("real-estate", "房产中介", 40, True),
    Category("finance-insurance", "保险理财", 40, True),
    Category("recruitment", "招聘猎头", 30, True),
    Category("delivery", "快递外卖", 20, False),
    Category("taxi", "出租车", 20, False),
    Category("customer-service", "客服", 20, False),
)


@dataclass(frozen=True)
class Policy:
    """Values every node applies identically. Times in milliseconds."""

    max_envelope_bytes: int = 4096
    clock_skew_ms: int = 5 * 60 * 1000
    out_of_order_buffer: int = 10_000
    default_expiry_ms: int = 180 * 86_400_000
    protection_ms: int = 90 * 86_400_000
    high_risk_min_participants: int = 2
    institute_mark_is_high_risk: bool = True
    identity_min_participants: int = 2
    cosign_quorum: int = 2
    view_bucket_bits: int = 16
    # Issuer-chosen times are bounded (ledger/rules.py): a mark expires at most
    # this long after it was observed; a reassignment takes effect at most this
    # long before it was issued (and never later than the clock skew after).
    max_expiry_ms: int = 365 * 86_400_000
    reassignment_window_ms: int = 30 * 86_400_000
    # A client refuses a view checkpoint older than this (node/lookup.py).
    view_max_age_ms: int = 10 * 60 * 1000
    # The view keeps at most this many marks of one participant on one number
    # (its latest), and as many appeals of one appellant on one number.
    max_marks_per_participant: int = 8
    # The out-of-order buffer: at most this many records of one issuer wait,
    # each at most this long.
    out_of_order_per_issuer: int = 2_000
    out_of_order_ttl_ms: int = 10 * 60 * 1000
    # A node restored from an empty store issues only once this many peers
    # agree on its own feed's head.
    restore_quorum: int = 2
    # Numbers no mark may name (E.164; "+86955*" is a prefix): the ledger
    # refuses such a mark, the view ignores it, the auditor reports it.
    protected_numbers: tuple[str, ...] = DEFAULT_PROTECTED_NUMBERS
    # Whether numbers outside HOME_COUNTRY may be marked: allow | refuse.
    foreign_numbers: str = "allow"
    # The institute decides an appeal within this long of its filing (the
    # deadline an appeal's page shows; docs/appeals.md).
    appeal_decision_ms: int = 15 * 86_400_000
    # Consent and the screen (docs/config.md, docs/screen.md). A mark category
    # -> the industries an unregistered caller with marks of it counts as
    # marketing for (() = marketing of an unknown industry, refused only by "all").
    marketing_categories: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_MARKETING_CATEGORIES))
    # The least risk level (none | medium | high) the screen blocks, and warns
    # of; "off" never does.
    screen_block_risk: str = "high"
    screen_warn_risk: str = "medium"
    # Where a screened caller appeals; "{caller}" is replaced by its number.
    redress_text: str = DEFAULT_REDRESS_TEXT
    # A preference takes effect at most this long after it is issued.
    preference_max_ahead_ms: int = _YEAR
    # Complaints (keys/complaints.py, docs/complaints.md): the filing window
    # after the call, the SLA clock, and the view's complaint risk rule.
    complaint_window_ms: int = DEFAULT_COMPLAINT_WINDOW_MS
    complaint_ack_ms: int = DEFAULT_COMPLAINT_ACK_MS
    complaint_close_ms: int = DEFAULT_COMPLAINT_CLOSE_MS
    complaint_risk_complainants: int = DEFAULT_COMPLAINT_RISK_COMPLAINANTS
    complaint_risk_window_ms: int = DEFAULT_COMPLAINT_RISK_WINDOW_MS
    complaint_risk: str = DEFAULT_COMPLAINT_RISK
    # What the screen does with a caller whose live marketer line's enterprise
    # is on the bad list now (docs/screen.md): warn | block | off.
    screen_badlist_action: str = "block"

    def __post_init__(self) -> None:
        """Every value in its range (ConfigError naming the value and the
        range); `check_for` adds the bounds that depend on the participants."""
        _check_protected(self)
        check_policy_screen(self)
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _NOT_INTEGERS:
                continue
            if isinstance(f.default, bool):
                if not isinstance(v, bool):
                    raise ConfigError(f"policy {f.name} must be true or false, got {v!r}")
            elif isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"policy {f.name} must be an integer, got {v!r}")
        _in_range("max_envelope_bytes", self.max_envelope_bytes, MIN_ENVELOPE_BYTES,
                  MAX_ENVELOPE_BYTES, "the hard ceiling of every node")
        _in_range("clock_skew_ms", self.clock_skew_ms, 0, _HOUR)
        _in_range("out_of_order_buffer", self.out_of_order_buffer, 1, 1_000_000)
        _in_range("out_of_order_per_issuer", self.out_of_order_per_issuer, 1,
                  self.out_of_order_buffer, "out_of_order_buffer: one issuer's share of the buffer")
        _in_range("out_of_order_ttl_ms", self.out_of_order_ttl_ms, _SECOND, _DAY)
        _in_range("max_expiry_ms", self.max_expiry_ms, _DAY, 10 * _YEAR)
        _in_range("default_expiry_ms", self.default_expiry_ms, _DAY, self.max_expiry_ms,
                  "max_expiry_ms")
        _in_range("protection_ms", self.protection_ms, 0, 10 * _YEAR)
        _in_range("reassignment_window_ms", self.reassignment_window_ms, 0, _YEAR)
        _in_range("view_bucket_bits", self.view_bucket_bits, 0, MAX_VIEW_BUCKET_BITS)
        _in_range("view_max_age_ms", self.view_max_age_ms, _SECOND, _DAY)
        _in_range("max_marks_per_participant", self.max_marks_per_participant, 1, 1000)
        _in_range("appeal_decision_ms", self.appeal_decision_ms, _HOUR, _YEAR)
        _in_range("preference_max_ahead_ms", self.preference_max_ahead_ms, 0, 10 * _YEAR)
        for name in ("cosign_quorum", "restore_quorum", "high_risk_min_participants",
                     "identity_min_participants"):
            _in_range(name, getattr(self, name), 1, 1_000_000)
        check_policy_complaints(self)
        if self.screen_badlist_action not in SCREEN_BADLIST_ACTIONS:
            raise ConfigError(f"policy screen_badlist_action is {self.screen_badlist_action!r}; "
                              f"it must be one of {', '.join(SCREEN_BADLIST_ACTIONS)}")

    def check_for(self, participants: int) -> None:
        """The bounds that depend on how many participants there are: a
        quorum of peers is at most everyone but the log's (or the restored
        node's) own participant, a count of participants at most all."""
        others = participants - 1
        _in_range("cosign_quorum", self.cosign_quorum, 1, others,
                  "the participants other than the log's own")
        _in_range("restore_quorum", self.restore_quorum, 1, others,
                  "the participants other than the restored node's own")
        _in_range("high_risk_min_participants", self.high_risk_min_participants, 1,
                  participants, "the participants")
        _in_range("identity_min_participants", self.identity_min_participants, 1,
                  participants, "the participants")

    def protecting(self, number: str) -> str | None:
        """The protected_numbers entry that covers the E.164 `number`, or None."""
        exact, prefixes = self._protected
        if number in exact:
            return number
        if not number.startswith(prefixes):   # one test of every prefix: most numbers
            return None
        return next((p + "*" for p in prefixes if number.startswith(p)), None)

    @property
    def protected_heads(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """The exact protected numbers and the protected prefixes (without
        their "*"): `protecting(n)` is None exactly when n is in neither (a
        caller's test on a batch's path, without a call per number)."""
        return self._protected

    @cached_property
    def _protected(self) -> tuple[frozenset[str], tuple[str, ...]]:
        exact = frozenset(e for e in self.protected_numbers if not e.endswith("*"))
        return exact, tuple(e[:-1] for e in self.protected_numbers if e.endswith("*"))

    @classmethod
    def from_json(cls, obj: Any) -> Policy:
        """A policy from consortium.json's object; a value it omits keeps its
        default (so a file older than a value still loads). Raises ConfigError."""
        if not isinstance(obj, dict):
            raise ConfigError("policy must be an object")
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for k, v in obj.items():
            if k not in known:
                raise ConfigError(f"unknown policy value {k!r}")
            default = known[k].default
            if k in _NOT_INTEGERS:
                values[k] = v  # checked by __post_init__ (_check_protected)
                continue
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    raise ConfigError(f"policy {k} must be true or false")
            elif isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"policy {k} must be a non-negative integer")
            values[k] = v
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["protected_numbers"] = list(self.protected_numbers)
        out["marketing_categories"] = {k: list(v) for k, v in self.marketing_categories.items()}
        return out


_NOT_INTEGERS = frozenset({"protected_numbers", "foreign_numbers", "marketing_categories",
                           "screen_block_risk", "screen_warn_risk", "redress_text",
                           "complaint_risk", "screen_badlist_action"})
SCREEN_BADLIST_ACTIONS = ("warn", "block", "off")


def _check_protected(policy: Policy) -> None:
    """protected_numbers is a list of distinct E.164 numbers or prefixes
    ("+86955*"), at most MAX_PROTECTED; foreign_numbers is allow or refuse.
    Stores protected_numbers as a tuple. Raises ConfigError."""
    if policy.foreign_numbers not in FOREIGN_NUMBERS:
        raise ConfigError(
            f"policy foreign_numbers is {policy.foreign_numbers!r}; it must be allow or refuse"
        )
    entries = policy.protected_numbers
    if isinstance(entries, (str, bytes)) or not isinstance(entries, (list, tuple)):
        raise ConfigError("policy protected_numbers must be a list of E.164 numbers or prefixes")
    if len(entries) > MAX_PROTECTED:
        raise ConfigError(
            f"policy protected_numbers has {len(entries)} entries; at most {MAX_PROTECTED}"
        )
    seen: set[str] = set()
    for e in entries:
        if not isinstance(e, str) or not _is_protected_entry(e):
            raise ConfigError(
                f"policy protected_numbers entry {e!r} is not an E.164 number (+86110) "
                "or prefix (+86955*)"
            )
        if e in seen:
            raise ConfigError(f"policy protected_numbers lists {e} twice")
        seen.add(e)
    object.__setattr__(policy, "protected_numbers", tuple(entries))


def _is_protected_entry(e: str) -> bool:
    digits = e[1:-1] if e.endswith("*") else e[1:]
    # ASCII digits only (str.isdigit also takes other scripts' digits), as E.164 stores them.
    return (e.startswith("+") and 2 <= len(digits) <= 17 and digits[0] != "0"
            and all("0" <= c <= "9" for c in digits))


def _in_range(name: str, value: int, low: int, high: int, high_is: str = "") -> None:
    if not low <= value <= high:
        why = f" ({high_is})" if high_is else ""
        raise ConfigError(f"policy {name} is {value}; it must be {low}..{high}{why}")


@dataclass(frozen=True)
class Consortium:
    name: str
    participants: tuple[Participant, ...]
    number_ranges: dict[str, tuple[str, ...]]   # carrier id -> E.164 prefixes
    taxonomy: tuple[Category, ...] = DEFAULT_TAXONOMY
    policy: Policy = field(default_factory=Policy)
    raw: bytes = b""                              # the exact signed bytes, when loaded
    # The public key that signs consortium.json; b"" until `write` names the signer.
    config_key: bytes = b""
    # The industries a subscriber refuses marketing of, a line registers under.
    industries: tuple[Industry, ...] = DEFAULT_INDUSTRIES
    # The id of the members' key in force (keys/sealing.py); b"" = none named.
    members_key_id: bytes = b""
    # The key itself: never in consortium.json, attached by `with_members_key`
    # (keys.layout.load_consortium does, from node.toml's members_key file).
    members_key: MembersKey | None = field(default=None, compare=False, repr=False,
                                           kw_only=True)

    def __post_init__(self) -> None:
        check_consortium_name(self.name)

    def with_members_key(self, key: MembersKey) -> Consortium:
        """This configuration carrying `key`. Raises ConfigError unless the key's
        id is the members_key_id the signed configuration names."""
        if not self.members_key_id:
            raise ConfigError("consortium.json names no members' key (members_key_id), "
                              f"so the key {key.id.hex()} cannot be checked")
        if key.id != self.members_key_id:
            raise ConfigError(f"the members' key {key.id.hex()} is not the consortium's "
                              f"(members_key_id {self.members_key_id.hex()})")
        return replace(self, members_key=key)

    @cached_property
    def industry_ids(self) -> frozenset[str]:
        """The industry ids ("all" is never one: it means every industry)."""
        return frozenset(i.id for i in self.industries)

    # ---- lookups -------------------------------------------------------
    @cached_property
    def by_id(self) -> dict[str, Participant]:
        return {p.id: p for p in self.participants}

    @cached_property
    def categories(self) -> dict[str, Category]:
        return {c.id: c for c in self.taxonomy}

    @property
    def institute(self) -> Participant:
        for p in self.participants:
            if p.role == "institute":
                return p
        raise ConfigError("the consortium has no institute")

    def participant(self, pid: str) -> Participant | None:
        return self.by_id.get(pid)

    def why_not_reader(self, pid: str) -> str | None:
        """None when `pid` may read the log's records on the member side
        (members and auditors); else a sentence saying why not."""
        p = self.by_id.get(pid)
        if p is None:
            return f"{pid!r} is not a member or auditor of this consortium"
        if p.role in SCREENS_ONLY:
            return (f"{pid} is a call centre: its certificate screens calls (the Screening "
                    "service) and reads no records")
        return None

    @cached_property
    def witnesses(self) -> tuple[Participant, ...]:
        """The participants whose cosignatures count towards a quorum: those
        that run a node (an auditor's key never makes a checkpoint trusted)."""
        return tuple(p for p in self.participants if p.role not in ISSUES_NOTHING)

    @cached_property
    def _prefixes(self) -> list[tuple[str, str]]:
        pairs = [(pre, cid) for cid, pres in self.number_ranges.items() for pre in pres]
        return sorted(pairs, key=lambda t: -len(t[0]))

    def carrier_for(self, e164: str) -> str | None:
        """The carrier that holds `e164`: the longest configured prefix wins,
        so a ported number is listed whole under its new carrier."""
        for pre, cid in self._prefixes:
            if e164.startswith(pre):
                return cid
        return None

    # ---- JSON ----------------------------------------------------------
    def to_json_bytes(self) -> bytes:
        obj = {
            "format": FORMAT_VERSION,
            "name": self.name,
            "participants": [
                {
                    "id": p.id,
                    "name": p.name,
                    "role": p.role,
                    "public_key": base64.b64encode(p.public_key).decode(),
                    "weight": p.weight,
                    "member_endpoint": p.member_endpoint,
                    "public_endpoint": p.public_endpoint,
                }
                for p in self.participants
            ],
            "number_ranges": {k: list(v) for k, v in self.number_ranges.items()},
            "taxonomy": [
                {"id": c.id, "label": c.label, "rank": c.rank, "risk": c.risk}
                for c in self.taxonomy
            ],
            "policy": self.policy.to_json(),
            "industries": industries_to_json(self.industries),
        }
        if self.members_key_id:
            obj["members_key_id"] = self.members_key_id.hex()
        if self.config_key:
            obj["config_key"] = base64.b64encode(self.config_key).decode()
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json_bytes(cls, raw: bytes, *, draft: bool = False) -> Consortium:
        """Parse and check consortium.json. With `draft` (a configuration being
        built member by member, `markex consortium add-member`), the policy
        bounds that depend on how many participants there are wait until it is
        signed; every other rule holds."""
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            # ValueError covers JSONDecodeError and the int digit limit; deep nesting recurses.
            raise ConfigError(f"consortium.json is not valid JSON: {type(e).__name__}") from e
        if not isinstance(obj, dict):
            raise ConfigError("consortium.json must hold an object")
        if obj.get("format") != FORMAT_VERSION:
            raise ConfigError(f"consortium.json format must be {FORMAT_VERSION}")
        try:
            participants = tuple(_participant(p) for p in obj["participants"])
            ranges_obj = obj.get("number_ranges", {})
            if not isinstance(ranges_obj, dict):
                raise ConfigError("number_ranges must be an object")
            ranges = {str(k): tuple(_prefix(x) for x in v) for k, v in ranges_obj.items()}
            taxonomy = tuple(_category(c) for c in obj["taxonomy"])
            policy = Policy.from_json(obj.get("policy", {}))
            name = obj["name"]
            config_key = _config_key(obj.get("config_key"))
            # Both optional: a file older than issue 15 gets the defaults.
            industries = industries_from_json(obj.get("industries"))
            members_key_id = members_key_id_from_json(obj.get("members_key_id"))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"consortium.json is missing or mistypes a field: {e}") from e
        check_consortium_name(name)
        # Here rather than in __post_init__: tests build partial consortia in memory.
        if not draft:
            # Quorums and counts are of participants that run a node and issue records.
            policy.check_for(sum(p.role not in ISSUES_NOTHING for p in participants))
        ids = [p.id for p in participants]
        if len(set(ids)) != len(ids):
            raise ConfigError("participant ids must be unique")
        if sum(p.role == "institute" for p in participants) != 1:
            raise ConfigError("exactly one participant must be the institute")
        roles = {p.id: p.role for p in participants}
        holder: dict[str, str] = {}
        for cid, prefixes in ranges.items():
            if roles.get(cid) != "carrier":
                raise ConfigError(f"number_ranges names {cid!r}, which is not a carrier")
            for pre in prefixes:
                # carrier_for must have one answer: a prefix belongs to one carrier only.
                if holder.setdefault(pre, cid) != cid:
                    raise ConfigError(f"number range {pre} is listed for {holder[pre]} and {cid}")
        cat_ids = [c.id for c in taxonomy]
        if len(set(cat_ids)) != len(cat_ids) or not cat_ids:
            raise ConfigError("taxonomy ids must be unique and non-empty")
        for p in participants:
            # The configuration every node pins must not be signable by any node.
            if p.public_key == config_key:
                raise ConfigError(
                    f"the configuration key is {p.id}'s signing key; it must be a key of its own"
                )
        check_marketing_categories(policy.marketing_categories, set(cat_ids),
                                   {i.id for i in industries})
        return cls(name, participants, ranges, taxonomy, policy, raw, config_key, industries,
                   members_key_id)

    # ---- signature -----------------------------------------------------
    @staticmethod
    def sign_bytes(raw: bytes, config_key: SigningKey) -> bytes:
        return config_key.sign(CONFIG_CONTEXT + raw)

    def write(self, directory: Path, config_key: SigningKey) -> None:
        """Write consortium.json naming `config_key` and its signature by that key.

        Raises ConfigError when the configuration already names another key.
        """
        if self.config_key and self.config_key != config_key.public_bytes:
            raise ConfigError("consortium.json names another configuration key than the signer")
        raw = replace(self, config_key=config_key.public_bytes).to_json_bytes()
        (directory / "consortium.json").write_bytes(raw)
        sig = self.sign_bytes(raw, config_key)
        (directory / "consortium.json.sig").write_text(base64.b64encode(sig).decode() + "\n")

    @classmethod
    def load(cls, directory: Path, pinned_key: bytes | None = None) -> Consortium:
        """Load and verify. The configuration key is pinned by the node's
        configuration; without a pin the key named inside the file is used
        (fine for a first look, never for a node). A file that names no
        configuration key is refused (ConfigSignatureError)."""
        try:
            raw = (directory / "consortium.json").read_bytes()
            sig_bytes = (directory / "consortium.json.sig").read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read the consortium in {directory}: {e.strerror}") from e
        try:
            sig = base64.b64decode(sig_bytes.strip(), validate=True)
        except ValueError as e:
            raise ConfigSignatureError("consortium.json.sig is not base64") from e
        if pinned_key is not None:
            # Verify the exact bytes before parsing them: unsigned input is never interpreted.
            _verify_config(pinned_key, sig, raw)
            conf = cls.from_json_bytes(raw)
            if conf.config_key != pinned_key:
                raise ConfigSignatureError(
                    "consortium.json names a configuration key other than the pinned one"
                )
            return conf
        conf = cls.from_json_bytes(raw)
        if not conf.config_key:
            raise ConfigSignatureError("consortium.json names no configuration key (config_key)")
        _verify_config(conf.config_key, sig, raw)
        return conf


def _verify_config(key: bytes, sig: bytes, raw: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(sig, CONFIG_CONTEXT + raw)
    except ValueError as e:
        raise ConfigSignatureError("the configuration key must be 32 bytes") from e
    except InvalidSignature as e:
        raise ConfigSignatureError(
            "consortium.json is not signed by the configuration key (changed after signing?)"
        ) from e


def _config_key(v: Any) -> bytes:
    if v is None:
        return b""
    try:
        key = base64.b64decode(v, validate=True)
    except (ValueError, TypeError) as e:
        raise ConfigError("config_key is not base64") from e
    if len(key) != 32:
        raise ConfigError("config_key must be a 32-byte Ed25519 public key")
    return key


def _participant(p: Any) -> Participant:
    if not isinstance(p, dict):
        raise ConfigError("a participant must be an object")
    pid = p["id"]
    if not isinstance(pid, str) or not pid or not all(c.isalnum() or c in "-_." for c in pid):
        raise ConfigError(f"bad participant id {pid!r}")
    role = p["role"]
    if role not in ROLES:
        raise ConfigError(f"participant {pid}: role must be one of {', '.join(ROLES)}")
    try:
        pub = base64.b64decode(p["public_key"], validate=True)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"participant {pid}: public_key is not base64") from e
    if len(pub) != 32:
        raise ConfigError(f"participant {pid}: public_key must be 32 bytes")
    weight = p.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise ConfigError(f"participant {pid}: weight must be a non-negative integer")
    part = Participant(
        id=pid,
        role=role,
        public_key=pub,
        weight=weight,
        member_endpoint=str(p.get("member_endpoint", "")),
        public_endpoint=str(p.get("public_endpoint", "")),
        name=str(p.get("name", "")),
    )
    check_participant(part)
    return part


def check_participant(p: Participant) -> None:
    """Raise ConfigError unless `p` obeys its role: a role that issues nothing
    (auditor) has weight 0 and runs no node, so it names no endpoints."""
    if p.role not in ROLES:
        raise ConfigError(f"participant {p.id}: role must be one of {', '.join(ROLES)}")
    if p.role in ISSUES_NOTHING:
        if p.weight != 0:
            raise ConfigError(f"participant {p.id}: a participant of role {p.role} has weight 0")
        if p.member_endpoint or p.public_endpoint:
            raise ConfigError(f"participant {p.id}: role {p.role} runs no node, so no endpoints")


def _prefix(x: Any) -> str:
    if not isinstance(x, str) or not x.startswith("+") or not x[1:].isdigit():
        raise ConfigError(f"number range {x!r} must be an E.164 prefix like +86138")
    return x


def _category(c: Any) -> Category:
    if not isinstance(c, dict):
        raise ConfigError("a category must be an object")
    cid, label, rank, risk = c["id"], c.get("label", ""), c["rank"], c["risk"]
    if not isinstance(cid, str) or not cid:
        raise ConfigError("category id must be a non-empty string")
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise ConfigError(f"category {cid}: rank must be an integer")
    if not isinstance(risk, bool):
        raise ConfigError(f"category {cid}: risk must be true or false")
    return Category(cid, str(label), rank, risk)
