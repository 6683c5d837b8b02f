"""The key ceremony across organisations (docs/consortium-setup.md), admin
certificates, key-file modes and the configuration key.

Each test fails on the main before this change: there `markex keys generate`,
`consortium add-member/sign`, `ca init/sign` and `node configure` did not exist,
the node's TLS certificate was the admin credential, TLS and admin keys were
read without the mode check, and consortium.json was signed by (and pinned to)
the institute node's own signing key.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from keys import ConfigError, ConfigSignatureError, KeyFileError
from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium, load_consortium
from keys.sealing import MembersKey
from keys.signing import SigningKey
from keys.tls import (
    ADMIN,
    MEMBER,
    admin_from_cert,
    issue_from_csr,
    make_csr,
    participant_from_cert,
    verify_issued_by,
)
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import ceremony, client
from node.cli import main
from node.localnet import free_port_block
from node.server import Node

pytestmark = pytest.mark.timeout(120)

S = grpc.StatusCode
ORGS = (("institute", "institute"), ("carrier-1", "carrier"), ("internet-1", "internet"))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    capsys.readouterr()
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def cli_fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    code = main(list(argv))
    _, err = capsys.readouterr()
    assert code != 0
    return err


# ------------------------------------------------------------------ the whole ceremony


def test_ceremony_across_three_organisations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each organisation makes its keys in its own folder; only member.json,
    CSRs, certificates and the signed consortium.json travel. The nodes start
    from those folders and exchange a record."""
    offline = tmp_path / "institute-offline"     # the configuration key and the CA: no node here
    offline.mkdir()
    base = free_port_block(6)
    orgs = {pid: tmp_path / f"org-{pid}" for pid, _ in ORGS}

    key = cli(capsys, "consortium", "keygen", "--out", str(offline / "config.key"))
    pin = key["public_key"]
    cli(capsys, "ca", "init", "--ca", str(offline / "ca"), "--name", "cross CA")
    for k, (pid, role) in enumerate(ORGS):
        out = cli(capsys, "keys", "generate", "--id", pid, "--role", role, "--out",
                  str(orgs[pid]), "--host", "127.0.0.1", "--member-port", str(base + 2 * k),
                  "--public-port", str(base + 2 * k + 1))
        assert out["id"] == pid
        for f in ("signing.key", "tls.key", "admin.key"):
            assert (os.stat(orgs[pid] / pid / f).st_mode & 0o777) == 0o600

    draft = offline / "draft"
    cli(capsys, "consortium", "add-member", str(draft), "--member",
        str(orgs["institute"] / "institute" / "member.json"), "--name", "cross")
    cli(capsys, "consortium", "add-member", str(draft), "--member",
        str(orgs["carrier-1"] / "carrier-1" / "member.json"), "--ranges", "+86138,+86139")
    cli(capsys, "consortium", "add-member", str(draft), "--member",
        str(orgs["internet-1"] / "internet-1" / "member.json"))
    assert not (draft / "consortium.json.sig").exists()  # a draft is unsigned
    signed = cli(capsys, "consortium", "sign", str(draft), "--key", str(offline / "config.key"))
    assert signed["config_key"] == pin and signed["participants"] == [p for p, _ in ORGS]
    # The first signature made the members' key, offline beside the configuration key.
    members = offline / "members.key"
    assert signed["members_key"] == str(members)
    assert (os.stat(members).st_mode & 0o777) == 0o600
    assert MembersKey.load(members).id.hex() == signed["members_key_id"]
    assert not (draft / "members.key").exists()  # the published folder never holds it

    for pid, _ in ORGS:
        pdir = orgs[pid] / pid
        for kind in ("tls", "admin"):
            out = cli(capsys, "ca", "sign", "--ca", str(offline / "ca"), "--csr",
                      str(pdir / f"{kind}.csr"), "--out", str(pdir / f"{kind}.pem"),
                      "--id", pid, "--consortium", str(draft), "--institute-key", pin)
            assert out == {"kind": MEMBER if kind == "tls" else ADMIN, "participant": pid,
                           "cert": str(pdir / f"{kind}.pem")}
        # What travels back: the signed configuration and the CA certificate.
        for f in ("consortium.json", "consortium.json.sig"):
            shutil.copy(draft / f, orgs[pid] / f)
        (orgs[pid] / "ca").mkdir()
        shutil.copy(offline / "ca" / "ca.pem", orgs[pid] / "ca" / "ca.pem")
        shutil.copy(members, orgs[pid] / pid / "members.key")  # privately, to members only
        cli(capsys, "node", "configure", "--consortium", str(orgs[pid]), "--as", pid,
            "--pin", pin, "--new-feed")

    # Nobody holds another's private key; no organisation holds the CA or configuration key.
    for pid, _ in ORGS:
        keys_here = {p.relative_to(orgs[pid]).as_posix() for p in orgs[pid].rglob("*.key")}
        assert keys_here == {f"{pid}/signing.key", f"{pid}/tls.key", f"{pid}/admin.key",
                             f"{pid}/members.key"}

    nodes = [Node(NodeConfig.for_participant(orgs[pid], pid), sync_interval=0.2).start()
             for pid, _ in ORGS]
    try:
        cons = nodes[0].consortium
        assert all(n.consortium.members_key is not None for n in nodes)
        assert cons.members_key is not None and cons.members_key.id.hex() == signed[
            "members_key_id"]
        ep = cons.participant("carrier-1").member_endpoint  # type: ignore[union-attr]
        admin = client.admin_stub(orgs["carrier-1"], "carrier-1", ep)
        issued = admin.IssueMark(rpb.Mark(number="+8613800005555", category="fraud",
                                          score=70, reports=1), timeout=30)
        deadline = time.monotonic() + 30
        while any(n.core.ledger.record_by_id(issued.id) is None for n in nodes):
            assert time.monotonic() < deadline, "the record did not reach every node"
            time.sleep(0.1)
        # The institute's node can read it on carrier-1's Audit service, as a member.
        aud = client.audit_stub(orgs["institute"], "institute", ep)
        assert aud.GetRecord(pb.GetRecordRequest(id=issued.id), timeout=10).envelope
    finally:
        # Together: each node's stop waits on its peer links to the others.
        with ThreadPoolExecutor(len(nodes)) as ex:
            list(ex.map(Node.stop, nodes))


