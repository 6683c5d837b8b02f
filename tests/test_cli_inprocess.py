"""`markex` in-process: `main(argv, connect=...)` against stub servicers on an
in-process gRPC server on 127.0.0.1. Each command dials the node and the
credential it should, sends what it was asked to send, prints design.md's
output, and turns every failure into one sentence with the exit code of the
table (docs/cli.md), never a traceback. The command modules import no other
command module."""

from __future__ import annotations

import argparse
import ast
import base64
import json
import shutil
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
from node.cli import main
from node.client import INSTITUTE_KEY_ENV
from node.connect import Dial, Need, TlsConnect

pytestmark = pytest.mark.timeout(60)

ENVELOPES = [b"envelope-%d" % i for i in range(5)]
RECORD_ID = bytes(range(32))


@dataclass
class Script:
    """What the stub node answers, and what it was asked (method, request)."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail: tuple[grpc.StatusCode, str] | None = None
    page: int = 2  # envelopes per GetEntries answer
    envelopes: list[bytes] = field(default_factory=lambda: list(ENVELOPES))
    view_note: str = "not a signed note\n"
    found: list[bytes] = field(default_factory=list)  # what FindRecords answers

    def reset(self) -> None:
        self.calls.clear()
        self.fail = None
        self.found = []


class _Stub:
    def __init__(self, script: Script) -> None:
        self.s = script

    def _answer(self, method: str, request: Any, context: grpc.ServicerContext, reply: Any) -> Any:
        self.s.calls.append((method, request))
        if self.s.fail is not None:
            context.abort(*self.s.fail)
        return reply


class StubAdmin(_Stub, rpc.AdminServicer):
    def IssueMark(self, request: rpb.Mark, context: grpc.ServicerContext) -> pb.Issued:
        return self._answer("IssueMark", request, context,
                            pb.Issued(id=RECORD_ID, issuer="carrier-1", seq=7, index=41))

    def IssueCorrection(self, request: rpb.Correction, context: grpc.ServicerContext) -> pb.Issued:
        return self._answer("IssueCorrection", request, context,
                            pb.Issued(id=RECORD_ID, issuer="internet-1", seq=3, appeal=True,
                                      index=42))

    def IssueReassignment(
        self, request: rpb.Reassignment, context: grpc.ServicerContext
    ) -> pb.Issued:
        return self._answer("IssueReassignment", request, context,
                            pb.Issued(id=RECORD_ID, issuer="carrier-1", seq=8, index=43))

    def IssuePreference(
        self, request: pb.PreferenceRequest, context: grpc.ServicerContext
    ) -> pb.Issued:
        return self._answer("IssuePreference", request, context,
                            pb.Issued(id=RECORD_ID, issuer="carrier-1", seq=9, index=44))

    def IssueMarketerLine(
        self, request: rpb.MarketerLine, context: grpc.ServicerContext
    ) -> pb.Issued:
        return self._answer("IssueMarketerLine", request, context,
                            pb.Issued(id=RECORD_ID, issuer="carrier-1", seq=10, index=45))


class StubPublic(_Stub, rpc.PublicServicer):
    def GetLogCheckpoint(self, request: Any, context: grpc.ServicerContext) -> pb.LogCheckpoint:
        reply = pb.LogCheckpoint(note="origin\n5\nroot\n\n— sig\n", size=5, root=b"\x01" * 32)
        return self._answer("GetLogCheckpoint", request, context, reply)

    def GetInclusionProof(self, request: Any, context: grpc.ServicerContext) -> Any:
        reply = pb.InclusionProof(index=request.index, size=request.size,
                                  leaf_hash=b"\x02" * 32, path=[b"\x03" * 32, b"\x04" * 32])
        return self._answer("GetInclusionProof", request, context, reply)

    def GetConsistencyProof(self, request: Any, context: grpc.ServicerContext) -> Any:
        reply = pb.ConsistencyProof(old_size=request.old_size, new_size=request.new_size,
                                    path=[b"\x05" * 32])
        return self._answer("GetConsistencyProof", request, context, reply)

    def GetViewCheckpoint(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._answer("GetViewCheckpoint", request, context,
                            pb.ViewCheckpoint(note=self.s.view_note))

    def Lookup(self, request: pb.LookupRequest, context: grpc.ServicerContext) -> Any:
        reply = pb.LookupResponse(number=request.number, view_checkpoint=self.s.view_note)
        return self._answer("Lookup", request, context, reply)

    def GetFeedHeads(self, request: Any, context: grpc.ServicerContext) -> pb.FeedHeads:
        return self._answer("GetFeedHeads", request, context, pb.FeedHeads())


class StubAudit(_Stub, rpc.AuditServicer):
    def GetEntries(self, request: pb.GetEntriesRequest, context: grpc.ServicerContext) -> Any:
        end = min(request.end, request.start + self.s.page, len(self.s.envelopes))
        reply = pb.Entries(start=request.start, envelopes=self.s.envelopes[request.start:end])
        return self._answer("GetEntries", request, context, reply)

    def GetEvidence(self, request: Any, context: grpc.ServicerContext) -> pb.Evidence:
        return self._answer("GetEvidence", request, context, pb.Evidence())

    def FindRecords(self, request: Any, context: grpc.ServicerContext) -> pb.FoundRecords:
        return self._answer("FindRecords", request, context, pb.FoundRecords(ids=self.s.found))


class StubConnect:
    """A `Connect` that records each dial and answers with the stub server."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.dials: list[tuple[Need, Dial]] = []

    def __call__(self, need: Need, dial: Dial) -> Any:
        self.dials.append((need, dial))
        kind = {"public": rpc.PublicStub, "admin": rpc.AdminStub, "audit": rpc.AuditStub}[need]
        return kind(self.channel)


