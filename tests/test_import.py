"""Bulk issue on real nodes: `markex import` and Admin.IssueMany.

In-process nodes (real gRPC and TLS, as tests/test_cli.py runs them): a file
imported, then imported again, issues nothing the second time (every line a
duplicate with the same ids); bad input is refused with its line number and
changes nothing else (a malformed line, an unknown column, a key reused with
other content, --strict). With real processes: a node killed with SIGKILL
while a long import runs, restarted, and the import rerun, ends with every
line issued exactly once. The file format alone: ledger/importfile.py."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.layout import NodeConfig
from ledger.errors import InvalidNumber
from ledger.importfile import (
    BadLine,
    ImportFileError,
    Item,
    Refused,
    derived_key,
    read_csv,
    read_jsonl,
)
from ledger.log import NodeLedger
from ledger.payloads.line import uscc_check_char
from ledger.record import Record
from ledger.store import Store
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from node.cli import main
from node.client import INSTITUTE_KEY_ENV
from node.localnet import LocalNet
from tests.test_cli import InProcessNet

pytestmark = pytest.mark.timeout(300)

ISSUER = "carrier-1"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessNet]:
    n = InProcessNet(tmp_path_factory.mktemp("import") / "c", carriers=1, internet=0,
                     sync_interval=0.2)
    yield from n.serving_pinned()


def cli(*argv: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    try:
        return code, json.loads(out.getvalue()), err.getvalue()
    except json.JSONDecodeError:
        return code, out.getvalue(), err.getvalue()


def run_import(net: LocalNet, path: Path, *extra: str) -> tuple[int, Any, str, list[dict]]:
    """`markex import --json` of path as carrier-1; (exit code, summary, stderr, results)."""
    results = path.with_suffix(path.suffix + ".results")
    code, out, err = cli("import", "--consortium", str(net.dir), "--as", ISSUER, str(path),
                         "--json", "--results", str(results), *extra)
    rows = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    return code, out, err, rows


def seq(net: LocalNet, pid: str = ISSUER) -> int:
    return net.heads(pid).get(ISSUER, 0)


_counter = iter(range(10**6))


def numbers(n: int) -> list[str]:
    """n numbers no other test of this module marks."""
    base = next(_counter) * 10_000
    return [f"+86139{base + i:08d}" for i in range(n)]


def ago(days: int) -> str:
    """An ISO 8601 time `days` days ago, to the second."""
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)
    return t.isoformat()


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------ the file alone


def test_jsonl_items_fields_and_derived_keys() -> None:
    got = list(read_jsonl([
        '{"kind": "mark", "number": "13812345678", "category": "fraud", "score": 80}',
        "",
        '{"kind": "mark", "number": "+8613812345678", "category": "fraud", "score": 80}',
        '{"kind": "reassign", "number": "13812345678", "at": "2026-12-01T00:00:00Z", '
        '"key": "r-1"}',
        '{"kind": "mark", "number": "13812345678", "category": "fraud", "colour": "red"}',
        "not json",
        '{"kind": "mark", "number": "12", "category": "fraud"}',
    ]))
    a, b, r, colour, bad, short = got
    assert isinstance(a, Item) and isinstance(b, Item) and isinstance(r, Item)
    assert a.fields["number"] == "+8613812345678" and a.fields["reports"] == 1
    assert a.key == b.key and a.derived  # the same content in any form: one key
    assert a.key == derived_key("mark", a.fields) and len(a.key.encode()) <= 128
    assert (r.key, r.derived, r.line, r.fields["at"]) == ("r-1", False, 4, 1796083200000)
    assert isinstance(colour, Refused) and colour.line == 5 and "'colour'" in colour.error
    assert isinstance(bad, Refused) and bad.error.startswith("line 6: BadLine: not a JSON")
    assert isinstance(short, Refused) and "InvalidNumber" in short.error
    assert issubclass(BadLine, Exception) and issubclass(InvalidNumber, Exception)


def test_csv_header_is_checked_before_any_row() -> None:
    rows = list(read_csv(["key,number,category,score\n", "a,13812345678,fraud,70\n",
                          "b,13812345679,fraud,101\n", "c,13812345670\n"]))
    assert isinstance(rows[0], Item) and rows[0].key == "a" and rows[0].fields["score"] == 70
    assert isinstance(rows[1], Refused) and rows[1].line == 3 and "'score'" in rows[1].error
    assert isinstance(rows[2], Refused) and rows[2].line == 4 and "columns" in rows[2].error
    for header, what in (("number,category,colour\n", "unknown column 'colour'"),
                         ("number,number,category\n", "appears twice"),
                         ("number,score\n", "no 'category'")):
        with pytest.raises(ImportFileError, match=what):
            list(read_csv([header, "13812345678,fraud,x\n"]))


# ------------------------------------------------------------------ on nodes


def test_a_file_imported_again_issues_nothing(net: InProcessNet, tmp_path: Path) -> None:
    nums = numbers(30)
    marks = write(tmp_path / "marks.csv", ["number,category,score,reports,expires_days,key"] + [
        f"{n},fraud,{50 + i},{i},{i % 3},{'k-' + n if i % 2 else ''}" for i, n in enumerate(nums)
    ])
    before = seq(net)
    code, out, err, first = run_import(net, marks)
    assert (code, out) == (0, {"issued": 30, "duplicates": 0, "errors": []}), err
    assert seq(net) == before + 30
    assert [r["line"] for r in first] == list(range(2, 32))
    # Corrections, decisions' kin and reassignments through the same stream.
    own = first[0]["id"]
    mixed = write(tmp_path / "mixed.jsonl", [
        json.dumps({"kind": "correct", "target": own, "category": "harassment",
                    "reason": "recategorized"}),
        json.dumps({"kind": "reassign", "number": nums[5], "at": ago(1)}),
        json.dumps({"kind": "mark", "number": nums[7], "category": "marketing",
                    "at": ago(2), "key": "campaign-7"}),
    ])
    code, out, err, second = run_import(net, mixed)
    assert (code, out) == (0, {"issued": 3, "duplicates": 0, "errors": []}), out
    assert seq(net) == before + 33
    for path, rows in ((marks, first), (mixed, second)):
        code, out, err, again = run_import(net, path)
        assert code == 0, err
        assert out == {"issued": 0, "duplicates": len(rows), "errors": []}
        assert [(r["id"], r["seq"], r["index"]) for r in again] == [
            (r["id"], r["seq"], r["index"]) for r in rows]
        assert all(r["duplicate"] for r in again)
    assert seq(net) == before + 33  # nothing issued twice
    # expires_days counts from when the mark was observed (here: when it was signed)
    got = net.audit(ISSUER).GetRecord(pb.GetRecordRequest(id=bytes.fromhex(first[2]["id"])),
                                      timeout=30)
    m = Record.from_envelope(got.envelope).payload
    assert m.expires_at_ms - m.observed_at_ms == 2 * 86_400_000


def test_preferences_and_lines_import_like_the_other_kinds(net: InProcessNet,
                                                           tmp_path: Path) -> None:
    prefix = net.consortium.number_ranges[ISSUER][0]
    sub = f"{prefix}{next(_counter):08d}"
    line = f"{prefix}9{next(_counter):07d}"
    f = write(tmp_path / "consent.jsonl", [
        json.dumps({"kind": "prefer", "number": sub, "refuse": "real-estate,finance",
                    "hours": "09-12", "days": "weekday"}),
        json.dumps({"kind": "line-register", "number": line, "enterprise": "安家房产",
                    "uscc": "91440300MA5F000007", "industry": "real-estate"}),
        json.dumps({"kind": "prefer", "number": sub, "refuse": ["no-such-industry"]}),
    ])
    before = seq(net)
    code, out, err, rows = run_import(net, f)
    assert (out["issued"], [e["line"] for e in out["errors"]]) == (2, [3]), out
    assert "UnknownIndustry" in out["errors"][0]["error"]
    reg = rows[1]["id"]
    undo = write(tmp_path / "unline.jsonl", [
        json.dumps({"kind": "line-deregister", "target": reg}),
        json.dumps({"kind": "prefer", "number": sub, "refuse": "none"})])
    code, out, err, rows = run_import(net, undo)
    assert (code, out["issued"]) == (0, 2), out
    assert seq(net) == before + 4
    code, out, err, rows = run_import(net, f)  # again: the two issued are duplicates
    assert (out["issued"], out["duplicates"]) == (0, 2)


def test_bad_lines_are_reported_with_their_number(net: InProcessNet, tmp_path: Path) -> None:
    a, b, c = numbers(3)
    f = write(tmp_path / "bad.jsonl", [
        json.dumps({"kind": "mark", "number": a, "category": "fraud"}),
        '{"kind": "mark", "number": ',                                   # line 2: malformed
        json.dumps({"kind": "mark", "number": b, "category": "no-such"}),  # 3: the node refuses
        json.dumps({"kind": "sing", "number": b}),                       # 4: no such kind
        json.dumps({"kind": "correct", "target": "00" * 32, "withdraw": True}),  # 5: not found
        json.dumps({"kind": "mark", "number": c, "category": "fraud"}),
    ])
    before = seq(net)
    code, out, err, rows = run_import(net, f)
    assert code == 2
    assert (out["issued"], out["duplicates"]) == (2, 0)
    errors = {e["line"]: e["error"] for e in out["errors"]}
    assert sorted(errors) == [2, 3, 4, 5]
    assert errors[2].startswith("line 2: BadLine: not a JSON object")
    assert errors[3].startswith("line 3: UnknownCategory:")
    assert "'kind' must be one of" in errors[4] or '"kind" must be one of' in errors[4]
    assert errors[5].startswith("line 5: UnknownTarget:")
    coded = {r["line"]: r["code"] for r in rows if "code" in r}
    assert coded == {3: "INVALID_ARGUMENT", 5: "NOT_FOUND"}
    assert seq(net) == before + 2


def test_an_unknown_column_refuses_the_file(net: InProcessNet, tmp_path: Path) -> None:
    (n,) = numbers(1)
    f = write(tmp_path / "cols.csv", ["number,category,colour", f"{n},fraud,red"])
    before = seq(net)
    code, out, err = cli("import", "--consortium", str(net.dir), "--as", ISSUER, str(f),
                         "--json")
    assert code == 2 and out == ""
    assert "unknown column 'colour'" in json.loads(err)["error"]["message"]
    assert seq(net) == before


def test_a_file_that_is_not_utf8_is_refused_whole(net: InProcessNet, tmp_path: Path) -> None:
    (n,) = numbers(1)
    f = tmp_path / "latin1.csv"
    f.write_bytes(f"number,category\n{n},fraud\n".encode() + b"\xff\xfe,fraud\n")
    before = seq(net)
    code, out, err = cli("import", "--consortium", str(net.dir), "--as", ISSUER, str(f))
    assert code == 2 and "is not UTF-8 text" in err
    assert seq(net) == before


def test_the_human_summary_names_each_bad_line(net: InProcessNet, tmp_path: Path) -> None:
    a, b = numbers(2)
    f = write(tmp_path / "human.csv", ["number,category", f"{a},fraud", "12,fraud", f"{b},fraud"])
    code, out, err = cli("import", "--consortium", str(net.dir), "--as", ISSUER, str(f))
    assert code == 2
    assert out.splitlines()[0] == "2 issued, 0 duplicates (issued before), 1 errors"
    assert out.splitlines()[1].startswith("  line 3: InvalidNumber:")


def test_a_key_reused_with_other_content_is_refused(net: InProcessNet, tmp_path: Path) -> None:
    a, b = numbers(2)
    first = write(tmp_path / "k1.jsonl", [
        json.dumps({"kind": "mark", "number": a, "category": "fraud", "key": "ticket-1"})])
    code, out, err, rows = run_import(net, first)
    assert code == 0 and out["issued"] == 1, err
    before = seq(net)
    other = write(tmp_path / "k2.jsonl", [
        json.dumps({"kind": "mark", "number": b, "category": "fraud", "key": "ticket-1"})])
    code, out, err, bad = run_import(net, other)
    assert code == 2 and out["issued"] == 0
    assert bad[0]["code"] == "ALREADY_EXISTS"
    assert bad[0]["error"].startswith("IdempotencyConflict: the idempotency key 'ticket-1'")
    assert seq(net) == before
    code, out, err, again = run_import(net, first)  # the first content still answers
    assert out["duplicates"] == 1 and again[0]["id"] == rows[0]["id"]


def test_strict_sends_nothing_after_a_bad_line(net: InProcessNet, tmp_path: Path) -> None:
    nums = numbers(5)
    lines = [json.dumps({"kind": "mark", "number": n, "category": "fraud"}) for n in nums]
    lines.insert(2, json.dumps({"kind": "mark", "number": "12", "category": "fraud"}))
    f = write(tmp_path / "strict.jsonl", lines)
    before = seq(net)
    code, out, err, rows = run_import(net, f, "--strict")
    assert code == 2 and out["issued"] == 2
    assert [e["line"] for e in out["errors"]] == [3]
    assert "InvalidNumber" in out["errors"][0]["error"]
    assert seq(net) == before + 2
    code, out, err, rows = run_import(net, f)  # without --strict: the rest, nothing twice
    assert (out["issued"], out["duplicates"], len(out["errors"])) == (3, 2, 1)


def test_issue_many_in_one_stream(net: InProcessNet) -> None:
    """Keys repeated inside one stream (one group commit): the first record
    again, or IdempotencyConflict; results in order, one per item."""
    a, b = numbers(2)

    def mark(number: str, key: bytes, category: str = "fraud") -> pb.IssueItem:
        return pb.IssueItem(key=key, mark=rpb.Mark(number=number, category=category, score=60))

    before = seq(net)
    items = [mark(a, b"s-1"), mark(a, b"s-1"), mark(b, b"s-1"), mark(b, b""), pb.IssueItem(),
             mark(b, b"x" * 129)]
    got = list(net.admin(ISSUER).IssueMany(iter([pb.IssueBatch(items=items[:3]),
                                                 pb.IssueBatch(items=items[3:])]), timeout=30))
    assert [len(b.results) for b in got] == [3, 3]
    res = [r for b in got for r in b.results]
    assert [r.item for r in res] == list(range(6))
    assert not res[0].code and not res[0].duplicate
    assert res[1].duplicate and res[1].id == res[0].id and res[1].seq == res[0].seq
    assert res[2].code == "ALREADY_EXISTS" and res[2].error.startswith("IdempotencyConflict")
    assert not res[3].code and res[3].seq == res[0].seq + 1
    assert res[4].code == "INVALID_ARGUMENT" and "no payload" in res[4].error
    assert res[5].code == "INVALID_ARGUMENT" and "at most 128" in res[5].error
    assert seq(net) == before + 2
    # The same number in another form is the same content: the key's first record.
    national = a.removeprefix("+86")
    (again,) = next(iter(net.admin(ISSUER).IssueMany(
        iter([pb.IssueBatch(items=[mark(national, b"s-1")])]), timeout=30))).results
    assert again.duplicate and again.id == res[0].id
    # Only the node's own participant issues, as for the unary Issue* RPCs.
    with pytest.raises(grpc.RpcError) as e:
        list(net.admin(ISSUER, as_id="institute").IssueMany(
            iter([pb.IssueBatch(items=[mark(a, b"")])]), timeout=30))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as e:  # a batch over the limit ends the stream
        list(net.admin(ISSUER).IssueMany(
            iter([pb.IssueBatch(items=[mark(a, b"")] * 1001)]), timeout=30))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert seq(net) == before + 2


def test_items_share_the_writers_group_commits(net: InProcessNet,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Many items, few synced writes: not one fsync per item."""
    node = next(n for n in net.nodes_running if n.core.participant_id == ISSUER)
    store = node.core.ledger.store
    synced = []
    real = store.write

    def counting(batch: Any, *, sync: bool = True) -> None:
        synced.append(sync)
        real(batch, sync=sync)

    monkeypatch.setattr(store, "write", counting)
    items = [pb.IssueItem(mark=rpb.Mark(number=n, category="fraud", score=50))
             for n in numbers(1000)]
    before = seq(net)
    got = list(net.admin(ISSUER).IssueMany(
        iter([pb.IssueBatch(items=items[i:i + 250]) for i in range(0, 1000, 250)]), timeout=60))
    assert sum(len(b.results) for b in got) == 1000
    assert not any(r.code for b in got for r in b.results)
    assert seq(net) == before + 1000
    assert 0 < synced.count(True) <= 100, synced.count(True)