# ------------------------------------------------------------------ admin certificates


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Node]]:
    d = tmp_path_factory.mktemp("admin") / "c"
    init_consortium(d, carriers=2, internet=0, base_port=free_port_block(6),
                    now=datetime.now(UTC))
    node = Node(NodeConfig.for_participant(d, "carrier-1")).start()
    try:
        yield d, node
    finally:
        node.stop()


def _mark_with(ch: grpc.Channel) -> pb.Issued:
    with ch:
        return rpc.AdminStub(ch).IssueMark(
            rpb.Mark(number="+8613800006666", category="fraud", score=60, reports=1), timeout=10
        )


def _ep(d: Path) -> str:
    return Consortium.load(d).participant("carrier-1").member_endpoint  # type: ignore[union-attr]


def test_admin_takes_the_own_admin_certificate(running: tuple[Path, Node]) -> None:
    d, node = running
    r = _mark_with(client.admin_channel(d, "carrier-1", _ep(d)))
    assert r.issuer == "carrier-1" and node.core.ledger.record_by_id(r.id) is not None


def test_admin_refuses_the_nodes_tls_certificate(running: tuple[Path, Node]) -> None:
    d, node = running
    before = node.core.ledger.size
    with pytest.raises(grpc.RpcError) as ei:
        _mark_with(client.member_channel(d, "carrier-1", _ep(d)))
    assert ei.value.code() == S.PERMISSION_DENIED and "admin certificate" in ei.value.details()
    assert node.core.ledger.size == before


