"""keys/: a local consortium on disk, its signature and pin, the CA and node certificates."""

from __future__ import annotations

import ast
import base64
import json
import os
import socket
import ssl
import stat
import sys
import threading
import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import keys
from keys import ConfigError, ConfigSignatureError, KeyFileError
from keys.consortium import (
    DEFAULT_INDUSTRIES,
    DEFAULT_MARKETING_CATEGORIES,
    Consortium,
    Industry,
    Participant,
    Policy,
    check_participant,
)
from keys.layout import (
    NodeConfig,
    init_consortium,
    load_consortium,
    number_ranges,
)
from keys.sealing import MembersKey
from keys.signing import SigningKey
from keys.tls import (
    PARTICIPANT_URI_PREFIX,
    make_ca,
    make_node_cert,
    participant_from_cert,
    verify_issued_by,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NODES = ["institute", "carrier-1", "carrier-2", "carrier-3", "internet-1", "internet-2"]
# init adds an auditor and a call centre: a certificate and keys each, no node
IDS = [*NODES, "auditor-1", "callcenter-1"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Consortium]:
    """One default consortium shared by the read-only tests (key generation is cheap,
    but there is no need to repeat it)."""
    d = tmp_path_factory.mktemp("consortium") / "local"
    return d, init_consortium(d, now=NOW)


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """A consortium of one carrier, for tests that damage files."""
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, now=NOW)
    return d


# ---- layout ------------------------------------------------------------------


def test_layout_files(made: tuple[Path, Consortium]) -> None:
    d, conf = made
    assert [p.id for p in conf.participants] == IDS
    for name in ("consortium.json", "consortium.json.sig", "ca/ca.pem", "ca/ca.key"):
        assert (d / name).is_file(), name
    assert (d / "config" / "config.key").is_file()
    pub = base64.b64decode((d / "config" / "config.pub").read_text())
    assert pub == conf.config_key == SigningKey.load(d / "config" / "config.key").public_bytes
    for pid in NODES:
        for name in ("signing.key", "tls.key", "tls.pem", "admin.key", "admin.pem", "node.toml"):
            assert (d / pid / name).is_file(), (pid, name)
        assert (d / pid / "data").is_dir()
        assert not any((d / pid / "data").iterdir())
    assert sorted(x.name for x in (d / "auditor-1").iterdir()) == [
        "config.pub", "members.key", "signing.key", "tls.key", "tls.pem"]
    # The call centre seals nothing (it asks the screen in clear): no members' key.
    assert sorted(x.name for x in (d / "callcenter-1").iterdir()) == [
        "config.pub", "signing.key", "tls.key", "tls.pem"]


def test_every_key_file_is_0600(made: tuple[Path, Consortium]) -> None:
    d, _ = made
    key_files = [d / "ca" / "ca.key", d / "config" / "config.key"]
    key_files += [d / pid / name for pid in IDS for name in ("signing.key", "tls.key")]
    key_files += [d / pid / "admin.key" for pid in NODES]
    key_files += [d / pid / "members.key" for pid in IDS if pid != "callcenter-1"]
    for path in key_files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    SigningKey.load(d / "institute" / "signing.key")   # the loader accepts what init wrote


def test_participants_roles_weights_ports(made: tuple[Path, Consortium]) -> None:
    _, conf = made
    expect = {
        "institute": ("institute", 5), "carrier-1": ("carrier", 2), "carrier-2": ("carrier", 2),
        "carrier-3": ("carrier", 2), "internet-1": ("internet", 1), "internet-2": ("internet", 1),
        "auditor-1": ("auditor", 0), "callcenter-1": ("callcenter", 0),
    }
    nodes = [p for p in conf.participants if p.role not in ("auditor", "callcenter")]
    for k, p in enumerate(nodes):
        assert (p.role, p.weight) == expect[p.id]
        assert p.member_endpoint == f"127.0.0.1:{7400 + 2 * k}"
        assert p.public_endpoint == f"127.0.0.1:{7400 + 2 * k + 1}"
    for pid, role in (("auditor-1", "auditor"), ("callcenter-1", "callcenter")):
        p = conf.by_id[pid]
        assert (p.role, p.weight, p.member_endpoint, p.public_endpoint) == (role, 0, "", "")
        assert p not in conf.witnesses  # its key never makes a checkpoint trusted
    ports = [p.member_endpoint for p in nodes]
    ports += [p.public_endpoint for p in nodes]
    assert len(set(ports)) == len(ports)


def test_signing_keys_match_consortium(made: tuple[Path, Consortium]) -> None:
    d, conf = made
    for p in conf.participants:
        key = SigningKey.load(d / p.id / "signing.key")
        assert key.public_bytes == p.public_key
        assert p.verify(key.sign(b"m"), b"m")


@pytest.mark.parametrize(
    ("number", "carrier"),
    [
        ("+8613812345678", "carrier-1"),
        ("+8613012345678", "carrier-2"),
        ("+8618912345678", "carrier-3"),
        ("+861012345678", "carrier-1"),
        ("+862112345678", "carrier-2"),
        ("+864001234567", "carrier-3"),
        ("+8695555", "carrier-1"),
        ("+12025550123", None),
        ("+8675512345678", None),    # Shenzhen fixed lines: nobody's range in the demo
    ],
)
def test_carrier_for(made: tuple[Path, Consortium], number: str, carrier: str | None) -> None:
    _, conf = made
    assert conf.carrier_for(number) == carrier
    holders = [c for c, pres in conf.number_ranges.items()
               if any(number.startswith(x) for x in pres)]
    assert len(holders) == (0 if carrier is None else 1)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_number_ranges_partition(n: int) -> None:
    ids = [f"carrier-{i}" for i in range(1, n + 1)]
    ranges = number_ranges(ids)
    assert list(ranges) == ids
    flat = [x for pres in ranges.values() for x in pres]
    assert len(flat) == len(set(flat)) == 34 + 4
    for number in ("+8613812345678", "+861012345678", "+864001234567", "+8695555"):
        assert sum(any(number.startswith(x) for x in pres) for pres in ranges.values()) == 1