def test_concurrent_streams_get_their_results_in_order_on_one_gap_free_feed(
        net: InProcessNet) -> None:
    """Three IssueMany streams at once (the node signs ahead of its writer):
    each stream's results come in its items' order with rising seqs, the
    seqs of all three are the feed's next ones without a gap, and each
    record names the one before it."""
    node = next(n for n in net.nodes_running if n.core.participant_id == ISSUER)
    before = seq(net)
    got: dict[int, list[pb.IssueResult]] = {}

    def stream(s: int) -> None:
        items = [pb.IssueItem(key=f"c-{s}-{n}".encode(), mark=rpb.Mark(
            number=n, category="fraud", score=50)) for n in numbers(400)]
        got[s] = [r for b in net.admin(ISSUER).IssueMany(iter(
            [pb.IssueBatch(items=items[i:i + 100]) for i in range(0, 400, 100)]), timeout=60)
            for r in b.results]

    threads = [threading.Thread(target=stream, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    seqs = []
    for s in range(3):
        assert [r.item for r in got[s]] == list(range(400))
        assert not any(r.code for r in got[s])
        mine = [r.seq for r in got[s]]
        assert mine == sorted(mine)
        seqs += mine
    assert sorted(seqs) == list(range(before + 1, before + 1201)) and seq(net) == before + 1200
    led = node.core.ledger
    start = max(before - 1, 0)  # from the record before the streams' first, if any
    recs = [Record.from_envelope(e) for e in led.records_after(ISSUER, start, 1201)]
    assert [r.seq for r in recs] == list(range(start + 1, before + 1201))
    assert all(b.prev_id == a.id for a, b in zip(recs, recs[1:], strict=False))
    ids = {r.seq: r.id for r in recs}
    assert all(ids[r.seq] == r.id for s in range(3) for r in got[s])


def test_a_correction_of_another_participants_mark_is_an_appeal(net: InProcessNet) -> None:
    (n,) = numbers(1)
    theirs = net.admin("institute").IssueMark(rpb.Mark(number=n, category="fraud", score=90),
                                              timeout=30)
    net.wait_converged(timeout=60)
    own = net.admin(ISSUER).IssueMark(rpb.Mark(number=n, category="fraud", score=50), timeout=30)
    items = [pb.IssueItem(correction=pb.CorrectionRequest(
        targets=[t], action=rpb.CORRECTION_ACTION_WITHDRAW, reason="courier")) for t in
        (theirs.id, own.id)]
    (got,) = net.admin(ISSUER).IssueMany(iter([pb.IssueBatch(items=items)]), timeout=30)
    appeal, withdrawal = got.results
    assert not appeal.code and appeal.appeal
    assert not withdrawal.code and not withdrawal.appeal


def test_a_batch_while_the_issue_gate_is_shut_is_not_issued(
        net: InProcessNet, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate is asked at the stream's start and again for every batch."""
    node = next(n for n in net.nodes_running if n.core.participant_id == ISSUER)
    answers = iter([None, None, "a peer reports a longer feed of ours"])
    monkeypatch.setattr(node.admin, "issue_refusal", lambda: next(answers))
    a, b = numbers(2)
    before = seq(net)
    got = list(net.admin(ISSUER).IssueMany(iter([
        pb.IssueBatch(items=[pb.IssueItem(mark=rpb.Mark(number=a, category="fraud"))]),
        pb.IssueBatch(items=[pb.IssueItem(mark=rpb.Mark(number=b, category="fraud"))]),
    ]), timeout=30))
    first, second = (b.results[0] for b in got)
    assert not first.code and second.code == "UNAVAILABLE"
    assert "a peer reports a longer feed" in second.error
    assert seq(net) == before + 1


# ------------------------------------------------------------------ real processes


def _children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != "Z":
                out.append(int(d.name))
    return out


def test_a_node_killed_mid_import_loses_nothing_acknowledged_and_a_rerun_issues_each_once(
        tmp_path: Path) -> None:
    """SIGKILL while records are signed ahead of the writer: every result the
    import was sent before the kill is in the restarted node's feed at its
    seq, the feed has no gap, and the rerun issues the rest once."""
    lines = 12_000
    net = LocalNet(tmp_path / "c", carriers=1, internet=0, sync_interval=0.2)
    f = write(tmp_path / "long.csv", ["number,category,score"] + [
        f"+86137{i:08d},fraud,{i % 101}" for i in range(lines)])
    key = NodeConfig.for_participant(net.dir, "institute").institute_key
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(INSTITUTE_KEY_ENV, base64.b64encode(key).decode())
            net.start_all()
            first: dict[str, Any] = {}
            t = threading.Thread(target=lambda: first.update(zip(
                ("code", "out", "err", "rows"), run_import(net, f), strict=True)))
            t.start()
            deadline = time.monotonic() + 60
            results = f.with_suffix(".csv.results")  # the first results the import holds
            while (not results.exists() or results.stat().st_size < 8192) and (
                    time.monotonic() < deadline):
                time.sleep(0.01)
            node = net.nodes[ISSUER].proc
            assert node is not None
            signers = _children(node.pid)  # its signing process (node/signproc.py)
            assert signers, "the node signs its runs in no child process"
            net.kill(ISSUER)
            t.join(60)
            assert first["code"] != 0, "the import ended before the kill"
            deadline = time.monotonic() + 5  # the child holding the key went with it
            while any(Path(f"/proc/{c}").exists() for c in signers):
                assert time.monotonic() < deadline, "the signing process outlived its node"
                time.sleep(0.05)
            assert "run the same file again" in first["err"]
            net.start(ISSUER)
            done = seq(net)
            assert 0 < done < lines
            code, out, err, rows = run_import(net, f)
            assert code == 0, err
            assert out["duplicates"] >= done - len(first["rows"]) >= 0
            assert out["issued"] + out["duplicates"] == lines and out["errors"] == []
            assert out["duplicates"] == done  # what the kill left durable, each once
            assert seq(net) == lines
            assert len({r["id"] for r in rows}) == lines  # every line its own record
            acked = [r for r in first["rows"] if "id" in r]
            assert acked, "nothing was acknowledged before the kill"
            net.stop_all()
            cfg = NodeConfig.for_participant(net.dir, ISSUER)
            led = NodeLedger(Store(cfg.data_dir, read_only=True), net.consortium, ISSUER)
            try:
                recs = [Record.from_envelope(e) for e in led.records_after(ISSUER, 0, lines)]
            finally:
                led.close()
            assert [r.seq for r in recs] == list(range(1, lines + 1))
            assert all(b.prev_id == a.id for a, b in zip(recs, recs[1:], strict=False))
            assert all(recs[r["seq"] - 1].id.hex() == r["id"] for r in acked)  # none lost
            again = {r["key"]: r["id"] for r in rows}
            assert all(again[r["key"]] == r["id"] for r in acked)  # the rerun: the same records
    finally:
        net.stop_all()


# ------------------------------------------------------------------ complaints and sanctions


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def test_complaint_handling_and_sanction_lines_are_checked_alone() -> None:
    cid = "ab" * 32
    lines = [
        json.dumps({"kind": "complain", "number": "13812340201", "category": "marketing",
                    "at": "2026-11-28T10:00:00Z", "channel": "app",
                    "complainant": "139 0000 0009", "description": "三次推销"}),
        json.dumps({"kind": "handle", "complaint": cid, "confirmed": True, "action": "warning",
                    "feedback_reported": "2026-11-28T12:00:00Z"}),
        json.dumps({"kind": "handle", "complaint": cid, "forward": "carrier-2"}),
        json.dumps({"kind": "sanction", "uscc": COMPLAINT_USCC.lower(), "name": "某某营销",
                    "doc": "京通管罚〔2026〕12号", "reason": "harassment calls"}),
        json.dumps({"kind": "complain", "number": "13812340201", "category": "marketing",
                    "at": "2026-11-28T10:00:00Z", "channel": "fax", "complainant": "1"}),
        json.dumps({"kind": "handle", "complaint": cid, "confirmed": True, "forward": "c"}),
        json.dumps({"kind": "handle", "complaint": cid, "not_confirmed": True,
                    "mark": cid}),
        json.dumps({"kind": "sanction", "uscc": "91110000600037340", "name": "x", "doc": "d",
                    "reason": "r"}),
        json.dumps({"kind": "sanction", "uscc": COMPLAINT_USCC, "name": "x", "doc": "d"}),
        json.dumps({"kind": "complain", "number": "13812340201", "category": "marketing",
                    "at": "2026-11-28T10:00:00Z", "channel": "app"}),
    ]
    got = list(read_jsonl(lines))
    c, h, fwd, s = got[:4]
    assert isinstance(c, Item) and c.fields == {
        "number": "+8613812340201", "category": "marketing", "at": ms("2026-11-28T10:00:00Z"),
        "channel": "app", "complainant": "+8613900000009", "description": "三次推销"}
    assert isinstance(h, Item) and h.fields == {
        "complaint": bytes.fromhex(cid), "finding": "confirmed", "forward": "",
        "action": "warning", "feedback_reported": ms("2026-11-28T12:00:00Z")}
    assert isinstance(fwd, Item) and (fwd.fields["finding"], fwd.fields["forward"]) == (
        "not-ours", "carrier-2")
    assert isinstance(s, Item) and s.fields["uscc"] == COMPLAINT_USCC and "at" not in s.fields
    bad = {r.line: r.error for r in got[4:] if isinstance(r, Refused)}
    assert sorted(bad) == [5, 6, 7, 8, 9, 10], got[4:]
    assert "channel" in bad[5] and "wechat" in bad[5]
    assert "exactly one of" in bad[6]
    assert "confirmed" in bad[7] and "only" in bad[7]
    assert bad[8].startswith("line 8: BadCreditCode:")
    assert "reason" in bad[9]
    assert "complainant" in bad[10]


COMPLAINT_USCC = "91110000600037341" + uscc_check_char("91110000600037341")


@pytest.fixture(scope="module")
def cnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessNet]:
    """Two carriers, the complaints centre and the regulator."""
    n = InProcessNet(tmp_path_factory.mktemp("import-complaints") / "c", carriers=2,
                     internet=0, complaints=1, regulators=1, sync_interval=0.2)
    yield from n.serving_pinned()


def import_as(net: LocalNet, who: str, path: Path) -> tuple[int, Any, list[dict]]:
    results = path.with_suffix(".results")
    code, out, _ = cli("import", "--consortium", str(net.dir), "--as", who, str(path),
                       "--json", "--results", str(results))
    return code, out, [json.loads(x) for x in results.read_text().splitlines()]


def payload_of(net: InProcessNet, pid: str, rid: str) -> Any:
    node = next(n for n in net.nodes_running if n.participant_id == pid)
    found = node.core.ledger.record_by_id(bytes.fromhex(rid))
    assert found is not None
    return Record.from_envelope(found[1]).payload


def wait_for(what: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := what()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return got


def test_complaints_handlings_and_sanctions_import(cnet: InProcessNet, tmp_path: Path) -> None:
    from ledger.sealing import COMPLAINANT

    c1, c2 = "+8613812340201", "+8613912340202"   # carrier-1's and carrier-2's
    at = ago(1)
    row = {"kind": "complain", "category": "marketing", "at": at, "channel": "app",
           "complainant": "13900000009", "description": "一天三次推销贷款"}
    f = write(tmp_path / "complaints.jsonl", [
        json.dumps({**row, "number": c1}),
        json.dumps({**row, "number": c2, "complainant": "+8613900000008"}),
        json.dumps({**row, "number": "+8617012340203"}),   # no carrier serves +86170
    ])
    before = cnet.heads("complaints-1").get("complaints-1", 0)
    code, out, rows = import_as(cnet, "complaints-1", f)
    assert (out["issued"], [e["line"] for e in out["errors"]]) == (2, [3]), out
    assert out["errors"][0]["error"].startswith("line 3: WrongAddressee:")
    assert cnet.heads("complaints-1")["complaints-1"] == before + 2
    first, second = rows[0]["id"], rows[1]["id"]
    # sealed as the unary IssueComplaint seals it, the description as its digest only
    c = payload_of(cnet, "complaints-1", first)
    key = cnet.consortium.members_key
    assert key is not None
    assert c.complainant == key.seal("+8613900000009", COMPLAINANT)
    assert c.description_digest == hashlib.sha256("一天三次推销贷款".encode()).digest()
    assert c.addressed_to == "carrier-1"
    unary = cnet.admin("complaints-1").IssueComplaint(pb.ComplaintRequest(
        number=c1, category="marketing", call_at_ms=c.call_at_ms + 1, channel="app",
        complainant="+8613900000009"), timeout=30)
    assert payload_of(cnet, "complaints-1", unary.id.hex()).complainant == c.complainant
    _, envelope = next(n for n in cnet.nodes_running
                       if n.participant_id == "complaints-1").core.ledger.record_by_id(
                           bytes.fromhex(first))
    assert b"13900000009" not in envelope and "推销".encode() not in envelope
    # in the serving carriers' queues on their own nodes
    def queued(pid: str) -> set[str]:
        got = cnet.audit(pid, pid).ListComplaints(pb.ListComplaintsRequest(), timeout=10)
        return {x.id.hex() for x in got.complaints}
    wait_for(lambda: first in queued("carrier-1") and second in queued("carrier-2"))

    handle = write(tmp_path / "handle.jsonl", [
        json.dumps({"kind": "handle", "complaint": first, "confirmed": True,
                    "action": "warning"}),
        json.dumps({"kind": "handle", "complaint": second, "not_confirmed": True}),  # not its
        json.dumps({"kind": "handle", "complaint": first, "not_confirmed": True}),   # handled
    ])
    code, out, rows = import_as(cnet, "carrier-1", handle)
    assert out["issued"] == 1, out
    errors = {e["line"]: e["error"] for e in out["errors"]}
    assert sorted(errors) == [2, 3]
    assert errors[2].startswith("line 2: NotAddressed:"), errors
    assert errors[3].startswith("line 3: AlreadyHandled:"), errors
    h = payload_of(cnet, "carrier-1", rows[0]["id"])
    assert (h.finding, h.action, list(h.complaints)) == ("confirmed", "warning",
                                                         [bytes.fromhex(first)])
    code, out, rows = import_as(cnet, "carrier-1", handle)   # again: nothing new
    assert (out["issued"], out["duplicates"]) == (0, 1), out

    listed = json.dumps({"kind": "sanction", "uscc": COMPLAINT_USCC, "name": "北京某某营销",
                         "doc": "京通管罚〔2026〕12号", "reason": "harassment calls",
                         "at": ago(1)})
    never = "91110000MA0123456" + uscc_check_char("91110000MA0123456")
    f = write(tmp_path / "sanctions.jsonl", [
        listed,
        json.dumps({"kind": "sanction", "uscc": never, "name": "x", "doc": "d",
                    "delist": True}),
        json.dumps({"kind": "sanction", "uscc": COMPLAINT_USCC, "name": "北京某某营销",
                    "doc": "京通管罚〔2026〕30号", "delist": True}),   # effective when signed
    ])
    before = cnet.heads("regulator-1").get("regulator-1", 0)
    code, out, rows = import_as(cnet, "regulator-1", f)
    assert out["issued"] == 2, out
    assert [e["line"] for e in out["errors"]] == [2]
    assert out["errors"][0]["error"].startswith("line 2: NotListed:")
    assert cnet.heads("regulator-1")["regulator-1"] == before + 2
    s = payload_of(cnet, "regulator-1", rows[0]["id"])
    assert (s.uscc, s.delist) == (COMPLAINT_USCC, False)
    d = payload_of(cnet, "regulator-1", rows[2]["id"])
    assert d.delist and d.listed_at_ms > s.listed_at_ms


def test_a_line_prefix_reads_as_markex_line_register_reads_it() -> None:
    """One parser for NUMBER_OR_PREFIX (ledger.payloads.line.parse_line_number):
    the import and the command give the same prefix, 00 included."""
    from ledger.importfile import _line_number
    from node.consentcli import line_number

    for text in ("400*", "+86400*", "0755 8*", "00852*", "13812345678"):
        assert _line_number(text, "number") == line_number(text)
    assert _line_number("00852*", "number") == ("+852", True)


# ------------------------------------------------------------------ unary and bulk alike

UNARY = {"mark": "IssueMark", "correction": "IssueCorrection",
         "reassignment": "IssueReassignment", "sanction": "IssueSanction"}


def issue_both(net: InProcessNet, pid: str, kind: str, request: Any) -> tuple[Any, Any]:
    """`request` issued by its unary Admin call, then as one IssueMany item:
    (the unary reply, the bulk result), each issued."""
    unary = getattr(net.admin(pid), UNARY[kind])(request, timeout=30)
    (bulk,) = next(iter(net.admin(pid).IssueMany(
        iter([pb.IssueBatch(items=[pb.IssueItem(**{kind: request})])]), timeout=30))).results
    assert not bulk.code, bulk.error
    return unary, bulk


def fixed_clock(net: InProcessNet, monkeypatch: pytest.MonkeyPatch, *pids: str) -> int:
    """These nodes' clock stopped at now: the times a node fills in are equal
    in two records issued one after the other."""
    from node.core import wall_ms

    t = wall_ms()
    for n in net.nodes_running:
        if n.participant_id in pids:
            monkeypatch.setattr(n.core, "clock", lambda: t)
    return t


def test_unary_and_bulk_issue_of_a_request_sign_one_payload(
        cnet: InProcessNet, monkeypatch: pytest.MonkeyPatch) -> None:
    """IssueMark, IssueCorrection (a withdrawal and an appeal) and
    IssueReassignment build their payload with IssueMany's builders
    (node/bulkissue.py): the same request is the same payload, and the same
    appeal flag, either way; a mark's observed_at_ms 0 is the node's clock in both."""
    institute = cnet.admin("institute").IssueMark(
        rpb.Mark(number="+8613812349902", category="fraud", score=90), timeout=30)
    carrier = next(n for n in cnet.nodes_running if n.participant_id == "carrier-1")
    wait_for(lambda: carrier.core.ledger.record_by_id(institute.id))
    t = fixed_clock(cnet, monkeypatch, "carrier-1")
    mark = rpb.Mark(number="+8613812349901", category="fraud", score=60, reports=2)
    pairs = [("mark", *issue_both(cnet, "carrier-1", "mark", mark))]
    own = pairs[0][1].id
    for kind, request in [
        ("correction", pb.CorrectionRequest(targets=[own], reason="wrong number",
                                            action=rpb.CORRECTION_ACTION_WITHDRAW)),
        ("correction", pb.CorrectionRequest(targets=[institute.id], reason="a courier",
                                            action=rpb.CORRECTION_ACTION_WITHDRAW)),
        ("reassignment", rpb.Reassignment(number="+8613812349903", effective_at_ms=t - 1000)),
    ]:
        pairs.append((kind, *issue_both(cnet, "carrier-1", kind, request)))
    for kind, unary, bulk in pairs:
        assert payload_of(cnet, "carrier-1", unary.id.hex()) == payload_of(
            cnet, "carrier-1", bulk.id.hex()), kind
    assert [u.appeal for _, u, _ in pairs] == [b.appeal for _, _, b in pairs] == [
        False, False, True, False]
    assert payload_of(cnet, "carrier-1", own.hex()).observed_at_ms == t


def test_a_unary_sanction_without_listed_at_takes_effect_when_signed(
        cnet: InProcessNet, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one difference the unary calls had from IssueMany: IssueSanction
    took listed_at_ms 0 as it came (INVALID_ARGUMENT, "a sanction names when it
    takes effect") where an IssueMany item of the same sanction is listed when
    the node signs it. Now both are, with one payload."""
    uscc = "91110000MA0999999" + uscc_check_char("91110000MA0999999")
    t = fixed_clock(cnet, monkeypatch, "regulator-1")
    listing = rpb.Sanction(enterprise="上海某某推销", uscc=uscc, reason="robocalls",
                           document="沪通管罚〔2026〕7号")
    unary = cnet.admin("regulator-1").IssueSanction(listing, timeout=30)
    s = payload_of(cnet, "regulator-1", unary.id.hex())
    assert (s.listed_at_ms, s.delist, s.document) == (t, False, listing.document)
    # Delisted (at the same time, later in the feed), it may be listed again
    # under the same document: now as an IssueMany item of the same request.
    cnet.admin("regulator-1").IssueSanction(rpb.Sanction(
        enterprise="上海某某推销", uscc=uscc, document="沪通管撤〔2026〕1号", delist=True),
        timeout=30)
    (bulk,) = next(iter(cnet.admin("regulator-1").IssueMany(iter([pb.IssueBatch(
        items=[pb.IssueItem(sanction=listing)])]), timeout=30))).results
    assert not bulk.code, bulk.error
    assert payload_of(cnet, "regulator-1", bulk.id.hex()) == s


def test_content_digest_is_the_items_known_digest_and_leaves_the_item_as_sent() -> None:
    """An idempotency key is held to its content's digest across reruns and
    versions: these are the digests the first implementation (a copy of the
    item, key cleared, numbers in E.164) gave, and taking one changes
    nothing of the item."""
    from markex.v1 import service_pb2 as spb
    from node.bulkissue import content_digest

    items = [
        spb.IssueItem(key=b"k1", mark=spb.IssueItem().mark.__class__(
            number="13812345678", category="fraud", score=70)),
        spb.IssueItem(key=b"k2", complaint=spb.IssueItem().complaint.__class__(
            number="13812345678", complainant="13900002222", category="real-estate")),
        spb.IssueItem(key=b"k3", line=spb.IssueItem().line.__class__(
            number="4008001234", enterprise="A", uscc="91440300MA5F000007",
            industry="real-estate")),
    ]
    known = [
        "06f4dc70c3ca9e3a6317ebc56b7c7d7dc4677fb69fd0f3824ab13978f21b17d4",
        "d072dfcccbc5f140e972cebb81c7839e8bf88a3329c2ba05370884b789559733",
        "99d95552aefeb3da86a7b07cac5a897d5d39b5850faef685c8c75da7c4ae19bb",
    ]
    for item, digest in zip(items, known, strict=True):
        sent = item.SerializeToString(deterministic=True)
        assert content_digest(item).hex() == digest
        assert item.SerializeToString(deterministic=True) == sent


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=128), number=st.sampled_from(
    ["+8613512345678", "13512345678", "+14155550123", "not a number", ""]),
    category=st.text(max_size=8), score=st.integers(0, 2**32 - 1),
    expires_after=st.integers(0, 2**64 - 1), observed=st.integers(0, 2**63 - 1))
def test_a_mark_items_digest_by_its_bytes_is_the_general_paths(
        key: bytes, number: str, category: str, score: int, expires_after: int,
        observed: int) -> None:
    """A mark item's digest taken from its bytes after the key's field (the
    fast path, for a number in E.164 already) is the general path's (the key
    cleared and the number normalized on the item, then put back)."""
    from node import bulkissue

    item = pb.IssueItem(key=key, mark=rpb.Mark(number=number, category=category, score=score,
                                               observed_at_ms=observed),
                        expires_after_ms=expires_after)
    sent = item.SerializeToString(deterministic=True)
    fast = bulkissue._mark_digest(item)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bulkissue, "_mark_digest", lambda it: None)
        general = bulkissue.content_digest(item)
    assert fast is None or fast == general
    assert (fast is not None) == (number in ("+8613512345678", "+14155550123"))
    assert bulkissue.content_digest(item) == general
    assert item.SerializeToString(deterministic=True) == sent
