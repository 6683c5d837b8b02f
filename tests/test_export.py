"""`markex view export` and `markex view verify-export` against real nodes in
this process (the TLS connections `markex` opens): an export verifies, with
the node's own root; every tampering of a row, of the checkpoint or of its
cosignatures is refused with its reason and a non-zero exit; the pure row
format (ledger/export.py) on a view built in memory, CSV and JSONL alike."""

from __future__ import annotations

import base64
import io
import json
import time
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from keys.layout import NodeConfig
from ledger import note
from ledger.errors import BadInput, BadSignature, ProofMismatch
from ledger.export import (
    COLUMNS,
    ExportMismatch,
    MalformedExport,
    Row,
    TooFewCosigners,
    apply_delta,
    delta_rows,
    open_export,
    open_quorum,
    row_of,
    verify_rows,
    write_export,
)
from ledger.view import Entry, parse_view_checkpoint
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.cli import main
from node.client import INSTITUTE_KEY_ENV
from node.command import UsageError
from node.exportcli import export_view, fetch_snapshot, verify_export_file
from node.localnet import LocalNet
from node.server import Node
from tests.conftest import KEYS, NOW, make_consortium
from tests.exportbook import N6, N, small_view

pytestmark = pytest.mark.timeout(240)


class InProcessNet(LocalNet):
    """LocalNet's consortium and clients, its nodes `Node`s in this process."""

    nodes_running: list[Node]

    def start_all(self) -> None:
        assert self.sync_interval is not None
        self.nodes_running = [
            Node(NodeConfig.for_participant(self.dir, pid), sync_interval=self.sync_interval)
            for pid in self.ids
        ]
        for node in self.nodes_running:
            node.start()

    def stop_all(self) -> None:
        super().stop_all()
        with ThreadPoolExecutor(len(self.nodes_running)) as ex:
            list(ex.map(lambda node: node.stop(grace=0.1), self.nodes_running))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except json.JSONDecodeError:
        return code, out, err


def _cosigned_note(net: LocalNet) -> str:
    """The institute's view checkpoint once a quorum cosigned it."""
    deadline = time.monotonic() + 30
    while True:
        text = net.public("institute").GetViewCheckpoint(pb.GetViewCheckpointRequest()).note
        try:
            open_quorum(net.consortium, text)
            return text
        except TooFewCosigners:
            assert time.monotonic() < deadline, "no cosigned view checkpoint in 30 s"
            time.sleep(0.2)


