"""The bulk-import file format (docs/import.md; fixed in design.md): JSONL,
one object a line, or CSV of marks. Pure: it reads text and gives items with
their line numbers, or a bad line's sentence; it never talks to a node.

JSONL: {"kind": K, <K's fields named as the CLI's flags and arguments>,
"key": optional}. Kinds and fields (`*` required):

    mark      number*, category*, score (0..100, 60), reports (1),
              expires_days (0: the policy's), at (observed; default: signing)
    correct   target* (record id, 64 hex), withdraw (true) | category, reason,
              wait_for_target (false)
    decide    appeal* (64 hex), uphold (true) | reject (true), reason
    reassign  number*, at*
    prefer    number*, refuse* (industry ids, "all" or "none"), modes, hours
              ("HH-HH[,...]"), days, from, until
    line-register    number* (or a prefix ending in "*"), enterprise*, uscc*,
                     industry*
    line-deregister  target* (the registration's record id)
    complain  number*, category*, at* (the call), channel* (web, app, phone,
              wechat), complainant* (a number: sealed by the node), description
              (only its SHA-256 is recorded)
    handle    complaint* (its record id), confirmed (true) | not_confirmed (true) |
              forward (a carrier); mark (record id) or action (warning,
              suspended, none) with confirmed only; feedback_reported,
              feedback_complainant (times)
    sanction  uscc*, name*, doc*, reason, licence, delist (false), at (when it
              takes effect; default: signing)

CSV: marks only, header `number,category[,score,reports,expires_days,key]`
(any order; an unknown or repeated column refuses the whole file).

A line without a key gets `derived_key`: "sha256:" and the SHA-256 of the
canonical item (its kind and fields after defaults and normalization, as
sorted compact JSON). It names the content, not the place: a file edited,
reordered or split issues each item once; two lines with the same content
are one item (give keys to issue the same content twice).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.errors import BadInput, InvalidNumber
from ledger.numbers import normalize
from ledger.payloads.complaint import CHANNELS
from ledger.payloads.handling import (
    CONFIRMED,
    MARK,
    NONE,
    NOT_CONFIRMED,
    NOT_OURS,
    SUSPENDED,
    WARNING,
)
from ledger.payloads.line import check_uscc, parse_line_number
from ledger.payloads.preference import parse_bands

MAX_KEY = 128  # bytes of an idempotency key
DAY_MS = 86_400_000
CSV_COLUMNS = ("number", "category", "score", "reports", "expires_days", "key")
CSV_REQUIRED = ("number", "category")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class ImportFileError(BadInput):
    """A file that cannot be imported at all (a CSV header with an unknown
    column): refused before anything is sent."""


class BadLine(BadInput):
    """One line that cannot become an item; the others still can."""


@dataclass(frozen=True)
class Item:
    """One line made an item: its kind, its normalized fields (numbers E.164,
    times in UTC ms, ids as bytes) and its idempotency key (given or derived)."""

    line: int
    kind: str
    fields: dict[str, Any]
    key: str
    derived: bool


@dataclass(frozen=True)
class Refused:
    """A line that is not an item, and why (a sentence)."""

    line: int
    error: str


# ------------------------------------------------------------------ values


def _str(v: Any, name: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise BadLine(f"{name!r} must be a non-empty string")
    return v.strip()


def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadLine(f"{name!r} must be a whole number from {lo} to {hi}, not {v!r}")
    return v


def _days(v: Any, name: str) -> int:
    """Days as milliseconds (0..100 years)."""
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise BadLine(f"{name!r} must be a number of days, not {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or not 0 <= v <= 36_500:
        raise BadLine(f"{name!r} must be a number of days from 0 to 36500, not {v!r}")
    return int(v * DAY_MS)


def _bool(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise BadLine(f"{name!r} must be true or false, not {v!r}")
    return v


def _time(v: Any, name: str) -> int:
    """An ISO 8601 time (UTC when no zone is given) as UTC milliseconds."""
    s = _str(v, name)
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise BadLine(f"{name!r} {s!r} is not an ISO 8601 time (e.g. 2026-11-28T10:00:00Z)"
                      ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    ms = int(t.timestamp() * 1000)
    if ms <= 0:
        raise BadLine(f"{name!r} {s!r} is before 1970")
    return ms


def _number(v: Any, name: str) -> str:
    return normalize(_str(v, name))  # InvalidNumber says why not


def _record_id(v: Any, name: str) -> bytes:
    s = _str(v, name)
    if not _HEX64.fullmatch(s):
        raise BadLine(f"{name!r} must be a record id of 64 hex digits, not {s!r}")
    return bytes.fromhex(s)


def _list(v: Any, name: str) -> tuple[str, ...]:
    """A list of strings, or one string of comma-separated items."""
    items = [x.strip() for x in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise BadLine(f"{name!r} must be a list of names (or one string, comma-separated)")
    if len(set(items)) != len(items):
        raise BadLine(f"{name!r} names an item twice")
    return tuple(items)


def _line_number(v: Any, name: str) -> tuple[str, bool]:
    s = _str(v, name)
    if not s.endswith("*"):
        return normalize(s), False  # InvalidNumber says why not
    try:
        return parse_line_number(s)
    except InvalidNumber as e:
        raise BadLine(f"{name!r}: {e}") from e


# ------------------------------------------------------------------ kinds

Fields = dict[str, Any]


def _mark(o: Fields) -> Fields:
    f: Fields = {"number": _number(o.get("number"), "number"),
                 "category": _str(o.get("category"), "category"),
                 "score": _int(o.get("score", 60), "score", 0, 100),
                 "reports": _int(o.get("reports", 1), "reports", 0, 2**32 - 1),
                 "expires_ms": _days(o.get("expires_days", 0), "expires_days")}
    if o.get("at") is not None:
        f["observed_ms"] = _time(o["at"], "at")
    return f


def _correct(o: Fields) -> Fields:
    withdraw = _bool(o.get("withdraw", False), "withdraw")
    category = o.get("category")
    if withdraw == (category is not None):
        raise BadLine("a correction gives exactly one of \"withdraw\": true or \"category\"")
    f: Fields = {"target": _record_id(o.get("target"), "target"), "withdraw": withdraw,
                 "wait_for_target": _bool(o.get("wait_for_target", False), "wait_for_target")}
    if category is not None:
        f["category"] = _str(category, "category")
    if o.get("reason") is not None:
        f["reason"] = _str(o["reason"], "reason")
    return f


def _decide(o: Fields) -> Fields:
    uphold = _bool(o.get("uphold", False), "uphold")
    reject = _bool(o.get("reject", False), "reject")
    if uphold == reject:
        raise BadLine("a decision gives exactly one of \"uphold\": true or \"reject\": true")
    f: Fields = {"appeal": _record_id(o.get("appeal"), "appeal"), "uphold": uphold}
    if o.get("reason") is not None:
        f["reason"] = _str(o["reason"], "reason")
    return f


def _reassign(o: Fields) -> Fields:
    return {"number": _number(o.get("number"), "number"), "at": _time(o.get("at"), "at")}


def _prefer(o: Fields) -> Fields:
    f: Fields = {"number": _number(o.get("number"), "number"),
                 "refuse": _list(o.get("refuse"), "refuse")}
    if f["refuse"] == ("none",):
        f["refuse"] = ()
    for name in ("modes", "days"):
        if o.get(name) is not None:
            f[name] = _list(o[name], name)
    if o.get("hours") is not None:
        f["hours"] = parse_bands(_str(o["hours"], "hours"))  # BadTimeBand says why not
    for name in ("from", "until"):
        if o.get(name) is not None:
            f[name] = _time(o[name], name)
    return f


def _line(o: Fields) -> Fields:
    number, prefix = _line_number(o.get("number"), "number")
    return {"number": number, "prefix": prefix,
            "enterprise": _str(o.get("enterprise"), "enterprise"),
            "uscc": _str(o.get("uscc"), "uscc").upper(),
            "industry": _str(o.get("industry"), "industry")}


def _unline(o: Fields) -> Fields:
    return {"target": _record_id(o.get("target"), "target")}


def _complain(o: Fields) -> Fields:
    channel = _str(o.get("channel"), "channel")
    if channel not in CHANNELS:
        raise BadLine(f"\"channel\" is one of {', '.join(CHANNELS)}, not {channel!r}")
    f: Fields = {"number": _number(o.get("number"), "number"),
                 "category": _str(o.get("category"), "category"),
                 "at": _time(o.get("at"), "at"), "channel": channel,
                 "complainant": _number(o.get("complainant"), "complainant")}
    if o.get("description") is not None:
        f["description"] = _str(o["description"], "description")
    return f


def _handle(o: Fields) -> Fields:
    confirmed = _bool(o.get("confirmed", False), "confirmed")
    not_confirmed = _bool(o.get("not_confirmed", False), "not_confirmed")
    forward = _str(o["forward"], "forward") if o.get("forward") is not None else ""
    given = [f for f, on in ((CONFIRMED, confirmed), (NOT_CONFIRMED, not_confirmed),
                             (NOT_OURS, bool(forward))) if on]
    if len(given) != 1:
        raise BadLine("a handling gives exactly one of \"confirmed\": true, "
                      "\"not_confirmed\": true or \"forward\": CARRIER")
    f: Fields = {"complaint": _record_id(o.get("complaint"), "complaint"),
                 "finding": given[0], "forward": forward, "action": NONE}
    if o.get("mark") is not None and o.get("action") is not None:
        raise BadLine("\"mark\" is the action; give \"mark\" or \"action\", not both")
    if o.get("mark") is not None:
        f["mark"], f["action"] = _record_id(o["mark"], "mark"), MARK
    elif o.get("action") is not None:
        action = _str(o["action"], "action")
        if action not in (WARNING, SUSPENDED, NONE):
            raise BadLine(f"\"action\" is warning, suspended or none (a mark: \"mark\"), "
                          f"not {action!r}")
        f["action"] = action
    if f["finding"] != CONFIRMED and f["action"] != NONE:
        raise BadLine("\"mark\" and \"action\" go with \"confirmed\" only: only a "
                      "confirmed complaint is acted on")
    for name in ("feedback_reported", "feedback_complainant"):
        if o.get(name) is not None:
            f[name] = _time(o[name], name)
    return f


def _sanction(o: Fields) -> Fields:
    uscc = _str(o.get("uscc"), "uscc").upper()
    check_uscc(uscc)  # BadCreditCode says what is wrong with it
    f: Fields = {"uscc": uscc, "name": _str(o.get("name"), "name"),
                 "doc": _str(o.get("doc"), "doc"),
                 "delist": _bool(o.get("delist", False), "delist")}
    for name in ("reason", "licence"):
        if o.get(name) is not None:
            f[name] = _str(o[name], name)
    if not f["delist"] and "reason" not in f:
        raise BadLine("a listing gives its \"reason\"")
    if o.get("at") is not None:
        f["at"] = _time(o["at"], "at")
    return f


# kind -> (its fields, the function checking and normalizing them)
KINDS: dict[str, tuple[frozenset[str], Callable[[Fields], Fields]]] = {
    "mark": (frozenset({"number", "category", "score", "reports", "expires_days", "at"}), _mark),
    "correct": (frozenset({"target", "withdraw", "category", "reason", "wait_for_target"}),
                _correct),
    "decide": (frozenset({"appeal", "uphold", "reject", "reason"}), _decide),
    "reassign": (frozenset({"number", "at"}), _reassign),
    "prefer": (frozenset({"number", "refuse", "modes", "hours", "days", "from", "until"}),
               _prefer),
    "line-register": (frozenset({"number", "enterprise", "uscc", "industry"}), _line),
    "line-deregister": (frozenset({"target"}), _unline),
    "complain": (frozenset({"number", "category", "at", "channel", "complainant",
                            "description"}), _complain),
    "handle": (frozenset({"complaint", "confirmed", "not_confirmed", "forward", "mark", "action",
                          "feedback_reported", "feedback_complainant"}), _handle),
    "sanction": (frozenset({"uscc", "name", "doc", "reason", "licence", "delist", "at"}),
                 _sanction),
}


def _canonical(kind: str, fields: Fields) -> bytes:
    def plain(v: Any) -> Any:
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    obj = {"kind": kind, **{k: plain(v) for k, v in fields.items()}}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def derived_key(kind: str, fields: Fields) -> str:
    """The key of a line that gives none: the canonical item's SHA-256."""
    return "sha256:" + hashlib.sha256(_canonical(kind, fields)).hexdigest()