def test_three_carriers_get_the_operators(made: tuple[Path, Consortium]) -> None:
    _, conf = made
    r = conf.number_ranges
    assert {"+86134", "+86139", "+86150", "+86188", "+86198"} <= set(r["carrier-1"])
    assert {"+86130", "+86132", "+86166", "+86186"} <= set(r["carrier-2"])
    assert {"+86133", "+86153", "+86177", "+86199"} <= set(r["carrier-3"])


def test_other_sizes_and_host(tmp_path: Path) -> None:
    conf = init_consortium(tmp_path / "x", carriers=2, internet=0, base_port=9000,
                           hosts=["localhost"], now=NOW)
    assert [p.id for p in conf.participants] == ["institute", "carrier-1", "carrier-2",
                                                  "auditor-1", "callcenter-1"]
    assert conf.participants[2].public_endpoint == "localhost:9005"
    cfg = NodeConfig.for_participant(tmp_path / "x", "carrier-2")
    # A host name listens on loopback unless every interface is asked for (docs/config.md).
    assert cfg.member_listen == "127.0.0.1:9004"
    assert conf.carrier_for("+8613812345678") is not None


def test_init_refuses_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "stray.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        init_consortium(tmp_path, now=NOW)
    assert [p.name for p in tmp_path.iterdir()] == ["stray.txt"]


def test_init_into_existing_empty_dir(tmp_path: Path) -> None:
    conf = init_consortium(tmp_path, carriers=1, internet=1, now=NOW)
    assert len(conf.participants) == 5  # with the auditor and the call centre


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"carriers": 0}, "at least one carrier"),
        ({"internet": -1}, "internet"),
        ({"base_port": 0}, "base port"),
        ({"base_port": 65530}, "past 65535"),
        ({"hosts": [""]}, "must not be empty"),
        ({"hosts": ["a host"]}, "neither an IP address nor a DNS name"),
        ({"hosts": ["carrier-1.participant.markex.invalid"]}, "participant name"),
        ({"hosts": "node1.example"}, "list of names"),
        ({"now": datetime(2025, 3, 1)}, "timezone"),
    ],
)
def test_init_bad_arguments_write_nothing(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"now": NOW, **kwargs}
    with pytest.raises(ConfigError, match=match):
        init_consortium(tmp_path / "c", **args)
    assert not (tmp_path / "c").exists()


# ---- consortium.json signature and pin ---------------------------------------


def _pin(d: Path) -> bytes:
    """What node.toml pins: the configuration key, which no participant holds."""
    return SigningKey.load(d / "config" / "config.key").public_bytes


def test_consortium_loads_and_verifies(made: tuple[Path, Consortium]) -> None:
    d, conf = made
    again = Consortium.load(d, _pin(d))
    assert again.raw == (d / "consortium.json").read_bytes()
    assert again.to_json_bytes() == again.raw
    assert again.participants == conf.participants
    cfg = NodeConfig.for_participant(d, "carrier-2")
    assert load_consortium(cfg).by_id.keys() == set(IDS)


def _flip_byte(raw: bytes) -> bytes:
    i = raw.index(b'"markex-local"') + 3
    return raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:]


def _add_participant(raw: bytes) -> bytes:
    obj = json.loads(raw)
    obj["participants"].append({
        "id": "intruder", "role": "carrier", "weight": 9,
        "public_key": base64.b64encode(SigningKey.generate().public_bytes).decode(),
    })
    return json.dumps(obj, indent=2, ensure_ascii=False).encode() + b"\n"


def _swap_key(raw: bytes) -> bytes:
    obj = json.loads(raw)
    obj["participants"][1]["public_key"] = base64.b64encode(
        SigningKey.generate().public_bytes).decode()
    return json.dumps(obj, indent=2, ensure_ascii=False).encode() + b"\n"


def _break_json(raw: bytes) -> bytes:
    return raw[:-5]


def _trailing_space(raw: bytes) -> bytes:
    return raw + b" "   # same JSON, different bytes: still refused


@pytest.mark.parametrize(
    "tamper", [_flip_byte, _add_participant, _swap_key, _break_json, _trailing_space]
)
def test_tampered_consortium_refused(fresh: Path, tamper) -> None:
    path = fresh / "consortium.json"
    path.write_bytes(tamper(path.read_bytes()))
    with pytest.raises(ConfigSignatureError):
        Consortium.load(fresh, _pin(fresh))
    with pytest.raises(ConfigSignatureError):
        load_consortium(NodeConfig.for_participant(fresh, "carrier-1"))


def test_consortium_resigned_by_another_key_refused(fresh: Path) -> None:
    """Someone rewrites consortium.json with their own institute key and signs it: the
    file verifies on its own, but not against the pin."""
    conf = Consortium.load(fresh, _pin(fresh))
    rogue, rogue_config = SigningKey.generate(), SigningKey.generate()
    parts = tuple(
        replace(p, public_key=rogue.public_bytes) if p.role == "institute" else p
        for p in conf.participants
    )
    Consortium(conf.name, parts, conf.number_ranges, policy=conf.policy).write(
        fresh, rogue_config)
    Consortium.load(fresh)                     # self-consistent without a pin
    with pytest.raises(ConfigSignatureError):
        Consortium.load(fresh, _pin(fresh))