NUMBERS = ["13812340001", "13812340002", "13812340003", "13812340004"]


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Three nodes; four numbers marked, one appealed and decided; `old` is a
    view checkpoint note from before the last mark."""
    n = InProcessNet(
        tmp_path_factory.mktemp("export") / "c", carriers=1, internet=1, sync_interval=0.2
    )
    n.start_all()
    with pytest.MonkeyPatch.context() as mp:
        key = NodeConfig.for_participant(n.dir, "institute").institute_key
        mp.setenv(INSTITUTE_KEY_ENV, base64.b64encode(key).decode())
        try:
            c = ["--consortium", str(n.dir), "--json"]
            for i, num in enumerate(NUMBERS[:3]):
                assert main(["mark", "--as", "carrier-1", num, "fraud", "--score",
                             str(50 + i), *c]) == 0
            assert main(["mark", "--as", "internet-1", NUMBERS[0], "harassment", *c]) == 0
            n.wait_converged(timeout=30)
            old = _cosigned_note(n)
            assert main(["mark", "--as", "carrier-1", NUMBERS[3], "marketing", *c]) == 0
            n.wait_converged(timeout=30)
            yield n, old
        finally:
            n.stop_all()


def _export(marked: Any, capsys: Any, tmp_path: Path, fmt: str, node: str = "institute") -> Path:
    net, _ = marked
    out = tmp_path / f"view.{fmt}"
    code, obj, err = run(
        capsys, "view", "export", "--node", node, "--format", fmt, "--out", str(out),
        "--consortium", str(net.dir), "--json",
    )
    assert code == 0, err
    assert obj["entries"] == len(NUMBERS) and obj["format"] == fmt
    return out


def _verify(marked: Any, capsys: Any, path: Path) -> tuple[int, dict[str, Any], str]:
    net, _ = marked
    code, obj, err = run(
        capsys, "view", "verify-export", str(path), "--consortium", str(net.dir), "--json"
    )
    assert isinstance(obj, dict), obj
    return code, obj, err


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_from_a_node_verifies_with_its_root(
    marked: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str
) -> None:
    net, _ = marked
    path = _export(marked, capsys, tmp_path, fmt)
    code, obj, err = _verify(marked, capsys, path)
    assert code == 0, err
    assert obj["ok"] is True and obj["entries"] == len(NUMBERS) and obj["format"] == fmt
    assert obj["signed_by"] == "institute" and len(obj["cosigned_by"]) >= 2
    # The root is the node's own: what `markex view checkpoint` reports.
    code, cp, _ = run(capsys, "view", "checkpoint", "--node", "institute",
                      "--consortium", str(net.dir), "--json")
    assert code == 0 and cp["root"] == obj["root"] and cp["entries"] == len(NUMBERS)
    # Readable columns are there for people: the first number has two markers.
    exp = open_export(path.open(encoding="utf-8", newline=""))
    rows = list(exp.rows)
    assert [r.number for r in rows] == sorted("+86" + x for x in NUMBERS)
    assert rows[0].markers == ("carrier-1", "internet-1") and rows[0].score > 0
    assert rows[3].category == "marketing"


def test_export_to_stdout_and_refused_usage(
    marked: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    net, _ = marked
    code, out, _ = run(capsys, "view", "export", "--node", "carrier-1", "--format", "jsonl",
                       "--consortium", str(net.dir))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 1 + len(NUMBERS) and "markex_view_export" in lines[0]
    code, _, err = run(capsys, "view", "export", "--format", "csv", "--consortium", str(net.dir))
    assert code == 2 and "--node" in err
    code, _, err = run(capsys, "view", "export", "--node", "institute", "--format", "xml",
                       "--consortium", str(net.dir))
    assert code == 2 and "invalid choice: 'xml'" in err
    assert not list(tmp_path.iterdir())     # nothing written


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _jsonl_row_edit(lines: list[str], i: int, **change: Any) -> list[str]:
    obj = json.loads(lines[i])
    obj.update(change)
    return [*lines[:i], json.dumps(obj) + "\n", *lines[i + 1 :]]


def _with_note(lines: list[str], text: str) -> list[str]:
    head = json.loads(lines[0])
    head["checkpoint"] = text
    return [json.dumps(head) + "\n", *lines[1:]]


def _strip_cosignatures(text: str, keep: int) -> str:
    parsed = note.Note.parse(text)
    body, sigs = text.split("\n\n", 1)
    lines = sigs.splitlines(keepends=True)
    assert len(lines) == len(parsed.signatures)
    return body + "\n\n" + "".join(lines[: 1 + keep])     # the signer's line first


def _bent_entry(line: str) -> str:
    obj = json.loads(line)
    raw = base64.b64decode(obj["entry"]).replace(b'"reports":1', b'"reports":2', 1)
    assert raw != base64.b64decode(obj["entry"])
    obj["entry"] = base64.b64encode(raw).decode()
    return json.dumps(obj) + "\n"


TAMPERINGS = {
    "changed column": (lambda ls, old: _jsonl_row_edit(ls, 1, category="fraud-not"),
                       "ExportMismatch", "category"),
    "changed score": (lambda ls, old: _jsonl_row_edit(ls, 2, score=1), "ExportMismatch", "score"),
    "changed entry": (lambda ls, old: [ls[0], _bent_entry(ls[1]), *ls[2:]],
                      "ExportMismatch", "root"),
    "removed row": (lambda ls, old: [*ls[:2], *ls[3:]], "ExportMismatch", "counts"),
    "added row": (lambda ls, old: [*ls, ls[-1]], "ExportMismatch", "out of order"),
    "reordered rows": (lambda ls, old: [ls[0], ls[2], ls[1], *ls[3:]],
                       "ExportMismatch", "out of order"),
    # signed before the last mark was observed: that row reads otherwise then
    "older checkpoint": (lambda ls, old: _with_note(ls, old), "ExportMismatch", "row 4"),
    "edited checkpoint": (
        lambda ls, old: _with_note(ls, json.loads(ls[0])["checkpoint"].replace("\n4\n", "\n5\n")),
        "BadSignature", "",
    ),
    "too few cosignatures": (
        lambda ls, old: _with_note(ls, _strip_cosignatures(json.loads(ls[0])["checkpoint"], 1)),
        "TooFewCosigners", "the policy needs 2",
    ),
    "no header": (lambda ls, old: ls[1:], "MalformedExport", "header"),
    "row not json": (lambda ls, old: [*ls[:2], "{not json\n", *ls[3:]], "MalformedExport",
                     "line 3"),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_tampered_export_is_not_ok(
    marked: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    _, old = marked
    path = _export(marked, capsys, tmp_path, "jsonl")
    edit, error, needle = TAMPERINGS[name]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(edit(_lines(path), old)), encoding="utf-8")
    code, obj, err = _verify(marked, capsys, bad)
    assert code == 1 and obj["ok"] is False and obj["root"] is None
    assert obj["error"].startswith(error + ":") and needle in obj["error"], obj["error"]
    assert json.loads(err)["error"]["code"] == "not_verified"     # main's one error line


def test_tampered_csv_is_not_ok(
    marked: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _export(marked, capsys, tmp_path, "csv")
    lines = _lines(path)
    assert lines[0].startswith("# markex view export 1") and lines[2].startswith("number,")
    cases = {
        "risk column": [*lines[:3], lines[3].replace(",high,", ",medium,", 1), *lines[4:]],
        "swapped rows": [*lines[:3], lines[4], lines[3], *lines[5:]],
        "dropped row": lines[:-1],
        "bad checkpoint base64": [lines[0], "# checkpoint ***\n", *lines[2:]],
    }
    assert cases["risk column"] != lines
    for name, edited in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text("".join(edited), encoding="utf-8")
        code, obj, _ = _verify(marked, capsys, bad)
        assert code == 1 and obj["ok"] is False, name


# ------------------------------------------------------------------ pure: ledger/export.py


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_rows_round_trip_and_recompute_the_root(fmt: str) -> None:
    sv = small_view()
    cp = parse_view_checkpoint(note.Note.parse(sv.note).text)
    buf = io.StringIO()
    assert write_export(buf, fmt, sv.note, (row_of(e, cp.signed_at_ms) for e in sv.entries)) == 5
    exp = open_export(io.StringIO(buf.getvalue(), newline=""))
    assert exp.format == fmt and exp.checkpoint_note == sv.note
    summary = verify_rows(cp, exp.rows)
    assert summary.entries == 5 and summary.root == sv.view.root() == cp.root
    # The whole file verifies as `markex view verify-export` reads it.
    obj = verify_export_file(sv.cons, io.StringIO(buf.getvalue(), newline=""))
    assert obj["ok"] and obj["root"] == cp.root.hex() and obj["cosigned_by"] == [
        "carrier-1", "carrier-2"]


def test_rows_that_are_not_the_view_are_refused() -> None:
    sv = small_view()
    cp = parse_view_checkpoint(note.Note.parse(sv.note).text)
    rows = [row_of(e, cp.signed_at_ms) for e in sv.entries]
    other = Entry.decode(rows[1].entry.replace(b'"score":60', b'"score":61', 1))
    cases: dict[str, tuple[list[Any], type[Exception], str]] = {
        "entry of another number": (
            [rows[0], replace(rows[1], number=rows[2].number), *rows[2:]],
            ExportMismatch, "its entry is",
        ),
        "a column says otherwise": (
            [replace(rows[0], risk="none"), *rows[1:]], ExportMismatch, "risk"),
        "markers left out": (
            [replace(rows[0], markers=("carrier-1",)), *rows[1:]], ExportMismatch, "markers"),
        "other entry bytes": (
            [rows[0], row_of(other, cp.signed_at_ms), *rows[2:]], ExportMismatch, "root"),
        "entry not canonical": (
            [replace(rows[0], entry=rows[0].entry + b" "), *rows[1:]],
            MalformedExport, "row 1"),
        "duplicate": ([rows[0], *rows], ExportMismatch, "out of order"),
        "empty": ([], ExportMismatch, "0 rows"),
    }
    for name, (bad, err, needle) in cases.items():
        with pytest.raises(err, match=needle):
            verify_rows(cp, bad)
        assert issubclass(err, BadInput | ProofMismatch), name


def test_quorum_is_checked_against_the_pinned_consortium() -> None:
    from ledger.verify import open_view

    one = small_view(cosigners=("carrier-1",))
    with pytest.raises(TooFewCosigners, match="cosigned by 1 member"):
        open_quorum(one.cons, one.note)
    assert open_view(one.cons, one.note).signer == "institute"
    # A consortium pinned with other keys trusts nothing in the file.
    sv = small_view()
    other = make_consortium(cosign_quorum=3)
    with pytest.raises(TooFewCosigners, match="needs 3"):
        open_quorum(other, sv.note)
    forged = replace(sv.cons, participants=tuple(
        replace(p, public_key=KEYS["internet-2"].public_bytes) if p.id == "institute" else p
        for p in sv.cons.participants))
    with pytest.raises(BadSignature):
        open_quorum(forged, sv.note)


def test_malformed_files_are_refused_precisely() -> None:
    sv = small_view()
    good = io.StringIO()
    cp = parse_view_checkpoint(note.Note.parse(sv.note).text)
    write_export(good, "csv", sv.note, (row_of(e, cp.signed_at_ms) for e in sv.entries))
    lines = good.getvalue().splitlines(keepends=True)
    cases = {
        "empty file": ([], "ends before its header"),
        "not a header": (["hello\n"], "line 1"),
        "no checkpoint line": ([lines[0], lines[2]], "line 2"),
        "other columns": ([*lines[:2], "number,category\n", *lines[3:]], "column header"),
        "short row": ([*lines[:3], "+8613800000001,fraud\n"], "2 fields"),
        "bad score": ([*lines[:3], lines[3].replace(",high,", ",high,x", 1), *lines[4:]],
                      "score"),
        "bad base64": ([*lines[:3], lines[3].rstrip("\n") + "!\n", *lines[4:]], "base64"),
    }
    for name, (text, needle) in cases.items():
        with pytest.raises(MalformedExport, match=needle):
            exp = open_export(iter(text))
            verify_rows(cp, exp.rows)
        assert name
    with pytest.raises(MalformedExport, match="columns"):
        exp = open_export(iter(['{"markex_view_export": 1, "checkpoint": "x"}\n', '{"a": 1}\n']))
        list(exp.rows)
    with pytest.raises(MalformedExport, match="wrong type"):
        row = json.loads(json.dumps({c: "x" for c in COLUMNS}))
        exp = open_export(iter(['{"markex_view_export": 1, "checkpoint": "x"}\n',
                                json.dumps(row) + "\n"]))
        list(exp.rows)


def test_a_large_export_round_trips() -> None:
    """20k entries written, read back and verified against their root (a
    behaviour test; docs/export.md's timings are a one-off measurement)."""
    sv = small_view()
    base = sv.entries[0]
    at = NOW
    rows = []
    for i in range(20_000):
        e = replace(base, number=f"+86139{i:08d}")
        rows.append(row_of(e, at))
    rows.sort(key=lambda r: r.number)
    cp = sv.view.checkpoint("markex-test/view/institute", at)
    from ledger.view import entry_hash, tree_root

    cp = replace(cp, count=len(rows), root=tree_root((r.number, entry_hash(r.entry)) for r in rows))
    buf = io.StringIO()
    write_export(buf, "jsonl", "unused", rows)
    exp = open_export(io.StringIO(buf.getvalue()))
    assert verify_rows(cp, exp.rows).entries == 20_000


def test_export_view_is_for_members_only(marked: Any) -> None:
    """Listing every number is not public: ExportView is on the member port only."""
    from node import client

    net, _ = marked
    me = net.consortium.participant("institute")
    pub = client.public_channel(net.dir, me.public_endpoint)
    ca = (net.dir / "ca" / "ca.pem").read_bytes()
    anon = grpc.secure_channel(me.member_endpoint, grpc.ssl_channel_credentials(ca))
    try:
        for ch, code in ((pub, grpc.StatusCode.UNIMPLEMENTED), (anon, grpc.StatusCode.UNAVAILABLE)):
            call = ch.unary_stream("/markex.v1.Audit/ExportView",
                                   request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as ei:
                list(call(b"", timeout=10))
            assert ei.value.code() == code
    finally:
        pub.close()
        anon.close()
    # A member (here the internet company) reads it as the auditor does.
    pages = list(net.audit("institute", "internet-1").ExportView(pb.ExportViewRequest(),
                                                                 timeout=30))
    assert pages[0].view_checkpoint and sum(len(p.entries) for p in pages) == len(NUMBERS)


# ------------------------------------------------------------------ deltas (--since)


def _files(tmp_path: Path, fmt: str) -> tuple[Any, Path, Path, list[Any]]:
    """A whole export of the small view, and the delta to it one hour later."""
    old, new = small_view(), small_view(later=True)
    at_old = parse_view_checkpoint(note.Note.parse(old.note).text).signed_at_ms
    at_new = parse_view_checkpoint(note.Note.parse(new.note).text).signed_at_ms
    old_rows = [row_of(e, at_old) for e in old.entries]
    delta = list(delta_rows(old_rows, [row_of(e, at_new) for e in new.entries]))
    base, dpath = tmp_path / f"base.{fmt}", tmp_path / f"delta.{fmt}"
    with base.open("w", encoding="utf-8", newline="") as f:
        write_export(f, fmt, old.note, old_rows)
    with dpath.open("w", encoding="utf-8", newline="") as f:
        write_export(f, fmt, new.note, delta, since_note=old.note)
    return new, base, dpath, delta


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_delta_verifies_with_its_base(tmp_path: Path, fmt: str) -> None:
    new, base, dpath, delta = _files(tmp_path, fmt)
    # only the two numbers that changed: N1 (a withdrawal) and N6 (new)
    assert [r.number for r in delta] == [N[0], N6]
    with dpath.open(encoding="utf-8", newline="") as f:
        obj = verify_export_file(new.cons, f, base)
    assert obj["ok"] and obj["entries"] == 6 and obj["root"] == new.view.root().hex()
    with dpath.open(encoding="utf-8", newline="") as f, pytest.raises(UsageError, match="--base"):
        verify_export_file(new.cons, f)
    with base.open(encoding="utf-8", newline="") as f, pytest.raises(UsageError, match="whole"):
        verify_export_file(new.cons, f, base)
    with dpath.open(encoding="utf-8", newline="") as f, pytest.raises(UsageError,
                                                                     match="is a delta"):
        verify_export_file(new.cons, f, dpath)      # a delta is no base


def test_a_delta_that_does_not_lead_to_the_view_is_refused(tmp_path: Path) -> None:
    new, base, dpath, delta = _files(tmp_path, "jsonl")
    lines = _lines(dpath)
    cases: dict[str, tuple[list[str], Path, type[Exception], str]] = {
        "a changed number left out": ([lines[0], *lines[2:]], base, ExportMismatch, "root"),
        "a removal of a number the view holds": (
            [*lines, json.dumps(Row.removal(N[4]).to_json()) + "\n"], base, ExportMismatch,
            "out of order"),
        "rows swapped": ([lines[0], lines[2], lines[1]], base, ExportMismatch, "out of order"),
        "a removal with columns": (
            [lines[0], lines[1], json.dumps({**Row.removal("+8613800000009").to_json(),
                                             "risk": "high"}) + "\n"],
            base, ExportMismatch, "readable"),
        "a removal the base lacks": (
            [*lines, json.dumps(Row.removal("+8613800000009").to_json()) + "\n"], base,
            ExportMismatch, "does not hold"),
    }
    for name, (edited, b, err, needle) in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text("".join(edited), encoding="utf-8")
        with bad.open(encoding="utf-8") as f, pytest.raises(err, match=needle):
            verify_export_file(new.cons, f, b)
        assert name
    # Another base than the one the delta names (the later view itself): refused
    # before any row is read. The same checkpoint with other cosigners is the same base.
    at_new = parse_view_checkpoint(note.Note.parse(new.note).text).signed_at_ms
    b2 = tmp_path / "base2.jsonl"
    with b2.open("w", encoding="utf-8") as f:
        write_export(f, "jsonl", new.note, [row_of(e, at_new) for e in new.entries])
    with dpath.open(encoding="utf-8") as f, pytest.raises(ExportMismatch, match="since"):
        verify_export_file(new.cons, f, b2)
    # A whole export (no rows removed) never holds a removal row.
    with pytest.raises(ExportMismatch, match="no entry"):
        verify_rows(parse_view_checkpoint(note.Note.parse(new.note).text),
                    [Row.removal(N[0])])


def test_delta_rows_remove_what_the_new_view_lacks() -> None:
    sv = small_view()
    rows = [row_of(e, NOW) for e in sv.entries]
    assert list(delta_rows(rows, rows)) == []
    assert list(delta_rows(rows, rows[1:])) == [Row.removal(rows[0].number)]
    assert list(delta_rows(rows[:2], rows)) == rows[2:]
    assert [r for r in apply_delta(rows, [Row.removal(rows[0].number)], NOW)] == rows[1:]


def test_cli_delta_since_an_earlier_export(
    marked: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """After every other test of `marked` (this one changes the nodes' view)."""
    net, _ = marked
    base = _export(marked, capsys, tmp_path, "csv")
    assert main(["mark", "--as", "internet-1", "13812340009", "fraud",
                 "--consortium", str(net.dir)]) == 0
    net.wait_converged(timeout=30)
    capsys.readouterr()
    delta = tmp_path / "delta.csv"
    code, obj, err = run(capsys, "view", "export", "--node", "institute", "--format", "csv",
                         "--since", str(base), "--out", str(delta),
                         "--consortium", str(net.dir), "--json")
    assert code == 0, err
    assert obj["rows"] == 1 and obj["removed"] == 0 and obj["entries"] == len(NUMBERS) + 1
    code, ok, err = run(capsys, "view", "verify-export", str(delta), "--base", str(base),
                        "--consortium", str(net.dir), "--json")
    assert code == 0 and ok["ok"] and ok["root"] == obj["root"], err
    assert ok["since_root"] == obj["since_root"] != ok["root"]
    code, bad, _ = run(capsys, "view", "verify-export", str(delta),
                       "--consortium", str(net.dir), "--json")
    assert code == 2


def test_export_while_the_view_changes_is_one_snapshot(marked: Any) -> None:
    """Marks arrive all the while: every export the node serves is the view
    of its one checkpoint (rows recompute its root, count and columns)."""
    import threading

    net, _ = marked
    stop = threading.Event()
    issued = [0]

    def write() -> None:
        while not stop.is_set():
            net.mark("carrier-1", f"1381236{issued[0]:04d}", "fraud")
            issued[0] += 1

    writer = threading.Thread(target=write)
    writer.start()
    roots = set()
    try:
        stub = net.audit("institute", "internet-1")
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            text, entries = export_view(stub)
            cp = parse_view_checkpoint(note.Note.parse(text).text)
            rows = [row_of(Entry.decode(e), cp.signed_at_ms) for e in entries]
            assert verify_rows(cp, rows).root == cp.root
            roots.add(cp.root)
    finally:
        stop.set()
        writer.join()
    assert issued[0] > 5 and len(roots) > 1      # the view did move between exports


# ------------------------------------------------------------------ the exporter's own checks


class ScriptedAudit(rpc.AuditServicer):
    """A stub node on 127.0.0.1 that serves the scripted (note, entries) answers in turn."""

    def __init__(self, answers: list[tuple[str, list[bytes]]]) -> None:
        self.answers = answers
        self.calls = 0

    def ExportView(self, request: Any, context: Any) -> Any:  # noqa: N802
        text, entries = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        yield pb.ViewExportPage(view_checkpoint=text, entries=entries[:2])
        yield pb.ViewExportPage(entries=entries[2:])


@pytest.fixture
def scripted() -> Any:
    servers = []

    def start(answers: list[tuple[str, list[bytes]]]) -> tuple[Any, ScriptedAudit]:
        svc = ScriptedAudit(answers)
        server = grpc.server(futures.ThreadPoolExecutor(2))
        rpc.add_AuditServicer_to_server(svc, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return rpc.AuditStub(grpc.insecure_channel(f"127.0.0.1:{port}")), svc

    yield start
    for s in servers:
        s.stop(0)


def test_exporter_waits_for_the_quorum_then_fails_closed(scripted: Any) -> None:
    bare, full = small_view(cosigners=()), small_view()
    entries = [e.encode() for e in full.entries]
    stub, svc = scripted([(bare.note, entries), (bare.note, entries), (full.note, entries)])
    clock = [0.0]
    snap = fetch_snapshot(stub, full.cons, "institute", 30, sleep=lambda s: clock.__setitem__(
        0, clock[0] + s), monotonic=lambda: clock[0])
    assert svc.calls == 3 and len(snap.rows) == 5 and sorted(snap.view.cosigned_at) == [
        "carrier-1", "carrier-2"]
    stub, svc = scripted([(bare.note, entries)])
    clock[0] = 0.0
    with pytest.raises(TooFewCosigners):
        fetch_snapshot(stub, full.cons, "institute", 2, sleep=lambda s: clock.__setitem__(
            0, clock[0] + s), monotonic=lambda: clock[0])
    assert svc.calls == 5          # at 0, 0.5, 1, 1.5 and 2 s


def test_exporter_never_writes_an_export_that_does_not_verify(scripted: Any) -> None:
    full = small_view()
    entries = [e.encode() for e in full.entries]
    cases = {
        "an entry missing": ((full.note, entries[:-1]), ExportMismatch, "counts"),
        "entries out of order": ((full.note, [entries[1], entries[0], *entries[2:]]),
                                 ExportMismatch, "out of order"),
        "bytes not an entry": ((full.note, [b"{}", *entries[1:]]), MalformedExport, "entry 1"),
        "no checkpoint": (("", entries), MalformedExport, "without a view checkpoint"),
    }
    for name, (answer, err, needle) in cases.items():
        stub, _ = scripted([answer])
        with pytest.raises(err, match=needle):
            fetch_snapshot(stub, full.cons, "institute", 0)
        assert name
    stub, _ = scripted([(full.note, entries)])
    with pytest.raises(MalformedExport, match="signed by institute"):
        fetch_snapshot(stub, full.cons, "carrier-1", 0)
