"""`markex import --as ID FILE`: bulk issue from a JSONL or CSV file through
Admin.IssueMany (docs/import.md). Every item carries an idempotency key (the
line's own, or one derived from its content: ledger/importfile.py), so
rerunning a file after a crash, a kill or a lost connection issues nothing
twice: resuming is the default. A bad line is reported with its line number
and the others go on, unless --strict (then nothing after it is sent).
node/cli.py runs this by name."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ledger.importfile import Item, Refused, read_csv, read_jsonl, sniff
from node.command import Exit, UsageError, acting, node_endpoints, pinned_consortium, show
from node.connect import Connect, Dial

PROGRESS_EVERY_S = 0.25
PROGRESS_MIN_LINES = 200  # a shorter file gets no progress bar
BATCH = 500  # items per IssueBatch message (the node takes at most 1000)
SHOWN_ERRORS = 50  # bad lines the human summary lists


def to_pb(it: Item) -> Any:
    """The IssueItem of an item (fields as ledger/importfile.py normalized them)."""
    from markex.v1 import record_pb2 as rpb
    from markex.v1 import service_pb2 as pb

    f, key = it.fields, it.key.encode()
    if it.kind == "mark":
        return pb.IssueItem(key=key, expires_after_ms=f["expires_ms"], mark=rpb.Mark(
            number=f["number"], category=f["category"], score=f["score"], reports=f["reports"],
            observed_at_ms=f.get("observed_ms", 0)))
    if it.kind == "correct":
        action = (rpb.CORRECTION_ACTION_WITHDRAW if f["withdraw"]
                  else rpb.CORRECTION_ACTION_RECATEGORIZE)
        return pb.IssueItem(key=key, correction=pb.CorrectionRequest(
            targets=[f["target"]], action=action, category=f.get("category", ""),
            reason=f.get("reason", ""), wait_for_target=f["wait_for_target"]))
    if it.kind == "decide":
        outcome = rpb.APPEAL_OUTCOME_UPHOLD if f["uphold"] else rpb.APPEAL_OUTCOME_REJECT
        return pb.IssueItem(key=key, correction=pb.CorrectionRequest(
            appeal_id=f["appeal"], outcome=outcome, reason=f.get("reason", "")))
    if it.kind == "reassign":
        return pb.IssueItem(key=key, reassignment=rpb.Reassignment(
            number=f["number"], effective_at_ms=f["at"]))
    if it.kind == "prefer":
        return pb.IssueItem(key=key, preference=pb.PreferenceRequest(
            number=f["number"], refuse=list(f["refuse"]), modes=list(f.get("modes", ())),
            days=list(f.get("days", ())),
            allowed=[rpb.TimeBand(start_minute=a, end_minute=b) for a, b in f.get("hours", ())],
            effective_from_ms=f.get("from", 0), until_ms=f.get("until", 0)))
    if it.kind == "line-register":
        return pb.IssueItem(key=key, line=rpb.MarketerLine(
            number=f["number"], prefix=f["prefix"], enterprise=f["enterprise"],
            uscc=f["uscc"], industry=f["industry"]))
    if it.kind == "line-deregister":
        return pb.IssueItem(key=key, line=rpb.MarketerLine(deregisters=f["target"]))
    if it.kind == "complain":
        return pb.IssueItem(key=key, complaint=pb.ComplaintRequest(
            number=f["number"], category=f["category"], call_at_ms=f["at"],
            channel=f["channel"], complainant=f["complainant"],
            description=f.get("description", "")))
    if it.kind == "handle":
        from ledger.payloads.handling import ACTION_CODES, FINDING_CODES

        return pb.IssueItem(key=key, handling=rpb.Handling(
            complaints=[f["complaint"]], finding=FINDING_CODES[f["finding"]],
            forward_to=f["forward"], action=ACTION_CODES[f["action"]], mark_id=f.get("mark", b""),
            feedback_reported_at_ms=f.get("feedback_reported", 0),
            feedback_complainant_at_ms=f.get("feedback_complainant", 0)))
    if it.kind == "sanction":
        return pb.IssueItem(key=key, sanction=rpb.Sanction(
            enterprise=f["name"], uscc=f["uscc"], licence=f.get("licence", ""),
            reason=f.get("reason", ""), document=f["doc"], listed_at_ms=f.get("at", 0),
            delist=f["delist"]))
    raise AssertionError(f"no IssueItem for kind {it.kind!r}")


class Tally:
    """What the import did so far (read by the progress bar's thread)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.issued = 0
        self.duplicates = 0
        self.errors: list[tuple[int, str]] = []
        self.last_line = 0
        self.started = time.monotonic()

    def summary(self) -> dict[str, Any]:
        errors = sorted(self.errors)
        return {"issued": self.issued, "duplicates": self.duplicates,
                "errors": [{"line": n, "error": e} for n, e in errors]}


class Progress:
    """A one-line progress bar on stderr, redrawn a few times a second."""

    def __init__(self, tally: Tally, out: IO[str]) -> None:
        self.tally, self.out = tally, out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="import-progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._draw()
        self.out.write("\n")

    def _run(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY_S):
            self._draw()

    def _draw(self) -> None:
        t = self.tally
        done = max(t.last_line, 1)
        width = 30
        fill = min(width, width * done // max(t.total, 1))
        rate = (t.issued + t.duplicates) / max(time.monotonic() - t.started, 1e-3)
        self.out.write(f"\r[{'#' * fill}{'.' * (width - fill)}] line {t.last_line}/{t.total}  "
                       f"{t.issued} issued, {t.duplicates} duplicates, {len(t.errors)} errors, "
                       f"{rate:,.0f}/s ")
        self.out.flush()


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", newline="") as f:
        yield from f


def _entries(path: Path, fmt: str) -> Iterator[Item | Refused]:
    if fmt == "csv":
        return read_csv(_lines(path))
    return read_jsonl(_lines(path))


def _count_lines(path: Path) -> int:
    """The file's lines; UsageError when it is not UTF-8 (before anything is sent)."""
    n = 0
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for n, _ in enumerate(f, 1):  # noqa: B007 - the count is what is wanted
                pass
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text: {e}") from e
    return n


def cmd_import(args: argparse.Namespace, connect: Connect) -> int:
    import grpc

    from ledger.errors import BadInput

    d, cons = pinned_consortium(args)
    who = acting(args, cons)
    ep = node_endpoints(cons, args.node or who)
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    total = _count_lines(path)
    with path.open(encoding="utf-8") as f:
        first = f.readline()
    fmt = args.format or ("csv" if path.suffix.lower() == ".csv" else
                          "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else sniff(first))
    entries = _entries(path, fmt)
    try:  # the CSV header is checked before anything is sent
        head = next(entries, None)
    except BadInput as e:
        raise UsageError(f"{path}: {e}") from e
    tally = Tally(total)
    sent: deque[Item] = deque()
    stop = threading.Event()  # --strict: a refusal came back, send nothing more
    # closed in the finally below
    results_out = Path(args.results).open("w", encoding="utf-8") if args.results else None  # noqa: SIM115

    def requests() -> Iterator[Any]:
        from markex.v1 import service_pb2 as pb

        batch = pb.IssueBatch()
        pending = [head] if head is not None else []
        for e in _chain(pending, entries):
            if stop.is_set():
                return
            if isinstance(e, Refused):
                tally.errors.append((e.line, e.error))
                tally.last_line = e.line
                _write_result(results_out, {"line": e.line, "error": e.error})
                if args.strict:
                    break
                continue
            sent.append(e)
            batch.items.append(to_pb(e))
            if len(batch.items) >= BATCH:
                yield batch
                batch = pb.IssueBatch()
        if batch.items and not stop.is_set():
            yield batch

    def consume() -> None:
        stub = connect("admin", Dial(d, ep, who))
        for rs in stub.IssueMany(requests(), timeout=args.timeout or None):
            for r in rs.results:
                _take(r, sent.popleft())

    def _take(r: Any, it: Item) -> None:
        tally.last_line = it.line
        if r.code:
            tally.errors.append((it.line, f"line {it.line}: {r.error}"))
            _write_result(results_out, {"line": it.line, "key": it.key, "code": r.code,
                                        "error": r.error})
            if args.strict:
                stop.set()
            return
        if r.duplicate:
            tally.duplicates += 1
        else:
            tally.issued += 1
        _write_result(results_out, {"line": it.line, "key": it.key, "id": r.id.hex(),
                                    "seq": r.seq, "index": r.index, "duplicate": r.duplicate})

    bar = (Progress(tally, sys.stderr) if sys.stderr.isatty() and not args.json
           and tally.total >= PROGRESS_MIN_LINES else None)
    try:
        if bar is not None:
            with bar:
                consume()
        else:
            consume()
    except grpc.RpcError:
        s = tally.summary()
        print(f"import stopped after line {tally.last_line}: {s['issued']} issued, "
              f"{s['duplicates']} duplicates, {len(s['errors'])} errors so far; run the same "
              "file again to finish: nothing is issued twice", file=sys.stderr)
        raise
    finally:
        if results_out is not None:
            results_out.close()
    s = tally.summary()
    lines = [f"{s['issued']} issued, {s['duplicates']} duplicates (issued before), "
             f"{len(s['errors'])} errors"]
    lines += [f"  {e['error']}" for e in s["errors"][:SHOWN_ERRORS]]
    if len(s["errors"]) > SHOWN_ERRORS:
        lines.append(f"  ... and {len(s['errors']) - SHOWN_ERRORS} more (--json or --results "
                     "list every one)")
    show(args, s, "\n".join(lines))
    return int(Exit.USAGE) if s["errors"] else 0


def _chain(first: list[Item | Refused], rest: Iterator[Item | Refused]
           ) -> Iterator[Item | Refused]:
    yield from first
    yield from rest


def _write_result(out: IO[str] | None, obj: dict[str, Any]) -> None:
    if out is not None:
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")