def test_wrong_pin_refused(made: tuple[Path, Consortium]) -> None:
    d, _ = made
    with pytest.raises(ConfigSignatureError):
        Consortium.load(d, SigningKey.generate().public_bytes)
    with pytest.raises(ConfigSignatureError):
        Consortium.load(d, b"\x00" * 31)


@pytest.mark.parametrize(
    "sig",
    [
        None,                                          # missing
        b"not base64 at all!\n",
        b"\xff\xfe\x00garbage",
        base64.b64encode(b"\x00" * 64) + b"\n",        # right size, wrong signature
        base64.b64encode(b"\x01" * 10) + b"\n",        # wrong size
        b"",
    ],
)
def test_bad_signature_file_refused(fresh: Path, sig: bytes | None) -> None:
    path = fresh / "consortium.json.sig"
    if sig is None:
        path.unlink()
        with pytest.raises(ConfigError, match="consortium.json.sig|cannot read"):
            Consortium.load(fresh, _pin(fresh))
        return
    path.write_bytes(sig)
    with pytest.raises(ConfigSignatureError):
        Consortium.load(fresh, _pin(fresh))


def test_signature_of_another_config_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    init_consortium(a, carriers=1, internet=0, now=NOW)
    init_consortium(b, carriers=1, internet=0, now=NOW)
    (a / "consortium.json.sig").write_bytes((b / "consortium.json.sig").read_bytes())
    with pytest.raises(ConfigSignatureError):
        Consortium.load(a, _pin(a))


def test_prefix_listed_twice_refused(made: tuple[Path, Consortium]) -> None:
    d, _ = made
    obj = json.loads((d / "consortium.json").read_bytes())
    obj["number_ranges"]["carrier-2"].append("+86138")
    with pytest.raises(ConfigError, match=r"\+86138"):
        Consortium.from_json_bytes(json.dumps(obj).encode())


