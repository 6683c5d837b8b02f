"""The public port shows what publication needs and no more (docs/publication.md).

Every test here fails on the main before this change: there the public port
served GetEntries, GetRecord and GetEvidence to anyone, there was no Audit
service, no auditor role, and a node's TLS certificate was an admin credential.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from keys import ConfigError
from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium
from keys.signing import SigningKey
from ledger.errors import NotAllowed
from ledger.log import NodeLedger
from ledger.record import Mark, Record
from ledger.store import Store
from ledger.view import NationalView
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
from node.localnet import free_port_block
from node.server import Node

pytestmark = pytest.mark.timeout(120)

S = grpc.StatusCode
OWN = "carrier-1"
MOVED = ("GetEntries", "GetRecord", "GetEvidence")


class Net:
    """One running node (carrier-1) of a consortium that has an auditor."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "c"
        self.cons = init_consortium(self.dir, carriers=1, internet=1,
                                    base_port=free_port_block(8), now=datetime.now(UTC))
        self.node = Node(NodeConfig.for_participant(self.dir, OWN)).start()
        me = self.cons.participant(OWN)
        assert me is not None
        self.member_ep, self.public_ep = me.member_endpoint, me.public_endpoint
        self.channels: list[grpc.Channel] = []

    def keep(self, ch: grpc.Channel) -> grpc.Channel:
        self.channels.append(ch)
        return ch

    def public(self) -> grpc.Channel:
        return self.keep(client.public_channel(self.dir, self.public_ep))

    def member(self, as_id: str) -> grpc.Channel:
        return self.keep(client.member_channel(self.dir, as_id, self.member_ep))

    def admin(self, as_id: str) -> grpc.Channel:
        return self.keep(client.admin_channel(self.dir, as_id, self.member_ep))

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        self.node.stop()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    n = Net(tmp_path_factory.mktemp("publication"))
    try:
        issued = rpc.AdminStub(n.admin(OWN)).IssueMark(
            rpb.Mark(number="+8613800001111", category="fraud", score=70, reports=1), timeout=10
        )
        n.record_id = issued.id  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while n.node.log_checkpoint_note() is None:  # the ticker signs within 0.25 s
            assert time.monotonic() < deadline, "no checkpoint signed"
            time.sleep(0.05)
        yield n
    finally:
        n.close()


def _code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as ei:
        call()
    return ei.value.code()


# ------------------------------------------------------------------ anonymous


@pytest.mark.parametrize("method", MOVED)
def test_anonymous_client_cannot_read_records_on_the_public_port(net: Net, method: str) -> None:
    """On main these answered anyone: raw records, whole histories, evidence."""
    ch = net.public()
    for service in ("Public", "Audit"):
        raw = ch.unary_unary(f"/markex.v1.{service}/{method}",
                             request_serializer=None, response_deserializer=None)
        assert _code(lambda r=raw: r(b"", timeout=10)) == S.UNIMPLEMENTED


@pytest.mark.parametrize("method", MOVED)
def test_anonymous_client_cannot_reach_the_audit_service(net: Net, method: str) -> None:
    """Without a client certificate the member port refuses the handshake."""
    ca = (net.dir / "ca" / "ca.pem").read_bytes()
    ch = net.keep(grpc.secure_channel(net.member_ep, grpc.ssl_channel_credentials(ca)))
    raw = ch.unary_unary(f"/markex.v1.Audit/{method}",
                         request_serializer=None, response_deserializer=None)
    assert _code(lambda: raw(b"", timeout=10)) == S.UNAVAILABLE


def test_public_port_still_publishes_what_publication_needs(net: Net) -> None:
    pub = rpc.PublicStub(net.public())
    assert pub.GetFeedHeads(pb.FeedHeadsRequest(), timeout=10).heads
    cp = pub.GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=10)
    assert cp.size >= 1
    inc = pub.GetInclusionProof(pb.GetInclusionProofRequest(index=0, size=cp.size), timeout=10)
    assert len(inc.leaf_hash) == 32


# ------------------------------------------------------------------ auditor and members


def test_auditor_reads_entries_records_and_evidence(net: Net) -> None:
    aud = rpc.AuditStub(net.member("auditor-1"))
    size = net.node.core.ledger.size
    ent = aud.GetEntries(pb.GetEntriesRequest(start=0, end=size), timeout=10)
    assert ent.start == 0 and len(ent.envelopes) == size
    got = aud.GetRecord(pb.GetRecordRequest(id=net.record_id), timeout=10)  # type: ignore[attr-defined]
    assert Record.from_envelope(got.envelope).id == net.record_id  # type: ignore[attr-defined]
    assert bytes(ent.envelopes[got.index]) == bytes(got.envelope)
    ev = aud.GetEvidence(pb.GetEvidenceRequest(), timeout=10)
    assert list(ev.equivocations) == [] and list(ev.forks) == []


def test_member_reads_the_audit_service(net: Net) -> None:
    aud = rpc.AuditStub(net.member("internet-1"))
    got = aud.GetRecord(pb.GetRecordRequest(id=net.record_id), timeout=10)  # type: ignore[attr-defined]
    assert got.envelope


