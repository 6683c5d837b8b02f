"""Integration: six real node processes on loopback (institute, three
carriers, two internet firms) replicate every feed, heal after SIGKILL and
partitions, catch up from scratch, refuse strangers, and spread equivocations."""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from keys.signing import SigningKey
from keys.tls import make_ca, make_node_cert
from ledger.record import Mark, Record
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.localnet import LocalNet

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    n = LocalNet(tmp_path_factory.mktemp("consortium") / "c", sync_interval=0.3)
    n.start_all()
    try:
        yield n
    finally:
        n.stop_all()


def _issue_some(net: LocalNet, pid: str, count: int, prefix: str) -> list[bytes]:
    return [net.mark(pid, f"{prefix}{i:04d}", "harassment").id for i in range(count)]


def test_records_from_three_nodes_reach_all_six(net: LocalNet) -> None:
    ids = []
    for pid, prefix in (
        ("carrier-1", "1380000"),
        ("internet-1", "1390000"),
        ("institute", "1300000"),
    ):
        ids += _issue_some(net, pid, 20, prefix)
    net.wait_converged(timeout=30)
    for pid in net.ids:
        aud = net.audit(pid)  # raw records: the auditor, on the member port
        for rid in ids:
            assert aud.GetRecord(pb.GetRecordRequest(id=rid), timeout=5).envelope
        heads = net.heads(pid)
        assert heads["carrier-1"] >= 20 and heads["internet-1"] >= 20 and heads["institute"] >= 20


def test_log_checkpoints_are_cosigned(net: LocalNet) -> None:
    from ledger import note
    from node.witness import witness_name

    net.mark("carrier-2", "13600000001", "fraud")
    net.wait_converged(timeout=30)
    cons = net.consortium
    witnesses = {witness_name(cons.name, p.id): p.public_key for p in cons.participants}
    deadline = time.monotonic() + 20
    while True:
        text = (
            net.public("carrier-2").GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=5).note
        )
        names = note.count_cosignatures(text, witnesses)
        if len(names) >= cons.policy.cosign_quorum or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(names) >= cons.policy.cosign_quorum


def test_sigkill_mid_stream_then_restart_converges(net: LocalNet) -> None:
    import threading

    stop = threading.Event()
    issued: list[bytes] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            with contextlib.suppress(grpc.RpcError):
                issued.append(net.mark("internet-2", f"1370000{i:04d}", "marketing").id)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.5)
    net.kill("carrier-3")
    time.sleep(0.7)
    net.start("carrier-3")
    time.sleep(0.5)
    stop.set()
    t.join()
    net.wait_converged(timeout=60)
    aud = net.audit("carrier-3")
    for rid in issued:
        assert aud.GetRecord(pb.GetRecordRequest(id=rid), timeout=5).envelope


def test_partitioned_node_converges_after_heal(net: LocalNet) -> None:
    net.isolate("internet-1")
    time.sleep(0.5)
    ids = _issue_some(net, "carrier-2", 15, "1350000")
    ids += _issue_some(net, "internet-1", 5, "1351000")
    time.sleep(1.0)
    # cut off: it has none of carrier-2's new records
    assert net.heads("internet-1").get("carrier-2", 0) < net.heads("carrier-2")["carrier-2"]
    net.heal()
    net.wait_converged(timeout=60)
    for pid in net.ids:
        for rid in ids:
            net.audit(pid).GetRecord(pb.GetRecordRequest(id=rid), timeout=5)


def test_the_partition_hook_is_a_logged_test_flag(net: LocalNet) -> None:
    """The processes above run with `--test-refuse-file` (LocalNet passes it)
    and each says so in its log; without the flag the hook is off."""
    for pid in net.ids:
        log_text = (net.dir / pid / "node.log").read_text()
        assert '"event": "test-hook"' in log_text and str(net.refuse_file(pid)) in log_text