@pytest.fixture(scope="module")
def stub_server() -> Iterator[tuple[int, Script]]:
    script = Script()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    rpc.add_AdminServicer_to_server(StubAdmin(script), server)
    rpc.add_PublicServicer_to_server(StubPublic(script), server)
    rpc.add_AuditServicer_to_server(StubAudit(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, script
    finally:
        server.stop(None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Consortium]:
    """A consortium folder; no node of it runs (the stub answers for every one)."""
    d = tmp_path_factory.mktemp("inproc") / "c"
    cons = init_consortium(d, carriers=1, internet=1, base_port=31400, now=datetime.now(UTC))
    return d, cons


@pytest.fixture
def stub(
    stub_server: tuple[int, Script], folder: tuple[Path, Consortium],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[StubConnect, Script]]:
    port, script = stub_server
    script.reset()
    d, _ = folder
    key = NodeConfig.for_participant(d, "institute").institute_key
    monkeypatch.setenv(INSTITUTE_KEY_ENV, base64.b64encode(key).decode())
    conn = StubConnect(f"127.0.0.1:{port}")
    try:
        yield conn, script
    finally:
        conn.channel.close()


def cli(
    capsys: pytest.CaptureFixture[str], folder: tuple[Path, Consortium], conn: Any,
    *argv: str,
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*argv, "--consortium", str(folder[0])], connect=conn)
    o, e = capsys.readouterr()
    return code, o, e


def _ep(cons: Consortium, pid: str) -> client.Endpoints:
    return client.resolve_node(cons, pid)


# ------------------------------------------------------------------ issuing


def test_mark_dials_its_own_admin_and_sends_the_normalized_mark(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn, script = stub
    d, cons = folder
    before = int(time.time() * 1000)
    code, o, _ = cli(capsys, folder, conn, "mark", "--as", "carrier-1", "138 1234 5678", "fraud",
                     "--score", "80", "--reports", "3", "--expires-days", "2", "--json")
    after = int(time.time() * 1000)
    assert code == 0
    assert json.loads(o) == {"id": RECORD_ID.hex(), "issuer": "carrier-1", "seq": 7,
                             "index": 41}
    assert conn.dials == [("admin", Dial(d, _ep(cons, "carrier-1"), "carrier-1"))]
    [(method, m)] = script.calls
    assert method == "IssueMark"
    assert (m.number, m.category, m.score, m.reports) == ("+8613812345678", "fraud", 80, 3)
    assert before <= m.observed_at_ms <= after
    assert m.expires_at_ms == m.observed_at_ms + 2 * 86_400_000


def test_mark_through_another_node_and_as_text(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn, script = stub
    d, cons = folder
    code, o, _ = cli(capsys, folder, conn, "mark", "--as", "carrier-1", "--node", "internet-1",
                     "13812345678", "harassment")
    assert code == 0
    assert o == (f"id         {RECORD_ID.hex()}\nissuer     carrier-1\nseq        7\n"
                 "log index  41 in the log of internet-1\n")
    assert conn.dials == [("admin", Dial(d, _ep(cons, "internet-1"), "carrier-1"))]
    m = script.calls[0][1]
    assert (m.score, m.reports, m.expires_at_ms) == (60, 1, 0)  # the defaults


def test_correct_decide_reassign_send_what_was_asked(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn, script = stub
    rid = "ab" * 32
    code, o, _ = cli(capsys, folder, conn, "correct", "--as", "internet-1", rid, "--withdraw",
                     "--reason", "a courier", "--json")
    assert code == 0
    assert json.loads(o) == {"id": RECORD_ID.hex(), "issuer": "internet-1", "seq": 3,
                             "appeal": True, "index": 42}
    c = script.calls[-1][1]
    assert list(c.targets) == [bytes.fromhex(rid)]
    assert (c.action, c.category, c.reason) == (rpb.CORRECTION_ACTION_WITHDRAW, "", "a courier")

    code, _, _ = cli(capsys, folder, conn, "correct", "--as", "carrier-1", rid,
                     "--category", "delivery", "--json")
    c = script.calls[-1][1]
    assert code == 0 and (c.action, c.category) == (rpb.CORRECTION_ACTION_RECATEGORIZE,
                                                    "delivery")

    code, o, _ = cli(capsys, folder, conn, "decide", "--as", "institute", rid, "--reject",
                     "--json")
    c = script.calls[-1][1]
    assert code == 0 and set(json.loads(o)) == {"id", "issuer", "seq", "index"}
    assert (c.appeal_id, c.outcome) == (bytes.fromhex(rid), rpb.APPEAL_OUTCOME_REJECT)

    code, o, _ = cli(capsys, folder, conn, "reassign", "--as", "carrier-1", "13812345678",
                     "--at", "2026-11-28T10:00:00Z", "--json")
    r = script.calls[-1][1]
    assert code == 0 and json.loads(o)["seq"] == 8
    assert r.number == "+8613812345678"
    assert r.effective_at_ms == int(datetime(2026, 11, 28, 10, tzinfo=UTC).timestamp() * 1000)
    assert [need for need, _ in conn.dials] == ["admin"] * 4


def test_an_id_prefix_is_resolved_at_the_acting_node_and_an_ambiguous_one_refused(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn, script = stub
    d, cons = folder
    full = bytes.fromhex("1a2b3c4d" + "ee" * 28)
    script.found = [full]
    code, o, _ = cli(capsys, folder, conn, "correct", "--as", "internet-1", "1A2B3C4D",
                     "--withdraw", "--json")
    assert code == 0 and json.loads(o)["appeal"] is True
    (m1, find), (m2, corr) = script.calls
    assert (m1, find.id_prefix, m2) == ("FindRecords", "1a2b3c4d", "IssueCorrection")
    assert list(corr.targets) == [full]
    assert conn.dials[0] == ("audit", Dial(d, _ep(cons, "internet-1"), "internet-1"))
    # two records share the prefix: refused, both listed, nothing issued
    other = bytes.fromhex("1a2b3c4d" + "ff" * 28)
    script.reset()
    script.found = [full, other]
    code, o, e = cli(capsys, folder, conn, "decide", "--as", "institute", "1a2b3c4d", "--uphold")
    assert code == 2 and o == "" and full.hex() in e and other.hex() in e
    assert "give more digits" in e and [m for m, _ in script.calls] == ["FindRecords"]
    # no record has it: not found, exit 3
    script.reset()
    code, _, e = cli(capsys, folder, conn, "correct", "--as", "carrier-1", "1a2b3c4d9",
                     "--withdraw")
    assert code == 3 and "no record at carrier-1 has an id starting with 1a2b3c4d9" in e


# ------------------------------------------------------------------ reading


def test_log_checkpoint_prints_the_note_as_given(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn, _ = stub
    d, cons = folder
    code, o, _ = cli(capsys, folder, conn, "log", "checkpoint", "--node", "carrier-1")
    assert code == 0 and o == "origin\n5\nroot\n\n— sig\n"
    code, o, _ = cli(capsys, folder, conn, "log", "checkpoint", "--node", "carrier-1", "--json")
    assert json.loads(o) == {"note": "origin\n5\nroot\n\n— sig\n", "size": 5,
                             "root": base64.b64encode(b"\x01" * 32).decode()}
    assert conn.dials[0] == ("public", Dial(d, _ep(cons, "carrier-1")))


def test_log_entries_reads_every_page_as_the_auditor_or_as(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn, script = stub
    d, cons = folder
    code, o, _ = cli(capsys, folder, conn, "log", "entries", "--node", "carrier-1",
                     "--start", "0", "--end", "5", "--json")
    want = [base64.b64encode(e).decode() for e in ENVELOPES]
    assert code == 0 and json.loads(o) == {"start": 0, "end": 5, "entries": want}
    assert [r.start for _, r in script.calls] == [0, 2, 4]  # pages of two
    assert conn.dials == [("audit", Dial(d, _ep(cons, "carrier-1"), "auditor-1"))]
    # a log shorter than asked: the entries it has; text is one base64 envelope a line
    code, o, _ = cli(capsys, folder, conn, "log", "entries", "--node", "carrier-1",
                     "--start", "3", "--end", "9", "--as", "internet-1")
    assert code == 0 and o == "\n".join(want[3:]) + "\n"
    assert conn.dials[-1] == ("audit", Dial(d, _ep(cons, "carrier-1"), "internet-1"))


def test_log_proofs_ask_for_what_was_given_and_refuse_an_unsigned_checkpoint(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The stub's checkpoint is signed by nobody: the proof is printed, and
    marked not verified, with the reason on stderr and exit code 1."""
    conn, script = stub
    code, o, e = cli(capsys, folder, conn, "log", "inclusion", "--node", "carrier-1",
                     "--index", "3", "--size", "9", "--json")
    out = json.loads(o)
    assert code == 1 and {k: out[k] for k in ("index", "size", "leaf_hash", "proof")} == {
        "index": 3, "size": 9, "leaf_hash": "02" * 32, "proof": ["03" * 32, "04" * 32]}
    assert out["verified"] is False
    assert json.loads(e)["error"]["code"] == "not_verified"
    assert "names no node of" in json.loads(e)["error"]["message"]
    code, o, e = cli(capsys, folder, conn, "log", "consistency", "--node", "carrier-1",
                     "--old", "4", "--new", "9")
    assert code == 1 and "proof" in o and "verified  no" in o
    assert e.startswith("markex: not verified: ") and e.count("\n") == 1
    inc = [r for m, r in script.calls if m == "GetInclusionProof"]
    con = [r for m, r in script.calls if m == "GetConsistencyProof"]
    assert [(r.index, r.size) for r in inc] == [(3, 9)]
    assert [(r.old_size, r.new_size) for r in con] == [(4, 9)]


def test_an_unverifiable_answer_is_refused(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The node's answer is checked against the consortium's keys, not believed;
    stdout still carries the answer, stderr says why it is not verified."""
    conn, script = stub
    code, o, e = cli(capsys, folder, conn, "lookup", "--node", "carrier-1", "13812345678",
                     "--json")
    res = json.loads(o)
    assert code == 1 and res["verified"] is False and res["number"] == "+8613812345678"
    assert res["error"] and json.loads(e)["error"]["code"] == "not_verified"
    assert script.calls[0][1].number == "+8613812345678"  # asked normalized
    code, o, e = cli(capsys, folder, conn, "view", "checkpoint", "--node", "carrier-1")
    assert code == 1 and o == "" and e.startswith("markex: not verified: ")
    assert e.count("\n") == 1


# ------------------------------------------------------------------ never a traceback

NODE_COMMANDS = [
    ["mark", "--as", "carrier-1", "13812345678", "fraud"],
    ["correct", "--as", "carrier-1", "00" * 32, "--withdraw"],
    ["decide", "--as", "institute", "00" * 32, "--uphold"],
    ["reassign", "--as", "carrier-1", "13812345678", "--at", "2026-01-01T00:00:00Z"],
    ["prefer", "--as", "carrier-1", "13812345678", "--refuse", "real-estate"],
    ["line", "register", "--as", "carrier-1", "400*", "--enterprise", "Acme",
     "--uscc", "91110000100000000R", "--industry", "finance"],
    ["line", "deregister", "--as", "carrier-1", "00" * 32],
    ["log", "checkpoint", "--node", "carrier-1"],
    ["log", "entries", "--node", "carrier-1", "--start", "0", "--end", "3"],
    ["log", "inclusion", "--node", "carrier-1", "--index", "0", "--size", "1"],
    ["log", "consistency", "--node", "carrier-1", "--old", "1", "--new", "2"],
    ["lookup", "--node", "carrier-1", "13812345678"],
    ["view", "checkpoint", "--node", "carrier-1"],
]


REFUSALS = [
    (grpc.StatusCode.PERMISSION_DENIED, 4, "refused: what the node said"),
    (grpc.StatusCode.FAILED_PRECONDITION, 4, "refused: what the node said"),
    (grpc.StatusCode.NOT_FOUND, 3, "not found: what the node said"),
    (grpc.StatusCode.INVALID_ARGUMENT, 2, "what the node said"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 5,
     "{node} is busy or not ready: what the node said; try again later"),
    (grpc.StatusCode.INTERNAL, 6, "{node} failed (internal): what the node said"),
]


@pytest.mark.parametrize("status,exit_code,sentence", REFUSALS, ids=lambda v: str(v)[:24])
@pytest.mark.parametrize("argv", NODE_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_refusing_node_is_its_sentence_and_its_exit_code(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str], argv: list[str], status: grpc.StatusCode,
    exit_code: int, sentence: str,
) -> None:
    """Not `PERMISSION_DENIED: NotAllowed: ...`: the node's sentence, once, and
    with --json one JSON object on stderr."""
    conn, script = stub
    script.fail = (status, "NotAllowed: what the node said")
    code, o, e = cli(capsys, folder, conn, *argv)
    need, dial = conn.dials[-1]
    addr = dial.node.public if need == "public" else dial.node.member
    want = sentence.format(node=f"node {dial.node.participant} ({addr})")
    assert (code, o, e) == (exit_code, "", f"markex: {want}\n")
    code, o, e = cli(capsys, folder, conn, *argv, "--json")
    assert code == exit_code and o == ""
    assert json.loads(e) == {"error": {"code": {2: "usage", 3: "not_found", 4: "refused",
                                                5: "unavailable", 6: "failed"}[exit_code],
                                       "message": want, "exit": exit_code}}
    assert script.calls  # the command did ask the node


@pytest.mark.parametrize("argv", NODE_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_an_unreachable_node_is_named_with_its_address(
    folder: tuple[Path, Consortium], stub: tuple[StubConnect, Script],
    capsys: pytest.CaptureFixture[str], argv: list[str],
) -> None:
    conn = StubConnect("127.0.0.1:1")  # nothing listens on port 1
    _, cons = folder
    try:
        code, o, e = cli(capsys, folder, conn, *argv)
    finally:
        conn.channel.close()
    need, dial = conn.dials[-1]
    addr = dial.node.public if need == "public" else dial.node.member
    assert code == 5 and o == ""
    who = dial.node.participant
    assert e == f"markex: node {who} ({addr}) is not answering; is it running?\n"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["mark", "--as", "carrier-1", "13812345678", "fraud", "--score", "4294967296"],
         "--score"),
        (["mark", "--as", "carrier-1", "13812345678", "fraud", "--reports", "-1"], "--reports"),
        (["mark", "--as", "carrier-1", "13812345678", "fraud", "--expires-days", "nan"],
         "--expires-days"),
        (["mark", "--as", "carrier-1", "13812345678", "fraud", "--expires-days", "1e300"],
         "--expires-days"),
        (["log", "inclusion", "--node", "carrier-1", "--index", "-1", "--size", "1"], "--index"),
        (["log", "entries", "--node", "carrier-1", "--start", "x", "--end", "1"], "--start"),
        (["log", "consistency", "--node", "carrier-1", "--old", "1", "--new", str(2**64)],
         "--new"),
        (["log", "entries", "--node", "carrier-1", "--start", "3", "--end", "3"], "--end"),
        (["log", "checkpoint"], "--node"),
        (["mark", "13812345678", "fraud"], "--as"),
        (["decide", "--as", "institute", "00" * 32], "exactly one"),
        (["audit"], "exactly one"),
        (["audit", "verify-evidence"], "required: FILE"),
    ],
)
def test_a_wrong_command_line_is_one_sentence_and_exit_2(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str,
) -> None:
    conn, script = stub
    try:
        code, o, e = cli(capsys, folder, conn, *argv)
    except SystemExit as exit_:  # argparse's own usage errors exit 2 after one sentence
        code, (o, e) = int(exit_.code or 0), capsys.readouterr()
    assert code == 2 and o == "" and needle in e and "Traceback" not in e
    assert script.calls == []  # nothing reached a node


def test_the_online_audit_of_a_refusing_node_reports_and_fails(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    conn, script = stub
    d, cons = folder
    script.fail = (grpc.StatusCode.UNAVAILABLE, "down for maintenance")
    code, o, e = cli(capsys, folder, conn, "audit", "--node", "carrier-1",
                     "--state", str(tmp_path / "s.json"), "--json")
    assert code == 1 and "Traceback" not in e
    rep = json.loads(o)
    assert rep["ok"] is False and rep["findings"]
    assert not (tmp_path / "s.json").exists()  # nothing audited, nothing remembered
    assert [n for n, _ in conn.dials] == ["public", "audit"]
    assert conn.dials[1] == ("audit", Dial(d, _ep(cons, "carrier-1"), "auditor-1"))


def test_a_missing_file_is_one_sentence(
    folder: tuple[Path, Consortium], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The default connection reads the CA from the folder: without it, a sentence."""
    d = tmp_path / "c"
    shutil.copytree(folder[0], d)
    (d / "ca" / "ca.pem").unlink()
    key = NodeConfig.for_participant(d, "institute").institute_key
    monkeypatch.setenv(INSTITUTE_KEY_ENV, base64.b64encode(key).decode())
    capsys.readouterr()
    code = main(["log", "checkpoint", "--node", "carrier-1", "--consortium", str(d)])
    o, e = capsys.readouterr()
    assert code == 2 and o == "" and "ca.pem" in e and e.startswith("markex: ")
    assert "Traceback" not in e and e.count("\n") == 1


def test_tls_connect_closes_what_it_opened(folder: tuple[Path, Consortium]) -> None:
    d, cons = folder
    with TlsConnect() as tls:
        stub = tls("public", Dial(d, _ep(cons, "carrier-1")))
        assert isinstance(stub, rpc.PublicStub)
    with pytest.raises(ValueError, match="closed channel"):
        stub.GetFeedHeads(pb.FeedHeadsRequest(), timeout=1)
    with pytest.raises(ValueError, match="credential"):
        TlsConnect()("admin", Dial(d, _ep(cons, "carrier-1")))


# ------------------------------------------------------------------ layout

NODE = Path(__file__).resolve().parent.parent / "node"
COMMAND_MODULES = ("node.cli", "node.auditcli", "node.demo", "node.ceremony", "node.issuecli",
                   "node.readcli", "node.recordcli", "node.lookupcli", "node.exportcli",
                   "node.consentcli")


def _imports(module: str) -> set[str]:
    tree = ast.parse((NODE / f"{module.split('.')[1]}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module:
            found.add(n.module)
            found.update(f"{n.module}.{a.name}" for a in n.names)
        elif isinstance(n, ast.Import):
            found.update(a.name for a in n.names)
    return found


def test_command_modules_import_no_other_command_module() -> None:
    """The command modules share node.command and node.connect, never each
    other or node.cli (recordcli, which resolves ids, excepted for issuecli and
    consentcli);
    node.cli, the root, imports none of them: it names each command and loads
    its module only when it runs."""
    for m in COMMAND_MODULES[1:]:
        allowed = {"node.recordcli"} if m in ("node.issuecli", "node.consentcli") else set()
        assert not _imports(m) & (set(COMMAND_MODULES) - allowed - {m}), m
    root = ast.parse((NODE / "cli.py").read_text(encoding="utf-8"))
    top = {n.module for n in root.body if isinstance(n, ast.ImportFrom)}
    assert not top & set(COMMAND_MODULES)
    for shared in ("node.command", "node.connect", "node.auditclient"):
        assert not _imports(shared) & set(COMMAND_MODULES), shared


OFFLINE_FAILURES = [
    (["keys", "verifier", "--participant", "nobody"], 2, "not a participant"),
    (["node", "run"], 2, "--as ID is required"),
    (["node", "configure", "--pin", "AAAA"], 2, "--as ID is required"),
    (["audit", "--data-dir", "{tmp}/nothing"], 2, "no node database"),
    (["audit", "verify-evidence", "{tmp}/missing.json"], 2, "cannot read"),
    (["audit", "verify-evidence", "{tmp}/garbage.json"], 2, "not a JSON evidence file"),
    (["audit", "--node", "carrier-1", "--state", "{tmp}/garbage.json"], 2, "does not parse"),
    (["ca", "sign", "--ca", "{tmp}/ca", "--csr", "{tmp}/missing.csr", "--out", "{tmp}/x.pem"],
     2, "cannot read"),
    (["consortium", "add-member", "{tmp}/draft", "--member", "{tmp}/missing.json"], 2,
     "cannot read"),
    (["consortium", "sign", "{tmp}/draft", "--key", "{tmp}/missing.key"], 2,
     "cannot read key file"),
]


@pytest.mark.parametrize("argv,code,needle", OFFLINE_FAILURES,
                         ids=lambda a: " ".join(a[:2]) if isinstance(a, list) else None)
def test_offline_commands_fail_in_one_sentence(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, needle: str,
) -> None:
    conn, script = stub
    (tmp_path / "garbage.json").write_text("{not json", encoding="utf-8")
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "consortium":  # a draft's folder is its argument: no --consortium offered
        capsys.readouterr()
        got, (o, e) = main(args, connect=conn), capsys.readouterr()
    else:
        got, o, e = cli(capsys, folder, conn, *args)
    assert (got, o) == (code, "") and needle in e, e
    assert e.startswith("markex: ") and e.count("\n") == 1
    assert script.calls == []


def test_every_error_class_is_one_sentence_with_its_exit_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """node.command.run, the one mapping: each error class to its sentence and
    its row of the exit-code table; an unexpected one is a bug, still no traceback."""
    from keys import ConfigError, ConfigSignatureError
    from ledger.errors import BadSignature, NotAllowed, NotFound
    from node.command import UsageError, run

    def failing(err: Exception) -> Any:
        def fn(args: argparse.Namespace, connect: Any) -> int:
            raise err

        return fn

    cases = [
        (UsageError("give exactly one"), 2, "markex: give exactly one\n"),
        (NotFound("no such record"), 3, "markex: not found: no such record\n"),
        (NotAllowed("only the institute decides"), 4,
         "markex: refused: only the institute decides\n"),
        (BadSignature("record x is not signed by y"), 1,
         "markex: not verified: record x is not signed by y\n"),
        (ConfigSignatureError("not signed by the pinned key"), 1,
         "markex: not verified: not signed by the pinned key\n"),
        (ConfigError("no consortium"), 2, "markex: no consortium\n"),
        (FileNotFoundError(2, "No such file or directory", "/x/ca.pem"), 2,
         "markex: /x/ca.pem: No such file or directory\n"),
        (OSError("disk on fire"), 2, "markex: disk on fire\n"),
        (ZeroDivisionError("division by zero"), 6,
         "markex: unexpected ZeroDivisionError: division by zero (a bug in markex; "
         "MARKEX_DEBUG=1 prints the traceback)\n"),
    ]
    monkeypatch.delenv("MARKEX_DEBUG", raising=False)
    for err, code, line in cases:
        capsys.readouterr()
        assert run(failing(err), argparse.Namespace(), TlsConnect()) == code
        assert capsys.readouterr() == ("", line)
        assert run(failing(err), argparse.Namespace(json=True), TlsConnect()) == code
        got = json.loads(capsys.readouterr().err)["error"]
        assert got["exit"] == code and line == f"markex: {got['message']}\n"
