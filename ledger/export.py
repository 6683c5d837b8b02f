"""The published view: every entry at one view checkpoint as rows (CSV or
JSONL), reading the rows back, recomputing the view root from them alone,
and the statistics computed from one export. Pure: no network, no clock
(the time an entry is evaluated at is the checkpoint's own signing time).

File formats (docs/export.md)::

    JSONL   {"markex_view_export": 1, "checkpoint": "<signed, cosigned note>"}
            {"number": .., "category": .., "risk": .., "score": .., "markers": [..],
             "appeal": .., "entry": "<base64 of the entry's exact bytes>"}     one per entry
    CSV     # markex view export 1
            # checkpoint <base64 of the note's UTF-8 text>
            number,category,risk,score,markers,appeal,entry
            <one row per entry; markers space-separated, no category: empty>

Rows come in ascending order of the number's UTF-8 bytes, each number once
(the order of the node's view family). The readable columns are the entry
evaluated at the checkpoint's `signed-at-ms`; a reader recomputes them from
the entry bytes and refuses a row whose columns say anything else.

A delta (`delta_rows`) also carries the note of the whole export it is since
(JSONL "since", CSV a third line "# since <base64>") and only the rows whose
entry bytes changed, plus a removal row (no entry bytes) per number gone;
`apply_delta` turns base and delta back into the whole view's rows.

Errors (each a ledger error):

    MalformedExport(BadInput)        a header, line or row that does not parse
    ExportMismatch(ProofMismatch)    well-formed rows that are not the checkpoint's view
                                     (order, columns, count or root)
    TooFewCosigners(NotAllowed)      a checkpoint cosigned by fewer members than the quorum
    (and ledger/verify.py's open_view: MalformedNote, BadSignature for the checkpoint)
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from keys.consortium import Consortium
from ledger.errors import BadInput, NotAllowed, ProofMismatch
from ledger.verify import CosignedView, open_view
from ledger.view import Entry, ViewCheckpoint, entry_hash, tree_root

__all__ = [
    "COLUMNS",
    "CSV_MAGIC",
    "FORMAT_VERSION",
    "Export",
    "ExportMismatch",
    "ExportSummary",
    "MalformedExport",
    "Row",
    "TooFewCosigners",
    "apply_delta",
    "delta_rows",
    "figures",
    "open_export",
    "open_quorum",
    "row_of",
    "rows_text",
    "verify_rows",
    "write_export",
]

FORMAT_VERSION = 1
Format = Literal["csv", "jsonl"]
COLUMNS = ("number", "category", "risk", "score", "markers", "appeal", "entry")
CSV_MAGIC = f"# markex view export {FORMAT_VERSION}"
_CSV_CHECKPOINT = "# checkpoint "
_CSV_SINCE = "# since "
_JSONL_KEY = "markex_view_export"
MAX_LINE = 4 << 20         # a row longer than this is no entry the view writes
# The view's risk levels and appeal statuses (docs/view.md), in the order the figures list them.
RISKS = ("none", "medium", "high")
APPEAL_STATUSES = ("pending", "upheld", "rejected", "withdrawn")
DECIDED = ("upheld", "rejected")


class MalformedExport(BadInput):
    """An export file, or one of its rows, that does not parse."""


class ExportMismatch(ProofMismatch):
    """Rows that parse but are not the view the checkpoint signs."""


class TooFewCosigners(NotAllowed):
    """A view checkpoint cosigned by fewer members than the policy's quorum."""


def open_quorum(cons: Consortium, text: str) -> CosignedView:
    """The view checkpoint `text` with its signer's signature and every member
    cosignature verified, and at least `policy.cosign_quorum` of them (however
    old: an export is checked long after it was made). Fails closed: raises
    MalformedNote, BadSignature or TooFewCosigners."""
    view = open_view(cons, text)
    need = cons.policy.cosign_quorum
    if len(view.cosigned_at) < need:
        who = f" ({', '.join(sorted(view.cosigned_at))})" if view.cosigned_at else ""
        raise TooFewCosigners(
            f"the view checkpoint is cosigned by {len(view.cosigned_at)} member(s){who}; "
            f"the policy needs {need}"
        )
    return view


@dataclass(frozen=True)
class Row:
    """One entry of an export: its exact bytes and the readable columns."""

    number: str
    category: str | None
    risk: str
    score: int
    markers: tuple[str, ...]        # the participants whose marks count, sorted
    appeal: str
    entry: bytes

    @classmethod
    def removal(cls, number: str) -> Row:
        """A delta's row for a number the view no longer holds: no entry bytes."""
        return cls(number, None, "none", 0, (), "none", b"")

    @property
    def removed(self) -> bool:
        return not self.entry

    def readable(self) -> tuple[str, str | None, str, int, tuple[str, ...], str]:
        return (self.number, self.category, self.risk, self.score, self.markers, self.appeal)

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "category": self.category,
            "risk": self.risk,
            "score": self.score,
            "markers": list(self.markers),
            "appeal": self.appeal,
            "entry": base64.b64encode(self.entry).decode("ascii"),
        }

    def csv_fields(self) -> list[str]:
        return [
            self.number,
            self.category or "",
            self.risk,
            str(self.score),
            " ".join(self.markers),
            self.appeal,
            base64.b64encode(self.entry).decode("ascii"),
        ]