def test_admin_refuses_another_participants_admin_certificate(running: tuple[Path, Node]) -> None:
    d, node = running
    before = node.core.ledger.size
    with pytest.raises(grpc.RpcError) as ei:
        _mark_with(client.admin_channel(d, "carrier-2", _ep(d)))
    assert ei.value.code() == S.PERMISSION_DENIED
    assert node.core.ledger.size == before


def test_admin_certificate_is_no_member_certificate(running: tuple[Path, Node]) -> None:
    d, _ = running
    with client.admin_channel(d, "carrier-2", _ep(d)) as ch, pytest.raises(grpc.RpcError) as ei:
        rpc.ExchangeStub(ch).Heads(pb.FeedHeadsRequest(), timeout=10)
    assert ei.value.code() == S.PERMISSION_DENIED
    cert = (d / "carrier-2" / "admin.pem").read_bytes()
    assert admin_from_cert(cert) == "carrier-2"
    with pytest.raises(ConfigError):
        participant_from_cert(cert)
    with pytest.raises(ConfigError):
        admin_from_cert((d / "carrier-2" / "tls.pem").read_bytes())


# ------------------------------------------------------------------ key-file modes


@pytest.mark.parametrize("name", ["tls.key", "admin.key"])
def test_client_refuses_a_key_file_readable_by_others(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, now=datetime.now(UTC))
    os.chmod(d / "carrier-1" / name, 0o644)
    opener = client.member_channel if name == "tls.key" else client.admin_channel
    with pytest.raises(KeyFileError, match="readable by others"):
        opener(d, "carrier-1", "127.0.0.1:1")
    argv = (["mark", "--as", "carrier-1", "13800001234", "fraud"] if name == "admin.key" else
            ["log", "entries", "--as", "carrier-1", "--node", "carrier-1", "--start", "0",
             "--end", "1"])
    err = cli_fails(capsys, *argv, "--consortium", str(d))
    assert "readable by others" in err and "chmod 600" in err


@pytest.mark.parametrize("name", ["signing.key", "tls.key"])
def test_node_refuses_a_key_file_readable_by_others(tmp_path: Path, name: str) -> None:
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, now=datetime.now(UTC))
    os.chmod(d / "carrier-1" / name, 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        Node(NodeConfig.for_participant(d, "carrier-1"))


# ------------------------------------------------------------------ the configuration key


def test_node_refuses_a_consortium_signed_by_the_institute_node_key(tmp_path: Path) -> None:
    d = tmp_path / "c"
    conf = init_consortium(d, carriers=1, internet=0, now=datetime.now(UTC))
    institute = SigningKey.load(d / "institute" / "signing.key")
    replace(conf, config_key=b"", raw=b"").write(d, institute)
    cfg = NodeConfig.for_participant(d, "carrier-1")
    with pytest.raises(ConfigSignatureError):
        load_consortium(cfg)
    with pytest.raises(ConfigSignatureError):
        Node(cfg)
    # Even a node that pins the institute node's key (main's rule) refuses it now.
    with pytest.raises(ConfigError, match="institute's signing key"):
        Node(replace(cfg, institute_key=institute.public_bytes))
    # And a file that names no configuration key at all (main's format) is refused.
    raw = (d / "consortium.json").read_bytes()
    obj = json.loads(raw)
    del obj["config_key"]
    (d / "consortium.json").write_bytes(json.dumps(obj).encode())
    (d / "consortium.json.sig").write_text(base64.b64encode(
        Consortium.sign_bytes((d / "consortium.json").read_bytes(), institute)).decode())
    with pytest.raises(ConfigSignatureError, match="names no configuration key|other than"):
        Consortium.load(d)
    with pytest.raises(ConfigSignatureError):
        Node(replace(cfg, institute_key=institute.public_bytes))


def test_sign_refuses_a_participants_key(tmp_path: Path) -> None:
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, now=datetime.now(UTC))
    before = (d / "consortium.json.sig").read_bytes()
    with pytest.raises(ConfigError, match="institute's signing key"):
        ceremony.sign_consortium(d, SigningKey.load(d / "institute" / "signing.key"))
    assert (d / "consortium.json.sig").read_bytes() == before