def _key(v: Any) -> str:
    k = _str(v, "key") if not isinstance(v, int) or isinstance(v, bool) else str(v)
    if len(k.encode()) > MAX_KEY:
        raise BadLine(f"\"key\" is {len(k.encode())} bytes; at most {MAX_KEY}")
    return k


def item(line: int, obj: Fields) -> Item:
    """One object (a JSONL line or a CSV row) made an item; BadLine (or the
    number's InvalidNumber) says what is wrong with it."""
    kind = obj.get("kind")
    if kind not in KINDS:
        raise BadLine(f"\"kind\" must be one of {', '.join(KINDS)}, not {kind!r}")
    allowed, check = KINDS[kind]
    unknown = sorted(set(obj) - allowed - {"kind", "key"})
    if unknown:
        raise BadLine(f"{kind} has no field {', '.join(map(repr, unknown))}; its fields: "
                      f"{', '.join(sorted(allowed))}, key")
    fields = check(obj)
    if obj.get("key") not in (None, ""):
        return Item(line, kind, fields, _key(obj["key"]), False)
    return Item(line, kind, fields, derived_key(kind, fields), True)


def _refused(line: int, e: BadInput) -> Refused:
    return Refused(line, f"line {line}: {type(e).__name__}: {e}")


def read_jsonl(lines: Iterable[str]) -> Iterator[Item | Refused]:
    """Each non-blank line of a JSONL file as an item or a refusal, in order."""
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield _refused(n, BadLine(f"not a JSON object: {e.msg} at column {e.colno}"))
            continue
        if not isinstance(obj, dict):
            yield _refused(n, BadLine("not a JSON object"))
            continue
        try:
            yield item(n, obj)
        except BadInput as e:
            yield _refused(n, e)