def row_of(entry: Entry, at_ms: int, raw: bytes | None = None) -> Row:
    """The row of `entry` evaluated at `at_ms` (the checkpoint's signing time).
    `raw`: the bytes `entry` was decoded from (equal to its encoding, as
    `Entry.decode` is strict), kept instead of a second copy."""
    r = entry.evaluate(at_ms)
    return Row(
        r.number,
        r.category,
        r.risk,
        r.score,
        tuple(sorted(m.participant for m in r.markers)),
        r.appeal,
        entry.encode() if raw is None else raw,
    )


# ====================================================================== writing


def write_export(
    out: TextIO,
    fmt: Format,
    checkpoint_note: str,
    rows: Iterable[Row],
    since_note: str | None = None,
) -> int:
    """Write the header carrying `checkpoint_note` (and, for a delta, the
    base export's `since_note`), then one line per row. Returns how many rows
    were written."""
    n = 0
    if fmt == "jsonl":
        head: dict[str, Any] = {_JSONL_KEY: FORMAT_VERSION, "checkpoint": checkpoint_note}
        if since_note is not None:
            head["since"] = since_note
        out.write(json.dumps(head) + "\n")
        for row in rows:
            out.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
            n += 1
        return n
    if fmt != "csv":
        raise BadInput(f"no export format {fmt!r}: csv or jsonl")
    out.write(f"{CSV_MAGIC}\n{_CSV_CHECKPOINT}{_b64_text(checkpoint_note)}\n")
    if since_note is not None:
        out.write(f"{_CSV_SINCE}{_b64_text(since_note)}\n")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in rows:
        w.writerow(row.csv_fields())
        n += 1
    return n