def test_sign_refuses_another_configuration_key(tmp_path: Path) -> None:
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, now=datetime.now(UTC))
    with pytest.raises(ConfigError, match="names another configuration key"):
        ceremony.sign_consortium(d, SigningKey.generate())


# ------------------------------------------------------------------ requests and the CA


def _member(tmp_path: Path, pid: str, role: str, port: int = 7400) -> Path:
    ceremony.generate_member(tmp_path / "orgs", pid, role, ["127.0.0.1"],
                             *(("", "") if role in ("auditor", "callcenter") else
                               (f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}")))
    return tmp_path / "orgs" / pid


def test_add_member_refuses_duplicates_and_bad_input(tmp_path: Path) -> None:
    draft = tmp_path / "draft"
    inst = _member(tmp_path, "institute", "institute")
    carrier = _member(tmp_path, "carrier-1", "carrier", 7402)
    with pytest.raises(ConfigError, match="starts with its institute"):
        ceremony.add_member(draft, ceremony.read_member(carrier / "member.json"), name="x")
    ceremony.add_member(draft, ceremony.read_member(inst / "member.json"), name="x")
    ceremony.add_member(draft, ceremony.read_member(carrier / "member.json"),
                        ranges=("+86138",))
    raw = (draft / "consortium.json").read_bytes()
    with pytest.raises(ConfigError, match="already a participant"):
        ceremony.add_member(draft, ceremony.read_member(carrier / "member.json"))
    same_key = json.loads((carrier / "member.json").read_text()) | {"id": "carrier-9"}
    (tmp_path / "dup.json").write_text(json.dumps(same_key))
    with pytest.raises(ConfigError, match="already another participant's"):
        ceremony.add_member(draft, ceremony.read_member(tmp_path / "dup.json"))
    bad_role = same_key | {"id": "x-1", "role": "regulator-of-everything"}
    (tmp_path / "bad.json").write_text(json.dumps(bad_role))
    with pytest.raises(ConfigError, match="role must be one of"):
        ceremony.read_member(tmp_path / "bad.json")
    second = _member(tmp_path, "institute-2", "institute", 7404)
    with pytest.raises(ConfigError, match="exactly one participant must be the institute"):
        ceremony.add_member(draft, ceremony.read_member(second / "member.json"))
    assert (draft / "consortium.json").read_bytes() == raw  # refused: nothing changed


def test_signing_makes_the_members_key_once_and_keeps_the_industries(tmp_path: Path) -> None:
    """The first signature of a draft makes the members' key (in the file the
    institute keeps offline) and names its id; later signatures keep it; the
    draft's industries, edited by hand, survive add-member and signing."""
    draft = tmp_path / "draft"
    for pid, role, port in (("institute", "institute", 7400), ("carrier-1", "carrier", 7402)):
        member = ceremony.read_member(_member(tmp_path, pid, role, port) / "member.json")
        ceremony.add_member(draft, member, name="x" if role == "institute" else None)
    obj = json.loads((draft / "consortium.json").read_bytes())
    obj["industries"] = [{"id": "pets", "label": "宠物用品"}]
    obj["policy"].update(marketing_categories={"marketing": ["pets"]}, cosign_quorum=1,
                         restore_quorum=1)
    (draft / "consortium.json").write_text(json.dumps(obj, ensure_ascii=False))
    cc = ceremony.read_member(_member(tmp_path, "callcenter-1", "callcenter") / "member.json")
    assert (cc.weight, cc.member_endpoint) == (0, "")
    ceremony.add_member(draft, cc)
    config_key, members = SigningKey.generate(), tmp_path / "offline" / "members.key"
    members.parent.mkdir()
    conf = ceremony.sign_consortium(draft, config_key, members)
    assert (os.stat(members).st_mode & 0o777) == 0o600
    made = MembersKey.load(members)
    assert conf.members_key_id == made.id
    assert [i.id for i in conf.industries] == ["pets"]
    assert conf.policy.marketing_categories == {"marketing": ("pets",)}
    # A later member and signature keep the key and the industries.
    more = ceremony.read_member(_member(tmp_path, "internet-1", "internet", 7404) / "member.json")
    ceremony.add_member(draft, more)
    again = ceremony.sign_consortium(draft, config_key, members)
    assert again.members_key_id == made.id and MembersKey.load(members) == made
    assert [i.id for i in again.industries] == ["pets"]
    assert ceremony.sign_consortium(draft, config_key, tmp_path / "gone.key").members_key_id == (
        made.id)  # kept elsewhere since: the id stands, no new key is made
    assert not (tmp_path / "gone.key").exists()
    MembersKey.generate().write(tmp_path / "other.key")
    with pytest.raises(ConfigError, match="names " + made.id.hex()):
        ceremony.sign_consortium(draft, config_key, tmp_path / "other.key")


def test_configure_keeps_the_members_key_path_and_refuses_another_key(tmp_path: Path) -> None:
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, now=datetime.now(UTC))
    pin = Consortium.load(d).config_key
    cfg = NodeConfig.for_participant(d, "carrier-1")
    elsewhere = tmp_path / "secret" / "members.key"
    elsewhere.parent.mkdir()
    shutil.move(d / "carrier-1" / "members.key", elsewhere)
    replace(cfg, members_key=elsewhere).write(d / "carrier-1" / "node.toml")
    got = ceremony.configure_node(d, "carrier-1", pin, datetime.now(UTC))
    assert got.members_key == elsewhere
    assert load_consortium(got).members_key == MembersKey.load(elsewhere)
    MembersKey.generate().write(elsewhere)
    with pytest.raises(ConfigError, match=f"{elsewhere}: the members' key"):
        ceremony.configure_node(d, "carrier-1", pin, datetime.now(UTC))


def test_auditor_member_gets_no_admin_credential(tmp_path: Path) -> None:
    aud = _member(tmp_path, "auditor-1", "auditor")
    assert sorted(p.name for p in aud.iterdir()) == [
        "member.json", "signing.key", "tls.csr", "tls.key"]
    p = ceremony.read_member(aud / "member.json")
    assert (p.role, p.weight, p.member_endpoint) == ("auditor", 0, "")


def test_ca_sign_checks_the_request(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = tmp_path / "ca"
    ceremony.ca_init(ca, "t CA", now)
    assert (os.stat(ca / "ca.key").st_mode & 0o777) == 0o600
    _, csr = make_csr("carrier-1", MEMBER, ["node1.example"])
    req, cert = ceremony.ca_sign(ca, csr, now, participant_id="carrier-1")
    assert (req.kind, req.participant) == (MEMBER, "carrier-1")
    verify_issued_by(cert, (ca / "ca.pem").read_bytes(), now)
    assert participant_from_cert(cert) == "carrier-1"
    with pytest.raises(ConfigError, match="not the expected"):
        ceremony.ca_sign(ca, csr, now, participant_id="carrier-2")
    # A request whose signature does not verify (its body changed after signing).
    der = base64.b64decode(b"".join(csr.splitlines()[1:-1]))
    i = der.index(b"carrier-1")
    forged_der = der[:i] + b"carrier-2" + der[i + 9:]
    forged = (b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(forged_der)
              + b"-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(ConfigError, match="not signed by the key it holds"):
        ceremony.ca_sign(ca, forged, now)
    with pytest.raises(ConfigError, match="certificate request"):
        ceremony.ca_sign(ca, b"not a request", now)


def test_ca_sign_checks_the_participant_against_the_consortium(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    d = tmp_path / "c"
    cons = init_consortium(d, carriers=1, internet=0, now=now)
    _, stranger = make_csr("mallory", MEMBER)
    with pytest.raises(ConfigError, match="not a participant"):
        ceremony.ca_sign(d / "ca", stranger, now, consortium=cons)
    _, auditor_admin = make_csr("auditor-1", ADMIN)
    with pytest.raises(ConfigError, match="no admin certificate"):
        ceremony.ca_sign(d / "ca", auditor_admin, now, consortium=cons)
    _, admin = make_csr("carrier-1", ADMIN)
    req, cert = ceremony.ca_sign(d / "ca", admin, now, consortium=cons)
    assert req.kind == ADMIN and admin_from_cert(cert) == "carrier-1"


def test_issue_from_csr_keeps_only_checked_names(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, now=now)
    ca_key, ca_pem = (d / "ca" / "ca.key").read_bytes(), (d / "ca" / "ca.pem").read_bytes()
    with pytest.raises(ConfigError, match="serves no host"):
        make_csr("carrier-1", ADMIN, ["evil.example"])
    _, csr = make_csr("carrier-1", MEMBER, ["10.0.0.7"])
    req, _ = issue_from_csr(ca_key, ca_pem, csr, now)
    assert set(req.hosts) == {"localhost", "127.0.0.1", "10.0.0.7"}
    # A request may not ask for another participant's reserved name, nor a wildcard.
    for host in ("carrier-2.participant.markex.invalid", "*.example.com"):
        csr = _csr_with_host("carrier-1", host)
        with pytest.raises(ConfigError, match="reserved name|wildcard"):
            issue_from_csr(ca_key, ca_pem, csr, now)


def _csr_with_host(pid: str, host: str) -> bytes:
    """A request built by hand (make_csr refuses nothing the CA must refuse itself)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, pid)]))
        .add_extension(x509.SubjectAlternativeName([
            x509.UniformResourceIdentifier(f"markex://participant/{pid}"), x509.DNSName(host),
        ]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_configure_refuses_a_wrong_pin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, now=datetime.now(UTC))
    wrong = base64.b64encode(SigningKey.generate().public_bytes).decode()
    err = cli_fails(capsys, "node", "configure", "--consortium", str(d), "--as", "carrier-1",
                    "--pin", wrong)
    assert err.startswith("markex: not verified: ")
    # The right pin, from the file init writes, reproduces the node.toml init wrote.
    want = (d / "carrier-1" / "node.toml").read_text()
    cli(capsys, "node", "configure", "--consortium", str(d), "--as", "carrier-1",
        "--pin", str(d / "config" / "config.pub"), "--new-feed")
    assert (d / "carrier-1" / "node.toml").read_text() == want


def test_keys_generate_refuses_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "org"
    with pytest.raises(ConfigError, match="neither an IP address nor a DNS name"):
        ceremony.generate_member(out, "carrier-1", "carrier", ["bad host!"],
                                 "127.0.0.1:7400", "127.0.0.1:7401")
    with pytest.raises(ConfigError, match="member and public endpoints"):
        ceremony.generate_member(out, "carrier-1", "carrier", [])
    with pytest.raises(ConfigError, match="no endpoints"):
        ceremony.generate_member(out, "auditor-1", "auditor", [], "127.0.0.1:7400",
                                 "127.0.0.1:7401")
    with pytest.raises(ConfigError, match="role must be one of"):
        ceremony.generate_member(out, "x-1", "owner", [], "127.0.0.1:7400", "127.0.0.1:7401")
    assert not out.exists()
    ceremony.generate_member(out, "carrier-1", "carrier", [], "127.0.0.1:7400", "127.0.0.1:7401")
    before = {p.name: p.read_bytes() for p in (out / "carrier-1").iterdir()}
    with pytest.raises(ConfigError, match="never overwritten"):
        ceremony.generate_member(out, "carrier-1", "carrier", [], "127.0.0.1:7400",
                                 "127.0.0.1:7401")
    assert {p.name: p.read_bytes() for p in (out / "carrier-1").iterdir()} == before