def csv_header(row: list[str]) -> list[str]:
    """The CSV header's columns, or ImportFileError for an unknown, repeated
    or missing one."""
    cols = [c.strip() for c in row]
    unknown = [c for c in cols if c not in CSV_COLUMNS]
    if unknown:
        raise ImportFileError(f"line 1: unknown column {unknown[0]!r}; the header is "
                              f"number,category[,score,reports,expires_days,key]")
    twice = sorted({c for c in cols if cols.count(c) > 1})
    if twice:
        raise ImportFileError(f"line 1: column {twice[0]!r} appears twice")
    missing = [c for c in CSV_REQUIRED if c not in cols]
    if missing:
        raise ImportFileError(f"line 1: the header has no {missing[0]!r} column")
    return cols


def read_csv(lines: Iterable[str]) -> Iterator[Item | Refused]:
    """Each row of a CSV file of marks as an item or a refusal, in order. The
    header is checked first: ImportFileError before any row is given."""
    reader = csv.reader(lines)
    try:
        head = next(reader)
    except StopIteration:
        raise ImportFileError("the file is empty: the header is "
                              "number,category[,score,reports,expires_days,key]") from None
    except csv.Error as e:
        raise ImportFileError(f"line 1: {e}") from None
    cols = csv_header(head)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield _refused(reader.line_num, BadLine(str(e)))
            continue
        n = reader.line_num
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(cols):
            yield _refused(n, BadLine(f"{len(row)} columns; the header has {len(cols)}"))
            continue
        obj: Fields = {"kind": "mark"}
        obj.update({c: v.strip() for c, v in zip(cols, row, strict=True) if v.strip() != ""})
        try:
            yield item(n, obj)
        except BadInput as e:
            yield _refused(n, e)


def sniff(first_line: str) -> str:
    """"jsonl" when the first line opens a JSON object, else "csv"."""
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"