def test_cli_log_entries_as_auditor(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    from node.cli import main

    size = net.node.core.ledger.size
    argv = ["log", "entries", "--start", "0", "--end", str(size), "--consortium", str(net.dir),
            "--node", OWN, "--json"]
    pin = ["--institute-key", (net.dir / "config" / "config.pub").read_text().strip()]
    # Without --as: as the consortium's auditor, the pin given; --as auditor-1 takes the
    # pin from its config.pub (it has no node.toml), --as internet-1 from its node.toml.
    for who in (pin, ["--as", "auditor-1"], ["--as", "internet-1"]):
        capsys.readouterr()
        assert main([*argv, *who]) == 0
        out = json.loads(capsys.readouterr().out)
        assert [base64.b64decode(e) for e in out["entries"]] == net.node.core.ledger.entries(
            0, size)


def test_public_material_alone_reads_checkpoints_not_entries(
    net: Net, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone holding only what is published (consortium.json, its signature,
    the CA certificate) gets the checkpoint but no entries."""
    from node.cli import main

    pub = tmp_path / "public"
    (pub / "ca").mkdir(parents=True)
    for f in ("consortium.json", "consortium.json.sig", "ca/ca.pem"):
        (pub / f).write_bytes((net.dir / f).read_bytes())
    pin = (net.dir / "config" / "config.pub").read_text().strip()  # published
    common = ["--consortium", str(pub), "--node", OWN, "--institute-key", pin]
    capsys.readouterr()
    assert main(["log", "checkpoint", *common]) == 0
    assert capsys.readouterr().out.startswith(f"{net.cons.name}/log/{OWN}\n")
    assert main(["log", "entries", "--start", "0", "--end", "1", *common]) == 2  # usage
    assert "cannot read key file" in capsys.readouterr().err


# ------------------------------------------------------------------ the auditor issues nothing


def test_node_refuses_an_auditors_push_and_exchange(net: Net) -> None:
    key = SigningKey.load(net.dir / "auditor-1" / "signing.key")
    now = int(time.time() * 1000)
    rec = Record.issue(key, "auditor-1", 1, b"", now, Mark("+8613800002222", "fraud", 60, 1, now),
                       consortium=net.cons.name)
    ex = rpc.ExchangeStub(net.member("auditor-1"))
    before = net.node.core.ledger.size
    assert _code(lambda: ex.Push(iter([pb.RecordBatch(envelopes=[rec.envelope])]),
                                 timeout=10)) == S.PERMISSION_DENIED
    assert _code(lambda: ex.Deliver(pb.RecordBatch(envelopes=[rec.envelope]),
                                    timeout=10)) == S.PERMISSION_DENIED
    assert _code(lambda: list(ex.Pull(pb.PullRequest(issuer=OWN), timeout=10))) \
        == S.PERMISSION_DENIED
    assert net.node.core.ledger.size == before


def test_node_refuses_an_auditors_admin_calls(net: Net) -> None:
    """With its member certificate: the Admin API takes admin certificates only,
    and an auditor has none."""
    stub = rpc.AdminStub(net.member("auditor-1"))
    before = net.node.core.ledger.size
    assert _code(lambda: stub.IssueMark(rpb.Mark(number="+8613800003333", category="fraud"),
                                        timeout=10)) == S.PERMISSION_DENIED
    assert net.node.core.ledger.size == before
    assert not (net.dir / "auditor-1" / "admin.pem").exists()


def test_ledger_refuses_every_payload_of_an_auditor(tmp_path: Path) -> None:
    d = tmp_path / "c"
    cons = init_consortium(d, carriers=1, internet=0, now=datetime.now(UTC))
    key = SigningKey.load(d / "auditor-1" / "signing.key")
    led = NodeLedger(Store(tmp_path / "db"), cons, "institute", None)
    try:
        now = int(time.time() * 1000)
        rec = Record.issue(key, "auditor-1", 1, b"", now, Mark("+8613800004444", "fraud", 60, 1,
                                                              now), consortium=cons.name)
        with pytest.raises(NotAllowed, match="issues nothing"):
            led.append(rec.envelope, now)
        assert led.size == 0
        # The view, a pure function of records, ignores it as the ledger does.
        view = NationalView(cons)
        view.apply([rec])
        assert view.entry("+8613800004444") is None
    finally:
        led.close()


@pytest.mark.parametrize("change,match", [
    ({"weight": 1}, "weight 0"),
    ({"member_endpoint": "127.0.0.1:9"}, "no endpoints"),
])
def test_consortium_refuses_an_auditor_with_weight_or_a_node(
    tmp_path: Path, change: dict, match: str
) -> None:
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, now=datetime.now(UTC))
    obj = json.loads((d / "consortium.json").read_bytes())
    for p in obj["participants"]:
        if p["role"] == "auditor":
            p.update(change)
    with pytest.raises(ConfigError, match=match):
        Consortium.from_json_bytes(json.dumps(obj).encode())
