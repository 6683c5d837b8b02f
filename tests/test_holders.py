"""The holder's appeal at the serving carrier (node/holders.py) and its SMS
gateways (node/sms.py): SMPP against a small SMS centre stand-in on
127.0.0.1, the outbox file, and the Holders service of real in-process
nodes over their member port (codes, tries, expiry, limits, the record)."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ledger.record import WITHDRAW, Correction, Record
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
from node.holders import CODE_TTL_MS, MAX_STATEMENT_CHARS, MAX_TRIES
from node.sms import (
    OUTBOX_FILE,
    OutboxGateway,
    SmppGateway,
    SmsRefused,
    SmsUnavailable,
    gateway_from_config,
    read_outbox,
)
from tests.test_cli import InProcessNet

pytestmark = pytest.mark.timeout(180)

# ------------------------------------------------------------------ SMPP stand-in

BIND_TX, BIND_TX_RESP = 0x00000002, 0x80000002
SUBMIT, SUBMIT_RESP = 0x00000004, 0x80000004
UNBIND, UNBIND_RESP = 0x00000006, 0x80000006


def _cstr(b: bytes, i: int) -> tuple[str, int]:
    j = b.index(0, i)
    return b[i:j].decode("latin-1"), j + 1


def _parse_submit(body: bytes) -> dict[str, Any]:
    f: dict[str, Any] = {}
    f["service_type"], i = _cstr(body, 0)
    f["source_addr_ton"], f["source_addr_npi"] = body[i], body[i + 1]
    f["source_addr"], i = _cstr(body, i + 2)
    f["dest_addr_ton"], f["dest_addr_npi"] = body[i], body[i + 1]
    f["destination_addr"], i = _cstr(body, i + 2)
    f["esm_class"] = body[i]
    _, i = _cstr(body, i + 3)      # after protocol_id, priority_flag: schedule_delivery_time
    _, i = _cstr(body, i)          # validity_period
    f["registered_delivery"] = body[i]
    f["data_coding"] = body[i + 2]
    n = body[i + 4]
    f["short_message"] = body[i + 5:i + 5 + n]
    return f


class Smsc:
    """Enough of an SMPP 3.4 SMS centre: bind_transmitter, submit_sm (answered
    with a message id, or `submit_status`), unbind; every PDU kept."""

    def __init__(self, *, bind_status: int = 0, submit_status: int = 0, silent: bool = False):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.bind_status, self.submit_status, self.silent = bind_status, submit_status, silent
        self.binds: list[tuple[str, str]] = []
        self.submits: list[dict[str, Any]] = []
        self.unbinds = 0
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            while True:
                head = self._read(conn, 16)
                if head is None:
                    return
                length, cmd, _, seq = struct.unpack(">IIII", head)
                body = self._read(conn, length - 16) or b""
                if self.silent:
                    continue
                if cmd == BIND_TX:
                    sid, i = _cstr(body, 0)
                    pw, _ = _cstr(body, i)
                    self.binds.append((sid, pw))
                    self._send(conn, BIND_TX_RESP, self.bind_status, seq, b"smsc\0")
                elif cmd == SUBMIT:
                    self.submits.append(_parse_submit(body))
                    mid = f"msg-{len(self.submits)}".encode() + b"\0"
                    self._send(conn, SUBMIT_RESP, self.submit_status, seq,
                               b"\0" if self.submit_status else mid)
                elif cmd == UNBIND:
                    self.unbinds += 1
                    self._send(conn, UNBIND_RESP, 0, seq, b"")

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                chunk = conn.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    @staticmethod
    def _send(conn: socket.socket, cmd: int, status: int, seq: int, body: bytes) -> None:
        conn.sendall(struct.pack(">IIII", 16 + len(body), cmd, status, seq) + body)

    def close(self) -> None:
        self.sock.close()
        self._t.join(timeout=5)


def _text_of(submits: list[dict[str, Any]]) -> str:
    """The message the parts carry (UCS2, UDH stripped when esm_class says so)."""
    out = ""
    for s in submits:
        sm = s["short_message"]
        if s["esm_class"] & 0x40:
            sm = sm[sm[0] + 1:]
        out += sm.decode("utf-16-be")
    return out


def test_smpp_sends_chinese_text_as_ucs2() -> None:
    smsc = Smsc()
    try:
        text = ("【markex】您的申诉验证码：123456，5分钟内有效。"
                "Your markex appeal code: 123456 (valid 5 minutes).")
        gw = SmppGateway("127.0.0.1", smsc.port, "markex", "s3cret", source_addr="10658",
                         timeout=5)
        mid = gw.send("+8613812345678", text)
        smsc._t.join(timeout=5)
        assert smsc.binds == [("markex", "s3cret")]
        assert smsc.unbinds == 1
        assert len(smsc.submits) == 2              # over 70 UCS2 characters: two parts
        assert mid == "msg-1,msg-2"
        for s in smsc.submits:
            assert s["destination_addr"] == "8613812345678"
            assert (s["dest_addr_ton"], s["dest_addr_npi"]) == (1, 1)   # international, ISDN
            assert (s["source_addr"], s["source_addr_ton"]) == ("10658", 0)
            assert s["data_coding"] == 8                                # UCS2
        assert _text_of(smsc.submits) == text
    finally:
        smsc.close()


def test_smpp_errors_are_typed() -> None:
    refusing = Smsc(submit_status=0x45)      # ESME_RSUBMITFAIL
    try:
        with pytest.raises(SmsRefused, match="status 69"):
            SmppGateway("127.0.0.1", refusing.port, "a", "b", timeout=5).send("+8613800000001",
                                                                               "hi")
    finally:
        refusing.close()
    bad_login = Smsc(bind_status=0x0E)       # ESME_RINVPASWD
    try:
        with pytest.raises(SmsRefused):
            SmppGateway("127.0.0.1", bad_login.port, "a", "b", timeout=5).send("+8613800000001",
                                                                                "hi")
        assert bad_login.submits == []
    finally:
        bad_login.close()
    silent = Smsc(silent=True)
    try:
        with pytest.raises(SmsUnavailable):
            SmppGateway("127.0.0.1", silent.port, "a", "b", timeout=0.5).send("+8613800000001",
                                                                               "hi")
    finally:
        silent.close()
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(SmsUnavailable):
        SmppGateway("127.0.0.1", port, "a", "b", timeout=2).send("+8613800000001", "hi")


def test_outbox_writes_design_format(tmp_path: Path) -> None:
    gw = OutboxGateway(tmp_path / OUTBOX_FILE, clock_ms=lambda: 1_780_000_000_123)
    gw.send("+8613812345678", "验证码 123456")
    gw.send("+8613812345679", "second")
    lines = (tmp_path / OUTBOX_FILE).read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == [
        {"to": "+8613812345678", "text": "验证码 123456", "sent_at": "2026-05-28T20:26:40.123Z"},
        {"to": "+8613812345679", "text": "second", "sent_at": "2026-05-28T20:26:40.123Z"},
    ]
    assert read_outbox(tmp_path / OUTBOX_FILE)[1]["to"] == "+8613812345679"


def test_gateway_from_config(tmp_path: Path) -> None:
    gw = gateway_from_config("", tmp_path)
    assert isinstance(gw, OutboxGateway) and gw.path == tmp_path / OUTBOX_FILE
    s = gateway_from_config("smpp://me:p%40ss@smsc.example:2776?source=10658", tmp_path)
    assert isinstance(s, SmppGateway)
    assert (s.host, s.port, s.system_id, s.password, s.source_addr) == (
        "smsc.example", 2776, "me", "p@ss", "10658")
    with pytest.raises(ValueError, match="neither"):
        gateway_from_config("http://x", tmp_path)


# ------------------------------------------------------------------ the Holders service

N_CODE = "+8613812340001"        # internet-1's fraud mark: the happy path
N_TRIES = "+8613812340002"
N_EXPIRE = "+8613812340003"
N_REPLACE = "+8613812340004"
N_LIMIT = "+8613812340005"
N_LONG = "+8613812340006"
N_OWN = "+8613812340007"         # only carrier-1's own mark
N_NONE = "+8613812340999"        # no mark at all
N_OTHER = "+8613912340001"       # served by carrier-2
SCRIPT = '<script>alert("x")</script>'


class Holders:
    def __init__(self, net: InProcessNet) -> None:
        self.net = net
        self._stubs: dict[str, Any] = {}

    def stub(self, node: str, as_id: str = "internet-1") -> Any:
        if (node, as_id) not in self._stubs:
            ep = self.net.consortium.participant(node).member_endpoint
            self._stubs[node, as_id] = rpc.HoldersStub(
                client.member_channel(self.net.dir, as_id, ep, node))
        return self._stubs[node, as_id]

    def node(self, pid: str) -> Any:
        return next(n for n in self.net.nodes_running if n.participant_id == pid)

    def outbox(self, pid: str) -> list[dict[str, str]]:
        return read_outbox(self.net.dir / pid / OUTBOX_FILE)

    def last_code(self, pid: str, number: str) -> str:
        msg = [m for m in self.outbox(pid) if m["to"] == number][-1]
        found = re.search(r"\d{6}", msg["text"])
        assert found is not None
        return found.group(0)

    def size(self, pid: str = "carrier-1") -> int:
        return self.node(pid).core.ledger.size


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Holders]:
    net = InProcessNet(tmp_path_factory.mktemp("holders") / "c", carriers=2, internet=1,
                       sync_interval=0.2)
    net.start_all()
    try:
        cons = net.consortium
        assert cons.carrier_for(N_CODE) == "carrier-1"
        assert cons.carrier_for(N_OTHER) == "carrier-2"
        for n in (N_CODE, N_TRIES, N_EXPIRE, N_REPLACE, N_LIMIT, N_LONG, N_OTHER):
            net.mark("internet-1", n, "fraud", 70, 3)
        net.mark("carrier-1", N_OWN, "fraud", 70, 3)
        net.wait_converged(timeout=30)
        yield Holders(net)
    finally:
        net.stop_all()


def _refused(call: Any, code: grpc.StatusCode, match: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as ei:
        call()
    assert ei.value.code() == code, ei.value.details()
    assert re.search(match, ei.value.details() or ""), ei.value.details()
    return ei.value


def test_code_then_appeal_issues_the_correction(h: Holders) -> None:
    s = h.stub("carrier-1")
    sent = s.RequestCode(pb.CodeRequest(number="13812340001", client_address="10.0.0.1"))
    assert (sent.number, sent.carrier) == (N_CODE, "carrier-1")
    code = h.last_code("carrier-1", N_CODE)
    assert "验证码" in h.outbox("carrier-1")[-1]["text"]
    desk = h.node("carrier-1").holders.desk
    assert code not in repr(desk._codes)                    # kept only hashed
    before = h.size()
    statement = f"这是我们的快递外卖热线 {SCRIPT}"
    issued = s.FileAppeal(pb.HolderAppeal(number=N_CODE, code=code, statement=statement,
                                          client_address="10.0.0.1"))
    assert issued.issuer == "carrier-1" and issued.appeal
    assert h.size() == before + 1
    led = h.node("carrier-1").core.ledger
    rec = Record.from_envelope(led.record_by_id(issued.id)[1])
    assert isinstance(rec.payload, Correction)
    assert rec.payload.action == WITHDRAW and rec.payload.reason == statement
    target = Record.from_envelope(led.record_by_id(rec.payload.targets[0])[1])
    assert target.issuer == "internet-1" and target.payload.number == N_CODE
    assert all(code.encode() not in e for e in led.entries(0, led.size))  # never in the log
    # the code is spent
    _refused(lambda: s.FileAppeal(pb.HolderAppeal(number=N_CODE, code=code, statement="again",
                                                  client_address="10.0.0.1")),
             grpc.StatusCode.PERMISSION_DENIED, "WrongCode: no live code")
    assert h.size() == before + 1
    # a second appeal of the same marks while this one is pending: a clear answer, no SMS
    sent = len(h.outbox("carrier-1"))
    _refused(lambda: s.RequestCode(pb.CodeRequest(number=N_CODE, client_address="10.0.0.1")),
             grpc.StatusCode.FAILED_PRECONDITION,
             f"NothingToAppeal: .*already appealed \\(appeal {issued.id.hex()}, pending\\)")
    assert len(h.outbox("carrier-1")) == sent and h.size() == before + 1
    # any node lists it and reads it, with the statement (members only)
    h.net.wait_converged(timeout=30)
    inst = h.stub("institute", as_id="institute")
    for _ in range(100):
        listed = [a for a in inst.ListAppeals(pb.ListAppealsRequest(pending_only=True)).appeals
                  if a.id == issued.id]
        if listed:
            break
        time.sleep(0.1)
    assert listed and listed[0].number == N_CODE and listed[0].status == "pending"
    assert listed[0].statement == statement and listed[0].appellant == "carrier-1"
    got = inst.GetAppeal(pb.GetAppealRequest(id=issued.id))
    assert got.number == N_CODE and got.filed_at_ms == rec.issued_at_ms
    _refused(lambda: inst.GetAppeal(pb.GetAppealRequest(id=rec.payload.targets[0])),
             grpc.StatusCode.NOT_FOUND, "no appeal")


def test_only_the_serving_carrier_serves_a_number(h: Holders) -> None:
    before = {p: len(h.outbox(p)) for p in ("carrier-1", "carrier-2")}
    for node in ("carrier-2", "institute", "internet-1"):
        _refused(lambda n=node: h.stub(n).RequestCode(pb.CodeRequest(number=N_CODE)),
                 grpc.StatusCode.FAILED_PRECONDITION,
                 f"NotServed: {node} does not serve {re.escape(N_CODE)}: its serving "
                 "carrier is carrier-1")
    assert {p: len(h.outbox(p)) for p in before} == before
    _refused(lambda: h.stub("carrier-1").RequestCode(pb.CodeRequest(number=f"138{SCRIPT}")),
             grpc.StatusCode.INVALID_ARGUMENT, "InvalidNumber")


def test_nothing_to_appeal_sends_no_sms(h: Holders) -> None:
    s = h.stub("carrier-1")
    before, sent = h.size(), len(h.outbox("carrier-1"))
    _refused(lambda: s.RequestCode(pb.CodeRequest(number=N_NONE, client_address="10.0.0.2")),
             grpc.StatusCode.FAILED_PRECONDITION, "NothingToAppeal: no mark counts on")
    _refused(lambda: s.RequestCode(pb.CodeRequest(number=N_OWN, client_address="10.0.0.2")),
             grpc.StatusCode.FAILED_PRECONDITION, "own .*withdraws them")
    assert (h.size(), len(h.outbox("carrier-1"))) == (before, sent)


def test_five_tries_then_the_code_is_dead(h: Holders) -> None:
    s = h.stub("carrier-1")
    s.RequestCode(pb.CodeRequest(number=N_TRIES, client_address="10.0.0.3"))
    code = h.last_code("carrier-1", N_TRIES)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    before = h.size()

    def file(c: str) -> Any:
        return s.FileAppeal(pb.HolderAppeal(number=N_TRIES, code=c, statement="ours",
                                            client_address="10.0.0.3"))

    for left in range(MAX_TRIES - 1, 0, -1):
        _refused(lambda: file(wrong), grpc.StatusCode.PERMISSION_DENIED,
                 f"wrong code; {left} tries left")
    e = _refused(lambda: file(wrong), grpc.StatusCode.RESOURCE_EXHAUSTED,
                 "5 wrong codes .* ask for a new one")
    assert int(dict(e.trailing_metadata())["retry-after"]) >= 1
    _refused(lambda: file(code), grpc.StatusCode.PERMISSION_DENIED, "no live code")
    assert h.size() == before


def test_a_code_expires_after_five_minutes(h: Holders) -> None:
    s = h.stub("carrier-1")
    desk = h.node("carrier-1").holders.desk
    real = desk.clock
    s.RequestCode(pb.CodeRequest(number=N_EXPIRE, client_address="10.0.0.4"))
    code = h.last_code("carrier-1", N_EXPIRE)
    before = h.size()
    desk.clock = lambda: real() + CODE_TTL_MS
    try:
        _refused(lambda: s.FileAppeal(pb.HolderAppeal(number=N_EXPIRE, code=code,
                                                      statement="ours",
                                                      client_address="10.0.0.4")),
                 grpc.StatusCode.PERMISSION_DENIED, "has expired")
    finally:
        desk.clock = real
    assert h.size() == before


def test_a_new_code_replaces_the_live_one(h: Holders) -> None:
    s = h.stub("carrier-1")
    s.RequestCode(pb.CodeRequest(number=N_REPLACE, client_address="10.0.0.5"))
    first = h.last_code("carrier-1", N_REPLACE)
    s.RequestCode(pb.CodeRequest(number=N_REPLACE, client_address="10.0.0.5"))
    second = h.last_code("carrier-1", N_REPLACE)
    before = h.size()
    if first != second:
        _refused(lambda: s.FileAppeal(pb.HolderAppeal(number=N_REPLACE, code=first,
                                                      statement="ours",
                                                      client_address="10.0.0.5")),
                 grpc.StatusCode.PERMISSION_DENIED, "wrong code")
    s.FileAppeal(pb.HolderAppeal(number=N_REPLACE, code=second, statement="ours",
                                 client_address="10.0.0.5"))
    assert h.size() == before + 1


def test_requests_are_limited_per_number_and_per_address(h: Holders) -> None:
    s = h.stub("carrier-1")
    for i in range(3):
        s.RequestCode(pb.CodeRequest(number=N_LIMIT, client_address=f"10.1.0.{i}"))
    sent = len(h.outbox("carrier-1"))
    e = _refused(lambda: s.RequestCode(pb.CodeRequest(number=N_LIMIT, client_address="10.1.0.9")),
                 grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many codes sent to {re.escape(N_LIMIT)}")
    wait = int(dict(e.trailing_metadata())["retry-after"])
    assert 3000 < wait <= 3600
    # one address asking for many numbers
    for _ in range(10):
        try:
            s.RequestCode(pb.CodeRequest(number=N_NONE, client_address="10.2.0.1"))
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    _refused(lambda: s.RequestCode(pb.CodeRequest(number=N_LONG, client_address="10.2.0.1")),
             grpc.StatusCode.RESOURCE_EXHAUSTED, "from your address")
    assert len(h.outbox("carrier-1")) == sent


def test_an_oversized_statement_is_refused_before_the_code(h: Holders) -> None:
    s = h.stub("carrier-1")
    s.RequestCode(pb.CodeRequest(number=N_LONG, client_address="10.0.0.6"))
    code = h.last_code("carrier-1", N_LONG)
    before = h.size()
    _refused(lambda: s.FileAppeal(pb.HolderAppeal(number=N_LONG, code=code,
                                                  statement="x" * (MAX_STATEMENT_CHARS + 1),
                                                  client_address="10.0.0.6")),
             grpc.StatusCode.INVALID_ARGUMENT, "StatementTooLong: .*at most 1,000")
    assert h.size() == before
    # the try was not spent: the code still files
    s.FileAppeal(pb.HolderAppeal(number=N_LONG, code=code, statement="是送餐电话" * 200,
                                 client_address="10.0.0.6"))
    assert h.size() == before + 1


def test_policy_appeal_decision_deadline() -> None:
    from keys import ConfigError
    from keys.consortium import Policy

    assert Policy().appeal_decision_ms == 15 * 86_400_000
    assert Policy.from_json({}).appeal_decision_ms == 15 * 86_400_000      # an older file
    assert Policy.from_json({"appeal_decision_ms": 86_400_000}).appeal_decision_ms == 86_400_000
    assert Policy().to_json()["appeal_decision_ms"] == 15 * 86_400_000     # init writes it
    with pytest.raises(ConfigError, match="appeal_decision_ms"):
        Policy(appeal_decision_ms=1000)