# ---- certificates ------------------------------------------------------------


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_ca_certificate(made: tuple[Path, Consortium]) -> None:
    d, _ = made
    ca = _cert((d / "ca" / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    years = (ca.not_valid_after_utc - ca.not_valid_before_utc).days / 365
    assert 9.9 < years < 10.1
    ca.verify_directly_issued_by(ca)


@pytest.mark.parametrize("pid", IDS)
def test_node_certificates_chain_and_name(made: tuple[Path, Consortium], pid: str) -> None:
    d, _ = made
    ca_pem = (d / "ca" / "ca.pem").read_bytes()
    pem = (d / pid / "tls.pem").read_bytes()
    cert = _cert(pem)
    # The CA's public key verifies the node certificate's signature.
    ca_pub = _cert(ca_pem).public_key()
    assert isinstance(ca_pub, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    ca_pub.verify(cert.signature, cert.tbs_certificate_bytes,
                  ec.ECDSA(cert.signature_hash_algorithm))
    verify_issued_by(pem, ca_pem, now=NOW)

    assert participant_from_cert(pem) == pid
    assert participant_from_cert(cert.public_bytes(serialization.Encoding.DER)) == pid
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert PARTICIPANT_URI_PREFIX + pid in san.get_values_for_type(x509.UniformResourceIdentifier)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
    assert 1.9 < years < 2.1


def test_node_key_matches_certificate(made: tuple[Path, Consortium]) -> None:
    d, _ = made
    key = serialization.load_pem_private_key((d / "carrier-1" / "tls.key").read_bytes(), None)
    cert = _cert((d / "carrier-1" / "tls.pem").read_bytes())
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def test_cert_from_unrelated_ca_detected(made: tuple[Path, Consortium]) -> None:
    d, _ = made
    ca_pem = (d / "ca" / "ca.pem").read_bytes()
    other_key, other_ca = make_ca("markex-local CA", NOW)   # same name, different key
    _, forged = make_node_cert(other_key, other_ca, "carrier-1", [], NOW)
    assert participant_from_cert(forged) == "carrier-1"
    with pytest.raises(ConfigError, match="not signed by this CA"):
        verify_issued_by(forged, ca_pem)
    _, named_other = make_ca("another CA", NOW)
    with pytest.raises(ConfigError, match="not issued by this CA"):
        verify_issued_by(forged, named_other)


def test_node_cert_is_not_a_ca(made: tuple[Path, Consortium]) -> None:
    d, _ = made
    node_pem = (d / "carrier-1" / "tls.pem").read_bytes()
    with pytest.raises(ConfigError, match="not a CA"):
        verify_issued_by((d / "carrier-2" / "tls.pem").read_bytes(), node_pem)


def test_verify_issued_by_checks_time(made: tuple[Path, Consortium]) -> None:
    d, _ = made
    ca_pem = (d / "ca" / "ca.pem").read_bytes()
    pem = (d / "internet-1" / "tls.pem").read_bytes()
    verify_issued_by(pem, ca_pem, now=NOW + timedelta(days=700))
    with pytest.raises(ConfigError, match="valid from"):
        verify_issued_by(pem, ca_pem, now=NOW + timedelta(days=800))
    with pytest.raises(ConfigError, match="valid from"):
        verify_issued_by(pem, ca_pem, now=NOW - timedelta(days=1))


def test_extra_hosts_and_cn_fallback() -> None:
    ca_key, ca_pem = make_ca("t", NOW)
    _, pem = make_node_cert(ca_key, ca_pem, "internet-9", ["node9.example", "10.0.0.9", "::1"],
                            NOW)
    san = _cert(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "internet-9.participant.markex.invalid", "localhost", "node9.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1", "10.0.0.9", "::1"]
    with pytest.raises(ConfigError, match="neither an IP"):
        make_node_cert(ca_key, ca_pem, "x", ["bad host!"], NOW)
    with pytest.raises(ConfigError, match="participant id"):
        make_node_cert(ca_key, ca_pem, "../etc", [], NOW)
    with pytest.raises(ConfigError, match="CA key does not belong"):
        make_node_cert(make_ca("u", NOW)[0], ca_pem, "x", [], NOW)
    with pytest.raises(KeyFileError):
        make_node_cert(b"junk", ca_pem, "x", [], NOW)
    with pytest.raises(ConfigError, match="timezone"):
        make_ca("t", datetime(2025, 1, 1))


def _handmade_cert(cn: str | None, uris: list[str]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name(attrs)).issuer_name(x509.Name(attrs))
         .public_key(key.public_key()).serial_number(1)
         .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1)))
    if uris:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_participant_from_cert_edge_cases() -> None:
    assert participant_from_cert(_handmade_cert("carrier-7", [])) == "carrier-7"
    assert participant_from_cert(
        _handmade_cert(None, [PARTICIPANT_URI_PREFIX + "carrier-7"])) == "carrier-7"
    with pytest.raises(ConfigError, match="names no participant"):
        participant_from_cert(_handmade_cert(None, ["https://example.com"]))
    with pytest.raises(ConfigError, match="disagrees"):
        participant_from_cert(_handmade_cert("carrier-1", [PARTICIPANT_URI_PREFIX + "carrier-2"]))
    with pytest.raises(ConfigError, match="several"):
        participant_from_cert(_handmade_cert(None, [PARTICIPANT_URI_PREFIX + "a",
                                                    PARTICIPANT_URI_PREFIX + "b"]))
    with pytest.raises(ConfigError, match="X.509"):
        participant_from_cert(b"\x30\x03\x02\x01\x00")
    with pytest.raises(ConfigError, match="X.509"):
        participant_from_cert(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


# ---- node.toml ---------------------------------------------------------------


def test_node_toml_contents(made: tuple[Path, Consortium]) -> None:
    d, conf = made
    obj = tomllib.loads((d / "carrier-2" / "node.toml").read_text())
    assert obj["participant"] == "carrier-2"
    # Paths are relative to the file, so a copied folder opens its own (tests/test_config.py).
    assert obj["consortium"] == ".."
    assert obj["data_dir"] == "data"
    assert obj["ca_cert"] == "../ca/ca.pem"
    assert obj["member_listen"] == "127.0.0.1:7404"
    assert obj["public_listen"] == "127.0.0.1:7405"
    # Fixed, after the 4 x 6 gRPC and tiles ports: a scraper finds it after a restart.
    assert obj["metrics_listen"] == "127.0.0.1:7420"
    # The pin is the configuration key, never the institute node's signing key.
    assert base64.b64decode(obj["institute_key"]) == conf.config_key == _pin(d)
    assert conf.config_key != conf.institute.public_key
    for key in ("consortium", "data_dir", "signing_key", "tls_key", "tls_cert", "ca_cert"):
        assert not Path(obj[key]).is_absolute()
        assert (d / "carrier-2" / obj[key]).exists()


def test_node_config_round_trip(made: tuple[Path, Consortium], tmp_path: Path) -> None:
    d, _ = made
    cfg = NodeConfig.for_participant(d, "internet-1")
    assert cfg.tls_cert == d / "internet-1" / "tls.pem"
    assert cfg.ca_cert == d / "ca" / "ca.pem"
    cfg.write(tmp_path / "node.toml")
    assert NodeConfig.load(tmp_path / "node.toml") == cfg
    odd = replace(cfg, data_dir=tmp_path / 'we"ird\\pa\tth ü')
    odd.write(tmp_path / "odd.toml")
    assert NodeConfig.load(tmp_path / "odd.toml") == odd


def test_node_config_relative_paths(made: tuple[Path, Consortium], tmp_path: Path) -> None:
    d, _ = made
    text = NodeConfig.for_participant(d, "institute").to_toml()
    text = text.replace(str(d / "institute" / "data"), "data")
    (tmp_path / "node.toml").write_text(text)
    assert NodeConfig.load(tmp_path / "node.toml").data_dir == tmp_path.resolve() / "data"


def _edit(text: str, key: str, line: str | None) -> str:
    out = [ln for ln in text.splitlines() if not ln.startswith(f"{key} =")]
    if line is not None:
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(
    ("key", "line", "match"),
    [
        ("tls_cert", None, "missing key 'tls_cert'"),
        ("participant", None, "missing key 'participant'"),
        ("member_listen", "member_listen = 7400", "'member_listen' must be a string"),
        ("data_dir", "data_dir = [\"a\"]", "'data_dir' must be a string"),
        ("public_listen", 'public_listen = "no-port"', "'public_listen' must be HOST:PORT"),
        ("metrics_listen", 'metrics_listen = "h:99999"', "'metrics_listen' must be HOST:PORT"),
        ("institute_key", 'institute_key = "!!"', "'institute_key' is not base64"),
        ("institute_key", 'institute_key = "AAAA"', "institute_key must be a 32-byte"),
        ("participant", 'participant = "a/b"', "bad participant id"),
        ("x", 'colour = "blue"', "unknown key 'colour'"),
        ("x", "participant = = 1", "not valid TOML"),
    ],
)
def test_bad_node_toml(made: tuple[Path, Consortium], tmp_path: Path,
                       key: str, line: str | None, match: str) -> None:
    d, _ = made
    text = (d / "carrier-1" / "node.toml").read_text()
    path = tmp_path / "node.toml"
    path.write_text(_edit(text, key, line))
    with pytest.raises(ConfigError, match=match) as e:
        NodeConfig.load(path)
    assert str(path) in str(e.value)


def test_node_config_for_unknown_participant(made: tuple[Path, Consortium]) -> None:
    d, _ = made
    with pytest.raises(ConfigError, match="'carrier-9'"):
        NodeConfig.for_participant(d, "carrier-9")
    with pytest.raises(ConfigError, match="bad participant id"):
        NodeConfig.for_participant(d, "..")
    with pytest.raises(ConfigError, match="cannot read"):
        NodeConfig.load(d / "nowhere.toml")


def test_node_config_for_someone_else(made: tuple[Path, Consortium], tmp_path: Path) -> None:
    d, _ = made
    (tmp_path / "carrier-1").mkdir()
    (tmp_path / "carrier-1" / "node.toml").write_bytes((d / "carrier-2" / "node.toml").read_bytes())
    with pytest.raises(ConfigError, match="configuration of 'carrier-2'"):
        NodeConfig.for_participant(tmp_path, "carrier-1")


def test_load_consortium_wrong_pin(made: tuple[Path, Consortium]) -> None:
    d, _ = made
    cfg = NodeConfig.for_participant(d, "carrier-1")
    bad = replace(cfg, institute_key=SigningKey.generate().public_bytes)
    with pytest.raises(ConfigSignatureError):
        load_consortium(bad)


# ---- the certificates in a real mutual-TLS handshake ---------------------------


def _context(d: Path, pid: str, side: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(d / pid / "tls.pem", d / pid / "tls.key")
    ctx.load_verify_locations(d / "ca" / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def test_mutual_tls_handshake(made: tuple[Path, Consortium]) -> None:
    """Two nodes complete mutual TLS on 127.0.0.1 and each learns who the other is."""
    d, _ = made
    server_ctx = _context(d, "carrier-1", ssl.PROTOCOL_TLS_SERVER)
    client_ctx = _context(d, "internet-2", ssl.PROTOCOL_TLS_CLIENT)
    a, b = socket.socketpair()
    seen: dict[str, str] = {}

    def serve() -> None:
        with server_ctx.wrap_socket(a, server_side=True) as s:
            der = s.getpeercert(binary_form=True)
            assert der is not None
            seen["server saw"] = participant_from_cert(der)
            s.sendall(b"ok")

    t = threading.Thread(target=serve)
    t.start()
    with client_ctx.wrap_socket(b, server_hostname="127.0.0.1") as c:
        der = c.getpeercert(binary_form=True)
        assert der is not None
        seen["client saw"] = participant_from_cert(der)
        assert c.recv(2) == b"ok"
    t.join(timeout=5)
    assert seen == {"server saw": "internet-2", "client saw": "carrier-1"}


# ---- a failure midway leaves nothing behind; the import rule --------------------


def test_init_failure_midway_leaves_dir_empty(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import keys.layout

    calls = []
    real = keys.layout.make_node_cert

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(keys.layout, "make_node_cert", failing)
    with pytest.raises(ConfigError, match="No space left"):
        init_consortium(tmp_path, now=NOW)
    assert list(tmp_path.iterdir()) == []
    calls.clear()
    with pytest.raises(ConfigError):
        init_consortium(tmp_path / "new", now=NOW)
    assert not (tmp_path / "new").exists()


def test_keys_imports_only_cryptography_and_stdlib() -> None:
    allowed = {"cryptography", "keys", "__future__"} | set(sys.stdlib_module_names)
    for path in Path(keys.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert set(roots) <= allowed, (path.name, roots)


# ---- policy values and the consortium name ------------------------------------

DAY_MS = 86_400_000

# (value, what it is set to, the range the error names): each fails on main,
# which took any non-negative integer.
NONSENSE = [
    ("cosign_quorum", 0, "1..1000000"),  # every lookup would count as cosigned
    ("restore_quorum", 0, "1..1000000"),
    ("max_envelope_bytes", 64 * 1024 + 1, "1024..65536"),  # above the hard ceiling
    ("max_envelope_bytes", 100, "1024..65536"),  # no mark fits
    ("view_bucket_bits", 23, "0..22"),
    ("clock_skew_ms", 2 * 3_600_000, "0..3600000"),
    ("out_of_order_buffer", 0, "1..1000000"),
    ("out_of_order_per_issuer", 10_001, "1..10000"),  # more than the whole buffer
    ("out_of_order_per_issuer", 0, "1..10000"),
    ("out_of_order_ttl_ms", 0, "1000..86400000"),
    ("max_expiry_ms", 0, f"{DAY_MS}..{3650 * DAY_MS}"),
    ("default_expiry_ms", 366 * DAY_MS, f"{DAY_MS}..{365 * DAY_MS}"),  # beyond max_expiry_ms
    ("reassignment_window_ms", 366 * DAY_MS, f"0..{365 * DAY_MS}"),
    ("view_max_age_ms", 0, "1000..86400000"),
    ("max_marks_per_participant", 0, "1..1000"),
    ("high_risk_min_participants", 0, "1..1000000"),
    ("identity_min_participants", 0, "1..1000000"),
    ("protection_ms", 11 * 365 * DAY_MS, f"0..{3650 * DAY_MS}"),
]


@pytest.mark.parametrize(
    ("name", "value", "allowed"), NONSENSE, ids=[f"{n}={v}" for n, v, _ in NONSENSE]
)
def test_policy_values_are_checked_for_sense(
    made: tuple[Path, Consortium], name: str, value: int, allowed: str
) -> None:
    """A policy value out of its range is a ConfigError naming the value and
    the allowed range, built directly or loaded from consortium.json."""
    with pytest.raises(ConfigError, match=rf"policy {name} is {value}; it must be {allowed}"):
        Policy(**{name: value})
    _, conf = made
    obj = json.loads(conf.to_json_bytes())
    obj["policy"][name] = value
    with pytest.raises(ConfigError, match=rf"policy {name} is {value}"):
        Consortium.from_json_bytes(json.dumps(obj).encode())


def test_policy_quorums_are_bounded_by_the_participants(made: tuple[Path, Consortium]) -> None:
    """A quorum of peers is at most the participants other than one's own; a
    count of participants at most all of them (6 in the default layout)."""
    _, conf = made
    for name, most in (
        ("cosign_quorum", 5),
        ("restore_quorum", 5),
        ("high_risk_min_participants", 6),
        ("identity_min_participants", 6),
    ):
        obj = json.loads(conf.to_json_bytes())
        obj["policy"][name] = most
        assert getattr(Consortium.from_json_bytes(json.dumps(obj).encode()).policy, name) == most
        obj["policy"][name] = most + 1
        too_many = rf"policy {name} is {most + 1}; it must be 1..{most}"
        with pytest.raises(ConfigError, match=too_many):
            Consortium.from_json_bytes(json.dumps(obj).encode())


def test_policy_ceilings_are_the_ledgers() -> None:
    """keys restates the ledger's ceilings (it may not import ledger): equal."""
    from keys import consortium as kc
    from ledger import record, viewtree

    assert kc.MAX_ENVELOPE_BYTES == record.MAX_ENVELOPE_BYTES
    assert kc.MAX_VIEW_BUCKET_BITS == viewtree.MAX_TOP_BITS
    kc.Policy(
        max_envelope_bytes=record.MAX_ENVELOPE_BYTES, view_bucket_bits=viewtree.MAX_TOP_BITS
    )


@pytest.mark.parametrize(
    "name",
    ["", "markex local", "markex\tlocal", "markex+local", "markex\x00", "markex\u2028", "\u00a0x",
     "mark\x7fex", "a\ud800b"],
    ids=["empty", "space", "tab", "plus", "nul", "line-separator", "nbsp", "del", "surrogate"],
)
def test_consortium_name_must_be_a_note_key_name(made: tuple[Path, Consortium], name: str) -> None:
    """The name prefixes every origin (a C2SP note key name): refused when
    empty, with whitespace, '+', or anything unprintable, built or loaded."""
    from ledger import note

    _, conf = made
    with pytest.raises(ConfigError, match="consortium name"):
        replace(conf, name=name)
    obj = json.loads(conf.to_json_bytes())
    obj["name"] = name
    with pytest.raises(ConfigError, match="consortium name"):
        Consortium.from_json_bytes(json.dumps(obj).encode())
    for good in ("markex-local", "国家号码标记", "a/b.c_d"):
        assert replace(conf, name=good).name == good
        assert note.is_valid_key_name(f"{good}/log/carrier-1")


# ---- issue 15: the call centre, industries, the members' key, the screen's policy ----


def _obj(conf: Consortium) -> dict:
    return json.loads(conf.to_json_bytes())


def _load(obj: dict) -> Consortium:
    return Consortium.from_json_bytes(json.dumps(obj, ensure_ascii=False).encode())


def test_the_call_centre_issues_nothing_and_runs_no_node() -> None:
    """A call centre is like the auditor where it is about running no node:
    weight 0, no endpoints, never a witness (its key never cosigns)."""
    from keys.consortium import ISSUES_NOTHING, ROLES

    assert "callcenter" in ROLES and "callcenter" in ISSUES_NOTHING
    pub = SigningKey.generate().public_bytes
    check_participant(Participant("cc", "callcenter", pub, 0, "", ""))
    with pytest.raises(ConfigError, match="cc: a participant of role callcenter has weight 0"):
        check_participant(Participant("cc", "callcenter", pub, 1, "", ""))
    with pytest.raises(ConfigError, match="runs no node, so no endpoints"):
        check_participant(Participant("cc", "callcenter", pub, 0, "h:1", "h:2"))


def test_a_call_centres_record_is_refused_by_the_ledger(made: tuple[Path, Consortium]) -> None:
    """It holds a member certificate and may screen, but issues nothing."""
    from ledger.errors import NotAllowed
    from ledger.payloads import check_issuer

    _, conf = made
    with pytest.raises(NotAllowed, match="callcenter-1 is of role callcenter: it issues nothing"):
        check_issuer(conf, "callcenter", "callcenter-1", None)  # type: ignore[arg-type]


def test_consortium_json_round_trips_industries_members_key_id_and_the_screen_policy(
    made: tuple[Path, Consortium],
) -> None:
    _, conf = made
    obj = _obj(conf)
    assert obj["industries"][3] == {"id": "real-estate", "label": "房产中介"}
    assert obj["members_key_id"] == conf.members_key_id.hex() and len(conf.members_key_id) == 8
    assert obj["policy"]["marketing_categories"]["finance-insurance"] == [
        "finance", "insurance", "securities"]
    obj["industries"] = [{"id": "pets", "label": "宠物用品"}, {"id": "finance", "label": "贷款"}]
    obj["policy"].update(marketing_categories={"marketing": ["pets"], "fraud": []},
                         screen_block_risk="off", screen_warn_risk="high",
                         redress_text="Appeal at /numbers/{caller}.",
                         preference_max_ahead_ms=7 * DAY_MS)
    got = _load(obj)
    assert got.industries == (Industry("pets", "宠物用品"), Industry("finance", "贷款"))
    assert got.industry_ids == frozenset({"pets", "finance"})
    assert got.policy.marketing_categories == {"marketing": ("pets",), "fraud": ()}
    assert (got.policy.screen_block_risk, got.policy.screen_warn_risk) == ("off", "high")
    assert got.policy.redress_text == "Appeal at /numbers/{caller}."
    assert got.policy.preference_max_ahead_ms == 7 * DAY_MS
    assert got.members_key_id == conf.members_key_id
    again = Consortium.from_json_bytes(got.to_json_bytes())
    assert again == replace(got, raw=again.raw)


def test_an_older_consortium_json_loads_with_the_defaults(made: tuple[Path, Consortium]) -> None:
    """A file written before issue 15 names no industries, no members' key and
    none of the screen's policy values: it loads with the defaults."""
    _, conf = made
    obj = _obj(conf)
    del obj["industries"], obj["members_key_id"]
    for k in ("marketing_categories", "screen_block_risk", "screen_warn_risk", "redress_text",
              "preference_max_ahead_ms"):
        del obj["policy"][k]
    old = _load(obj)
    assert old.industries == DEFAULT_INDUSTRIES and len(DEFAULT_INDUSTRIES) == 10
    assert "all" not in old.industry_ids and "recruitment" in old.industry_ids
    assert old.members_key_id == b"" and old.members_key is None
    assert old.policy == Policy()
    assert old.policy.marketing_categories == dict(DEFAULT_MARKETING_CATEGORIES)
    assert old.policy.marketing_categories["marketing"] == ()
    assert (old.policy.screen_block_risk, old.policy.screen_warn_risk) == ("high", "medium")
    assert "{caller}" in old.policy.redress_text and "12321" in old.policy.redress_text
    assert old.policy.preference_max_ahead_ms == 365 * DAY_MS
    assert b"members_key_id" not in old.to_json_bytes()  # none named, none written


BAD_INDUSTRIES = [
    ([{"id": "all", "label": "全部"}], "'all' is reserved"),
    ([{"id": "finance", "label": "a"}, {"id": "finance", "label": "b"}], "'finance' twice"),
    ([{"id": "", "label": "x"}], "non-empty string"),
    ([{"label": "x"}], "non-empty string"),
    ([{"id": "x" * 33, "label": "x"}], "33 characters; at most 32"),
    ([{"id": "房产", "label": "x"}], "other than ASCII letters"),
    ([{"id": "a", "label": 5}], "label must be a string"),
    ([{"id": "a", "label": "x", "rank": 1}], 'an industry must be an object'),
    (["finance"], "an industry must be an object"),
    ([], "1..256 objects"),
    ({"finance": "贷款"}, "1..256 objects"),
]


@pytest.mark.parametrize(("industries", "match"), BAD_INDUSTRIES,
                         ids=[m for _, m in BAD_INDUSTRIES])
def test_bad_industries_are_refused(made: tuple[Path, Consortium], industries: object,
                                    match: str) -> None:
    _, conf = made
    obj = _obj(conf)
    obj["industries"] = industries
    with pytest.raises(ConfigError, match=match):
        _load(obj)
    obj["industries"] = [{"id": "x" * 32, "label": ""}]  # 32 is allowed, a label may be empty
    obj["policy"]["marketing_categories"] = {}
    assert _load(obj).industry_ids == {"x" * 32}


@pytest.mark.parametrize("value", ["zz" * 8, "00" * 7, "00" * 9, 5, ""])
def test_a_bad_members_key_id_is_refused(made: tuple[Path, Consortium], value: object) -> None:
    _, conf = made
    obj = _obj(conf)
    obj["members_key_id"] = value
    with pytest.raises(ConfigError, match="members_key_id must be the hex of 8 bytes"):
        _load(obj)


BAD_SCREEN_POLICY = [
    ("screen_block_risk", "low", "policy screen_block_risk is 'low'; it must be one of "
     "none, medium, high, off"),
    ("screen_warn_risk", 2, "policy screen_warn_risk is 2"),
    ("redress_text", "", "redress_text must be a non-empty string"),
    ("redress_text", "   ", "redress_text must be a non-empty string"),
    ("redress_text", "call 12321", r"must contain \{caller\}"),
    ("redress_text", "{caller}" + "x" * 293, "301 characters; at most 300"),
    ("redress_text", "{caller} at {page}", "a brace other than"),
    ("marketing_categories", ["marketing"], "must be an object"),
    ("marketing_categories", {"marketing": "finance"}, r"\['marketing'\] must be a list"),
    ("marketing_categories", {"marketing": ["finance", "finance"]}, "distinct industry ids"),
    ("marketing_categories", {"": []}, "a category must be a non-empty string"),
    ("preference_max_ahead_ms", -1, "policy preference_max_ahead_ms"),
    ("preference_max_ahead_ms", 11 * 365 * DAY_MS,
     f"policy preference_max_ahead_ms is {11 * 365 * DAY_MS}; it must be 0..{3650 * DAY_MS}"),
]


@pytest.mark.parametrize(("name", "value", "match"), BAD_SCREEN_POLICY,
                         ids=[f"{n}={str(v)[:20]}" for n, v, _ in BAD_SCREEN_POLICY])
def test_the_screens_policy_values_are_checked(made: tuple[Path, Consortium], name: str,
                                               value: object, match: str) -> None:
    """Built directly or loaded from consortium.json: a ConfigError naming the value."""
    if not (name == "preference_max_ahead_ms" and value == -1):  # from_json refuses a negative
        with pytest.raises(ConfigError, match=match):
            Policy(**{name: value})
    _, conf = made
    obj = _obj(conf)
    obj["policy"][name] = value
    with pytest.raises(ConfigError, match=match):
        _load(obj)
    assert "{caller}" in Policy(redress_text="{caller}" + "x" * 292).redress_text  # 300: allowed


@pytest.mark.parametrize(("cats", "match"), [
    ({"spam": []}, "names 'spam', which is not a category of the taxonomy"),
    ({"marketing": ["pets"]}, r"\['marketing'\] names 'pets', which is not an industry"),
    ({"marketing": ["all"]}, r"names 'all', which is not an industry"),
])
def test_marketing_categories_name_the_taxonomy_and_the_industries(
    made: tuple[Path, Consortium], cats: dict, match: str,
) -> None:
    _, conf = made
    obj = _obj(conf)
    obj["policy"]["marketing_categories"] = cats
    with pytest.raises(ConfigError, match=match):
        _load(obj)
    # An industry the consortium drops may not stay in the policy either.
    obj = _obj(conf)
    obj["industries"] = [i for i in obj["industries"] if i["id"] != "recruitment"]
    with pytest.raises(ConfigError, match="names 'recruitment', which is not an industry"):
        _load(obj)


def test_init_writes_one_members_key_for_all_but_the_call_centre(
    made: tuple[Path, Consortium],
) -> None:
    d, conf = made
    assert "callcenter-1" in conf.by_id and "callcenter-1" not in {p.id for p in conf.witnesses}
    assert base64.b64decode((d / "callcenter-1" / "config.pub").read_text()) == conf.config_key
    ids = set()
    for pid in IDS:
        path = d / pid / "members.key"
        if pid == "callcenter-1":
            assert not path.exists()
            continue
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, pid
        ids.add(MembersKey.load(path).id)
    assert ids == {conf.members_key_id}
    assert json.loads((d / "consortium.json").read_bytes())["members_key_id"] == (
        conf.members_key_id.hex())
    assert conf.members_key is not None and conf.members_key.id == conf.members_key_id
    # The key never enters the signed bytes; the dataclass's repr never shows it.
    key_hex = conf.members_key.key.hex().encode()
    assert key_hex not in (d / "consortium.json").read_bytes()
    assert conf.to_json_bytes() == (d / "consortium.json").read_bytes() == conf.raw
    assert conf.members_key.key.hex() not in repr(conf) + repr(conf.members_key)


def test_load_consortium_attaches_the_members_key(made: tuple[Path, Consortium]) -> None:
    d, conf = made
    cfg = NodeConfig.for_participant(d, "carrier-1")
    assert cfg.members_key == d / "carrier-1" / "members.key"
    got = load_consortium(cfg)
    assert got.members_key is not None and got.members_key.id == conf.members_key_id
    sealed = got.members_key.seal("+8613812345678")
    assert MembersKey.load(d / "institute" / "members.key").open(sealed) == "+8613812345678"
    assert got == conf  # the key is no part of what is compared (nor signed)


def test_a_node_without_its_members_key_file_loads_without_the_key(fresh: Path) -> None:
    (fresh / "carrier-1" / "members.key").unlink()
    assert load_consortium(NodeConfig.for_participant(fresh, "carrier-1")).members_key is None


def test_another_members_key_is_refused(fresh: Path) -> None:
    """A key whose id is not the one consortium.json names: a ConfigError
    naming the file and both ids; a file that is no key is refused too."""
    conf = Consortium.load(fresh)
    path = fresh / "carrier-1" / "members.key"
    other = MembersKey.generate()
    other.write(path)
    cfg = NodeConfig.for_participant(fresh, "carrier-1")
    with pytest.raises(ConfigError) as e:
        load_consortium(cfg)
    assert str(path) in str(e.value)
    assert other.id.hex() in str(e.value) and conf.members_key_id.hex() in str(e.value)
    path.write_text("not a key\n")
    with pytest.raises(ConfigError, match=f"cannot read the members' key {path}"):
        load_consortium(cfg)
    with pytest.raises(ConfigError, match="is not the consortium's"):
        conf.with_members_key(other)
    old = replace(conf, members_key_id=b"")
    with pytest.raises(ConfigError, match="names no members' key"):
        old.with_members_key(other)


def test_the_members_key_moved_to_keys_and_ledger_keeps_its_names() -> None:
    """keys/ may not import ledger/, so the key lives in keys/sealing.py;
    ledger.sealing keeps every name, its SealError a MalformedRecord."""
    from ledger import sealing
    from ledger.errors import MalformedRecord

    assert sealing.MembersKey is MembersKey and sealing.KEY_FILE == "members.key"
    key = sealing.MembersKey.generate()
    sealed = key.seal("+8613812345678")
    assert sealing.open_sealed(key, sealed) == "+8613812345678"
    with pytest.raises(sealing.SealError) as e:
        sealing.open_sealed(MembersKey.generate(), sealed)
    assert isinstance(e.value, MalformedRecord) and isinstance(e.value, keys.SealError)
    with pytest.raises(keys.SealError):  # the key's own open: keys' error tree
        MembersKey.generate().open(sealed)
    with pytest.raises(keys.SealError, match="17..48 bytes"):
        key.open(b"x" * 16)