def test_new_empty_node_catches_up_from_scratch(net: LocalNet) -> None:
    """Its store lost, carrier-1 restarts with `--restored`: its own feed comes
    back from its peers, and it continues the same chain at the next seq."""
    import shutil

    net.wait_converged(timeout=60)
    before = net.heads("institute")["carrier-1"]
    net.terminate("carrier-1")
    shutil.rmtree(net.dir / "carrier-1" / "data")
    (net.dir / "carrier-1" / "data").mkdir()
    net.start("carrier-1", restored=True)
    r = net.mark("carrier-1", "13800009999", "fraud")
    assert r.seq == before + 1
    net.wait_converged(timeout=60)
    for p in net.ids:
        heads = net.public(p).GetFeedHeads(pb.FeedHeadsRequest(), timeout=5).heads
        assert not any(h.frozen for h in heads), p


def test_certificate_from_another_ca_is_refused(net: LocalNet, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca_key, ca_cert = make_ca("rogue CA", now)
    key, cert = make_node_cert(ca_key, ca_cert, "carrier-1", [], now)
    trust = (net.dir / "ca" / "ca.pem").read_bytes()
    creds = grpc.ssl_channel_credentials(
        root_certificates=trust, private_key=key, certificate_chain=cert
    )
    ep = net.consortium.participant("carrier-1").member_endpoint  # type: ignore[union-attr]
    with grpc.secure_channel(ep, creds) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            rpc.AdminStub(ch).IssueMark(rpb.Mark(number="13800000000", category="fraud"), timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as ei:
            rpc.ExchangeStub(ch).Heads(pb.FeedHeadsRequest(), timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE


def test_non_member_cannot_issue(net: LocalNet) -> None:
    before = net.heads("carrier-1").get("carrier-1", 0)
    with pytest.raises(grpc.RpcError) as ei:
        net.admin("carrier-1", as_id="internet-2").IssueMark(
            rpb.Mark(number="13800000000", category="fraud"), timeout=5
        )
    assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert net.heads("carrier-1").get("carrier-1", 0) == before


def test_equivocation_reaches_every_node(net: LocalNet) -> None:
    key = SigningKey.load(net.dir / "internet-2" / "signing.key")
    net.wait_converged(timeout=30)
    head = net.heads("institute").get("internet-2", 0)
    prev = b""
    if head:
        env = net.exchange("institute", "carrier-1").Pull(
            pb.PullRequest(issuer="internet-2", after=head - 1, max=1), timeout=5
        )
        prev = Record.from_envelope(next(iter(env)).envelopes[0]).id
    now = int(time.time() * 1000)
    name = net.consortium.name
    a = Record.issue(
        key, "internet-2", head + 1, prev, now, Mark("+8613311112222", "fraud", 90, 1, now),
        consortium=name,
    )
    b = Record.issue(
        key, "internet-2", head + 1, prev, now, Mark("+8613311112222", "delivery", 90, 1, now),
        consortium=name,
    )
    net.exchange("carrier-1", "carrier-2").Deliver(
        pb.RecordBatch(envelopes=[a.envelope]), timeout=5
    )
    net.exchange("carrier-2", "carrier-1").Deliver(
        pb.RecordBatch(envelopes=[b.envelope]), timeout=5
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frozen = {}
        for pid in net.ids:
            hs = net.public(pid).GetFeedHeads(pb.FeedHeadsRequest(), timeout=5).heads
            frozen[pid] = any(h.issuer == "internet-2" and h.frozen for h in hs)
        if all(frozen.values()):
            break
        time.sleep(0.2)
    assert all(frozen.values()), frozen
    for pid in net.ids:
        ev = net.audit(pid).GetEvidence(pb.GetEvidenceRequest(), timeout=5)
        assert ev.equivocations


def test_health_and_reflection_work_with_standard_clients(net: LocalNet) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    from node import client

    ep = net.consortium.participant("institute").public_endpoint  # type: ignore[union-attr]
    with client.public_channel(net.dir, ep) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
        assert {"markex.v1.Public", "grpc.health.v1.Health"} <= services


def test_metrics_endpoint(net: LocalNet) -> None:
    import urllib.request

    port = net.nodes["carrier-2"].ports["metrics_port"]
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name in (
        "markex_records_total",
        "markex_log_size",
        "markex_feed_lag_records",
        "markex_propagation_seconds",
        "markex_request_seconds",
    ):
        assert name in body
    assert 'markex_records_total{status="accepted"}' in body


def test_view_roots_agree_on_every_node(net: LocalNet) -> None:
    from ledger import note
    from ledger.view import parse_view_checkpoint

    net.wait_converged(timeout=30)
    deadline = time.monotonic() + 20
    while True:
        cps = []
        for pid in net.ids:
            text = net.public(pid).GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=5).note
            cps.append(parse_view_checkpoint(note.Note.parse(text).text))
        if len({(c.root, c.vector) for c in cps}) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len({(c.root, c.vector, c.count) for c in cps}) == 1 and cps[0].count > 0


def test_peer_signing_another_view_root_is_fault_evidence(net: LocalNet) -> None:
    """carrier-2's key signs a view root other than the one everyone computed
    for the same vector: the node asked to cosign refuses and keeps evidence."""
    import json

    from ledger import note
    from ledger.view import ViewCheckpoint, parse_view_checkpoint, sign_view_checkpoint, view_origin

    net.wait_converged(timeout=30)
    key = SigningKey.load(net.dir / "carrier-2" / "signing.key")
    # The checkpoint a node serves can trail its view by a moment (a new one
    # is served once it has its quorum): a forgery at the served vector is then
    # refused as out of order, not as a fork. Forge again until it is at the
    # node's own vector.
    deadline = time.monotonic() + 30
    while True:
        text = net.public("institute").GetViewCheckpoint(pb.GetViewCheckpointRequest(),
                                                         timeout=5).note
        honest = parse_view_checkpoint(note.Note.parse(text).text)
        forged = sign_view_checkpoint(
            ViewCheckpoint(
                view_origin(net.consortium.name, "carrier-2"), honest.vector, honest.count,
                hashlib.sha256(b"not the view's root").digest(),  # all zeros is the empty root
                time.time_ns() // 1_000_000,  # signed now: a cosigner refuses one off its clock
            ),
            key,
        )
        with pytest.raises(grpc.RpcError) as ei:
            net.exchange("institute", "carrier-2").CosignView(pb.CosignRequest(note=forged),
                                                              timeout=5)
        assert ei.value.code() == grpc.StatusCode.ABORTED
        ev = net.audit("institute").GetEvidence(pb.GetEvidenceRequest(), timeout=5)
        found = [json.loads(f) for f in ev.forks]
        # The node keeps the first proof per peer (later ones add nothing): an
        # earlier round of this loop may have left it, with its own forgery.
        if any(f["kind"] == "view-fork" and f["peer"] == "carrier-2"
               and f["theirs"].startswith(view_origin(net.consortium.name, "carrier-2"))
               for f in found):
            break
        assert "out of order" in (ei.value.details() or "") or "another vector" in (
            ei.value.details() or ""), ei.value.details()
        assert time.monotonic() < deadline, "the forged root was never kept as evidence"
        time.sleep(0.2)


def test_inconsistent_log_checkpoint_is_fork_evidence(net: LocalNet) -> None:
    """A checkpoint signed with carrier-3's key that does not extend what the
    witnesses saw is refused and kept (both signed notes) as evidence."""
    from ledger import note
    from ledger.log import log_origin

    net.wait_converged(timeout=30)
    time.sleep(1.0)
    key = SigningKey.load(net.dir / "carrier-3" / "signing.key")
    origin = log_origin(net.consortium.name, "carrier-3")
    size = net.public("carrier-3").GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=5).size
    for _ in range(5):
        forged = note.sign_checkpoint(note.Checkpoint(origin, size, bytes(32)), origin, key)
        with pytest.raises(grpc.RpcError) as ei:
            net.exchange("internet-1", "carrier-3").Cosign(pb.CosignRequest(note=forged),
                                                          timeout=5)
        # The witness may already have cosigned a newer checkpoint than the one
        # served (the log grew meanwhile): it refuses an older size as such and
        # says which it knows; the fork is at that size.
        known = re.search(r"witness knows size (\d+)", ei.value.details() or "")
        if ei.value.code() != grpc.StatusCode.FAILED_PRECONDITION or known is None:
            break
        size = int(known.group(1))
    assert ei.value.code() == grpc.StatusCode.ABORTED
    ev = net.audit("internet-1").GetEvidence(pb.GetEvidenceRequest(), timeout=5)
    import json

    found = [json.loads(f) for f in ev.forks]
    assert any(f["kind"] == "log-fork" and f["second"] == forged and f["first"] for f in found)


def test_sigterm_is_a_clean_stop_and_keeps_every_record(net: LocalNet) -> None:
    ids = _issue_some(net, "internet-1", 10, "1330000")
    before = net.heads("internet-1")
    assert net.terminate("internet-1") == 0
    net.start("internet-1")
    assert net.heads("internet-1")["internet-1"] >= before["internet-1"]
    for rid in ids:
        net.audit("internet-1").GetRecord(pb.GetRecordRequest(id=rid), timeout=5)
    net.wait_converged(timeout=30)


def test_node_with_another_participants_certificate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """carrier-2's node (its own CA-issued certificate) listens where carrier-1
    is expected: the CLI, the auditor's channel and a PeerLink dialling
    carrier-1 refuse it in the TLS handshake. Fails on main: any consortium
    certificate was accepted for any participant."""
    import base64
    import dataclasses

    from keys.layout import NodeConfig, init_consortium
    from node import client
    from node.cli import main
    from node.localnet import free_port_block
    from node.replication import PeerLink
    from node.server import Node

    d = tmp_path / "c"
    cons = init_consortium(d, carriers=2, internet=0, base_port=free_port_block(6),
                           now=datetime.now(UTC))
    c1, c2 = cons.participant("carrier-1"), cons.participant("carrier-2")
    assert c1 is not None and c2 is not None
    cfg = dataclasses.replace(
        NodeConfig.for_participant(d, "carrier-2"),
        member_listen=c1.member_endpoint,
        public_listen=c1.public_endpoint,
        data_dir=tmp_path / "impostor",
    )
    impostor = Node(cfg).start()
    try:
        pin = ["--consortium", str(d), "--institute-key",
               base64.b64encode(NodeConfig.for_participant(d, "institute").institute_key).decode()]
        capsys.readouterr()
        # By name: refused. The same port as HOST:PORT (any member) answers: it is up.
        assert main(["log", "checkpoint", "--node", "carrier-1", *pin]) == 1
        assert "did not present carrier-1's certificate" in capsys.readouterr().err
        assert main(["view", "checkpoint", "--node", "carrier-1", "--json", *pin]) == 1
        assert "did not present carrier-1's certificate" in capsys.readouterr().err
        assert main(["view", "checkpoint", "--node", c1.public_endpoint, "--json", *pin]) == 0
        capsys.readouterr()
        for who, ok in (("carrier-1", False), ("carrier-2", True)):
            with client.public_channel(d, c1.public_endpoint, who) as ch:
                call = rpc.PublicStub(ch).GetFeedHeads
                if ok:
                    call(pb.FeedHeadsRequest(), timeout=5)
                else:
                    with pytest.raises(grpc.RpcError) as ei:
                        call(pb.FeedHeadsRequest(), timeout=5)
                    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        # A PeerLink to carrier-1 refuses the server; one to carrier-2 at that address works.
        creds = impostor.client_credentials()
        to_c1 = PeerLink(impostor.link_parts, c1, creds)
        as_c2 = PeerLink(impostor.link_parts,
                         dataclasses.replace(c2, member_endpoint=c1.member_endpoint), creds)
        to_c1.start()  # its own rounds fail the same way; stop() then ends them
        as_c2.start()
        try:
            with pytest.raises(grpc.RpcError) as ei:
                to_c1.sync_once()
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
            as_c2.sync_once()
        finally:
            to_c1.stop()
            as_c2.stop()
    finally:
        impostor.stop()