def _b64_text(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# ====================================================================== reading


@dataclass(frozen=True)
class Export:
    """An opened export: its format, the checkpoint note text it carries
    (and for a delta, the note of the export it is the delta since), and its
    rows, parsed one at a time as they are iterated (once)."""

    format: Format
    checkpoint_note: str
    rows: Iterator[Row]
    since_note: str | None = None


def _line(lines: Iterator[str], what: str) -> str:
    line = next(lines, None)
    if line is None:
        raise MalformedExport(f"the file ends before {what}")
    return line


def _b64_note(line: str, prefix: str, where: str) -> str:
    try:
        return base64.b64decode(line[len(prefix):], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as e:
        raise MalformedExport(f"{where}: the note is not base64 of UTF-8 text: {e}") from e


def open_export(lines: Iterable[str]) -> Export:
    """Read the header of an export given as text lines (an open file);
    its format is told by the first line. Raises MalformedExport."""
    it = iter(lines)
    first = _line(it, "its header")
    if first.rstrip("\r\n") == CSV_MAGIC:
        second = _line(it, "the checkpoint line").rstrip("\r\n")
        if not second.startswith(_CSV_CHECKPOINT):
            raise MalformedExport(f"line 2 starts with {_CSV_CHECKPOINT!r}")
        text = _b64_note(second, _CSV_CHECKPOINT, "line 2")
        third = _line(it, "the column header")
        if not third.startswith(_CSV_SINCE):
            return Export("csv", text, _csv_rows(itertools.chain([third], it), 2))
        since = _b64_note(third.rstrip("\r\n"), _CSV_SINCE, "line 3")
        return Export("csv", text, _csv_rows(it, 3), since)
    try:
        head = json.loads(first)
    except ValueError as e:
        raise MalformedExport(
            f"line 1 is neither {CSV_MAGIC!r} nor a JSONL export header: {e}"
        ) from e
    if (
        not isinstance(head, dict)
        or set(head) - {"since"} != {_JSONL_KEY, "checkpoint"}
        or head[_JSONL_KEY] != FORMAT_VERSION
        or not isinstance(head["checkpoint"], str)
        or not isinstance(head.get("since", ""), str)
    ):
        raise MalformedExport(
            f'line 1 is not the export header {{"{_JSONL_KEY}": {FORMAT_VERSION}, '
            '"checkpoint": .., ["since": ..]}'
        )
    return Export("jsonl", head["checkpoint"], _jsonl_rows(it), head.get("since"))


def _entry_bytes(v: Any, where: str) -> bytes:
    if not isinstance(v, str):
        raise MalformedExport(f"{where}: the entry is a base64 string")
    try:
        return base64.b64decode(v, validate=True)
    except binascii.Error as e:
        raise MalformedExport(f"{where}: the entry is not base64: {e}") from e


def _jsonl_rows(lines: Iterator[str]) -> Iterator[Row]:
    for i, line in enumerate(lines, start=2):
        where = f"line {i}"
        if len(line) > MAX_LINE:
            raise MalformedExport(f"{where} is longer than {MAX_LINE} characters")
        try:
            obj = json.loads(line, parse_float=_no_float, parse_constant=_no_float)
        except (ValueError, RecursionError) as e:
            raise MalformedExport(f"{where} is not one JSON object: {e}") from e
        if not isinstance(obj, dict) or set(obj) != set(COLUMNS):
            raise MalformedExport(f"{where} has not exactly the columns {', '.join(COLUMNS)}")
        cat, markers = obj["category"], obj["markers"]
        if not (
            isinstance(obj["number"], str)
            and (cat is None or isinstance(cat, str))
            and isinstance(obj["risk"], str)
            and type(obj["score"]) is int
            and isinstance(markers, list)
            and all(isinstance(m, str) for m in markers)
            and isinstance(obj["appeal"], str)
        ):
            raise MalformedExport(f"{where}: a column has the wrong type")
        yield Row(
            obj["number"], cat, obj["risk"], obj["score"], tuple(markers), obj["appeal"],
            _entry_bytes(obj["entry"], where),
        )


def _csv_rows(lines: Iterator[str], header_lines: int) -> Iterator[Row]:
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header != list(COLUMNS):
            raise MalformedExport(
                f"line {header_lines + 1} is not the column header {','.join(COLUMNS)}"
            )
        for fields in reader:
            where = f"line {reader.line_num + header_lines}"
            if len(fields) != len(COLUMNS):
                raise MalformedExport(f"{where} has {len(fields)} fields, not {len(COLUMNS)}")
            number, cat, risk, score, markers, appeal, entry = fields
            if not score.isascii() or not score.isdigit() or str(int(score)) != score:
                raise MalformedExport(f"{where}: score {score[:20]!r} is not a whole number")
            yield Row(
                number, cat or None, risk, int(score), tuple(markers.split()) if markers else (),
                appeal, _entry_bytes(entry, where),
            )
    except csv.Error as e:
        raise MalformedExport(f"line {reader.line_num + header_lines} is not CSV: {e}") from e


def _no_float(s: str) -> Any:
    raise ValueError(f"{s} is not a whole number")


# ====================================================================== verifying


@dataclass(frozen=True)
class ExportSummary:
    """What the rows of a verified export hold."""

    entries: int
    root: bytes


def verify_rows(cp: ViewCheckpoint, rows: Iterable[Row]) -> ExportSummary:
    """Check that `rows` are exactly the view `cp` signs: each entry decodes
    (canonical bytes) and is the row's number, its readable columns are the
    entry evaluated at `cp.signed_at_ms`, the rows ascend by number, and
    their count and root are the checkpoint's. The signatures on `cp` are the
    caller's to check. Raises MalformedExport or ExportMismatch, naming the row."""
    items: list[tuple[str, bytes]] = []
    prev = b""
    for i, row in enumerate(rows, start=1):
        if row.removed:
            raise ExportMismatch(
                f"row {i} ({row.number}) has no entry: only a delta, read with its base, removes"
            )
        try:
            entry = Entry.decode(row.entry)
        except BadInput as e:
            raise MalformedExport(f"row {i}: the entry does not decode: {e}") from e
        if entry.number != row.number:
            raise ExportMismatch(f"row {i} says {row.number[:40]!r}, its entry is {entry.number}")
        key = row.number.encode("utf-8")
        if key <= prev:
            raise ExportMismatch(
                f"row {i} ({row.number}) is out of order: rows ascend by number, each number once"
            )
        prev = key
        want = row_of(entry, cp.signed_at_ms, row.entry)  # the bytes it was decoded from
        if want.readable() != row.readable():
            bad = [c for c, a, b in zip(COLUMNS, want.readable(), row.readable(), strict=False)
                   if a != b]
            raise ExportMismatch(
                f"row {i} ({row.number}): {', '.join(bad)} not what its entry says then"
            )
        items.append((row.number, entry_hash(row.entry)))
    if len(items) != cp.count:
        raise ExportMismatch(f"{len(items)} rows; the checkpoint counts {cp.count} entries")
    root = tree_root(items)
    if root != cp.root:
        raise ExportMismatch(
            f"the rows' root {root.hex()[:16]}… is not the checkpoint's {cp.root.hex()[:16]}…"
        )
    return ExportSummary(len(items), root)


# ====================================================================== deltas


def _key(row: Row) -> bytes:
    return row.number.encode("utf-8")


def delta_rows(old: Iterable[Row], new: Iterable[Row]) -> Iterator[Row]:
    """The rows of a delta from the export `old` to the export `new` (both
    ascending): `new`'s rows whose entry bytes `old` lacks, and a removal row
    for each number `old` has and `new` has not."""
    it_old, it_new = iter(old), iter(new)
    o, n = next(it_old, None), next(it_new, None)
    while o is not None or n is not None:
        if n is None or (o is not None and _key(o) < _key(n)):
            assert o is not None
            yield Row.removal(o.number)
            o = next(it_old, None)
        elif o is None or _key(n) < _key(o):
            yield n
            n = next(it_new, None)
        else:
            if n.entry != o.entry:
                yield n
            o, n = next(it_old, None), next(it_new, None)


def apply_delta(base: Iterable[Row], delta: Iterable[Row], at_ms: int) -> Iterator[Row]:
    """The rows of the whole view a delta leads to from its (verified) base:
    a delta row replaces or removes the base's row of its number; the base
    rows it leaves are evaluated again at `at_ms` (the delta's checkpoint
    time). Check the result with `verify_rows`. Raises ExportMismatch for
    delta rows out of order, or removing a number the base lacks (or a
    removal row with readable columns), MalformedExport for a base entry
    that does not decode."""
    it_base, it_delta = iter(base), iter(delta)
    b, d = next(it_base, None), next(it_delta, None)
    prev = b""
    while b is not None or d is not None:
        if d is not None:
            if _key(d) <= prev:
                raise ExportMismatch(f"delta row {d.number} is out of order or repeated")
            if d.removed and d != Row.removal(d.number):
                raise ExportMismatch(f"delta row {d.number} removes it yet has readable columns")
        if d is None or (b is not None and _key(b) < _key(d)):
            assert b is not None
            try:
                yield row_of(Entry.decode(b.entry), at_ms, b.entry)
            except BadInput as e:
                raise MalformedExport(f"base row {b.number}: the entry does not decode") from e
            b = next(it_base, None)
            continue
        same = b is not None and _key(b) == _key(d)
        if d.removed and not same:
            raise ExportMismatch(f"delta row {d.number} removes a number the base does not hold")
        if not d.removed:
            yield d
        prev = _key(d)
        d = next(it_delta, None)
        if same:
            b = next(it_base, None)


# ====================================================================== statistics


def _nearest_rank(values: list[int], pct: int) -> int | None:
    """The smallest value with at least `pct` percent of `values` at or below it."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(pct * len(s) / 100) - 1)]


def figures(entries: Iterable[Entry], at_ms: int) -> dict[str, Any]:
    """The statistics page's figures over the entries of one export, each
    evaluated at `at_ms`: entries by resolved category (null: none) and risk,
    counting marks by participant, appeals by status (an appeal that targets
    marks on several numbers is counted once), and the time from filing to
    decision (upheld or rejected) in ms: median and p90 by nearest rank."""
    by_category: Counter[str] = Counter()
    by_risk: Counter[str] = Counter(dict.fromkeys(RISKS, 0))
    marks: Counter[str] = Counter()
    appeals: dict[bytes, tuple[str, int, int | None]] = {}
    n = 0
    for entry in entries:
        n += 1
        r = entry.evaluate(at_ms)
        by_category[r.category or "none"] += 1
        by_risk[r.risk] += 1
        marks.update(m.participant for m in r.markers)
        for a in r.appeals:
            appeals[a.appeal_id] = (a.status, a.filed_at, a.decided_at)
    status: Counter[str] = Counter(dict.fromkeys(APPEAL_STATUSES, 0))
    waits: list[int] = []
    for st, filed, decided in appeals.values():
        status[st] += 1
        if st in DECIDED and decided is not None:
            waits.append(decided - filed)
    return {
        "entries": n,
        "by_category": dict(sorted(by_category.items())),
        "by_risk": dict(by_risk),
        "marks_by_participant": dict(sorted(marks.items())),
        "appeals": {
            "pending": status["pending"],
            "decided": sum(status[s] for s in DECIDED),
            "upheld": status["upheld"],
            "rejected": status["rejected"],
            "withdrawn": status["withdrawn"],
        },
        "decision_ms": {
            "count": len(waits),
            "median": _nearest_rank(waits, 50),
            "p90": _nearest_rank(waits, 90),
        },
    }


def rows_text(fmt: Format, checkpoint_note: str, rows: Iterable[Row]) -> str:
    """The whole export as one string (what a download serves)."""
    buf = io.StringIO()
    write_export(buf, fmt, checkpoint_note, rows)
    return buf.getvalue()
