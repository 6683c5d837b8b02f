"""node.toml as an operator meets it (docs/config.md): paths relative to the
file, so a copied consortium folder opens its own data and keys; every key
documented; a taken port named by its key and file; `consortium init --host`."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keys import ConfigError
from keys.layout import TOML_KEYS, NodeConfig, init_consortium
from node import ports
from node.cli import main
from node.server import Node
from tests.conftest import free_port_block

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "config.md"
PATH_KEYS = ("consortium", "data_dir", "signing_key", "tls_key", "tls_cert", "ca_cert",
             "members_key")


def _init(d: Path, **kw: object) -> None:
    init_consortium(d, carriers=1, internet=0, base_port=free_port_block(6),
                    now=datetime.now(UTC), **kw)  # type: ignore[arg-type]


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `d` (and every folder, as b""), with its modification time."""
    return {
        str(p.relative_to(d)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in sorted(d.rglob("*"))
    }


def _on_free_ports(cfg: NodeConfig) -> NodeConfig:
    return dataclasses.replace(cfg, member_listen="127.0.0.1:0", public_listen="127.0.0.1:0",
                               tiles_listen="")


@pytest.fixture
def busy() -> Iterator[int]:
    """A loopback port held by another program: a listening socket of this test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# ---------------------------------------------------------------- 1. relative paths


def test_a_copied_consortium_folder_opens_its_own_data_and_keys(tmp_path: Path) -> None:
    original, copy = tmp_path / "c", tmp_path / "copy"
    _init(original)
    shutil.copytree(original, copy)
    before = _snapshot(original)

    cfg = NodeConfig.for_participant(copy, "carrier-1")
    for key in PATH_KEYS:
        assert copy.resolve() in (getattr(cfg, key), *getattr(cfg, key).parents), key
    assert cfg.data_dir == copy.resolve() / "carrier-1" / "data"
    assert cfg.signing_key == copy.resolve() / "carrier-1" / "signing.key"
    assert cfg.source == (copy / "carrier-1" / "node.toml").absolute()

    node = Node(_on_free_ports(cfg)).start()
    try:
        assert node.public_port > 0
    finally:
        node.stop()
    # The copy's node made its database in the copy; the original is as it was, byte for byte.
    assert any((copy / "carrier-1" / "data").iterdir())
    assert _snapshot(original) == before
    assert not any((original / "carrier-1" / "data").iterdir())


def test_init_and_configure_write_paths_relative_to_the_file(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    d = tmp_path / "c"
    _init(d)
    written = tomllib.loads((d / "carrier-1" / "node.toml").read_text())
    assert {k: written[k] for k in PATH_KEYS} == {
        "consortium": "..", "data_dir": "data", "signing_key": "signing.key",
        "tls_key": "tls.key", "tls_cert": "tls.pem", "ca_cert": "../ca/ca.pem",
        "members_key": "members.key",
    }
    (d / "carrier-1" / "node.toml").unlink()
    assert main(["node", "configure", "--consortium", str(d), "--as", "carrier-1",
                 "--pin", str(d / "config" / "config.pub")]) == 0
    capsys.readouterr()
    again = tomllib.loads((d / "carrier-1" / "node.toml").read_text())
    assert {k: again[k] for k in PATH_KEYS} == {k: written[k] for k in PATH_KEYS}


def test_members_key_is_a_path_of_node_toml_defaulting_to_the_participants_folder(
    tmp_path: Path,
) -> None:
    """An older node.toml without the key reads members.key beside itself; a
    relative path is relative to the file, an absolute one stays; a copied
    folder opens its own key; a value that is no string is refused."""
    from keys.layout import load_consortium

    d = tmp_path / "c"
    _init(d)
    path = d / "carrier-1" / "node.toml"
    text = path.read_text()
    assert 'members_key = "members.key"' in text
    path.write_text("".join(ln for ln in text.splitlines(True)
                            if not ln.startswith("members_key")))
    cfg = NodeConfig.load(path)
    assert cfg.members_key == (d / "carrier-1" / "members.key").resolve()
    assert load_consortium(cfg).members_key is not None
    path.write_text(text.replace('"members.key"', '"../secret/m.key"'))
    assert NodeConfig.load(path).members_key == (d / "secret" / "m.key").resolve()
    path.write_text(text.replace('"members.key"', f'"{tmp_path / "abs.key"}"'))
    assert NodeConfig.load(path).members_key == tmp_path / "abs.key"
    path.write_text(text.replace('"members.key"', "7"))
    with pytest.raises(ConfigError, match=f"{path}: key 'members_key' must be a str"):
        NodeConfig.load(path)
    path.write_text(text)
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    assert NodeConfig.for_participant(copy, "carrier-1").members_key == (
        copy / "carrier-1" / "members.key").resolve()
    # A code-built configuration defaults to members.key beside its signing key.
    built = dataclasses.replace(cfg, members_key=None, signing_key=tmp_path / "k" / "s.key")
    assert built.members_key == tmp_path / "k" / "members.key"


def test_init_keeps_screen_rows_where_switches_screen_and_configure_keeps_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`screen_rows`: true at a carrier's and the institute's node, false at
    the others'; an older node.toml without it keeps rows; a value that is no
    boolean is refused; `node configure` keeps what the file said."""
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=1, base_port=free_port_block(8),
                    now=datetime.now(UTC))
    rows = {pid: NodeConfig.for_participant(d, pid).screen_rows
            for pid in ("carrier-1", "institute", "internet-1")}
    assert rows == {"carrier-1": True, "institute": True, "internet-1": False}
    path = d / "carrier-1" / "node.toml"
    text = path.read_text()
    assert "screen_rows = true" in text
    path.write_text(text.replace("screen_rows = true\n", ""))
    assert NodeConfig.load(path).screen_rows is True
    path.write_text(text.replace("screen_rows = true", 'screen_rows = "no"'))
    with pytest.raises(ConfigError, match=f"{path}: key 'screen_rows' must be a bool"):
        NodeConfig.load(path)
    path.write_text(text.replace("screen_rows = true", "screen_rows = false"))
    assert main(["node", "configure", "--consortium", str(d), "--as", "carrier-1",
                 "--pin", str(d / "config" / "config.pub")]) == 0
    capsys.readouterr()
    assert NodeConfig.load(path).screen_rows is False


def test_a_path_outside_the_consortium_folder_stays_absolute(tmp_path: Path) -> None:
    d = tmp_path / "c"
    _init(d)
    path = d / "carrier-1" / "node.toml"
    elsewhere = tmp_path / "var" / "carrier-1"
    dataclasses.replace(NodeConfig.load(path), data_dir=elsewhere).write(path)
    obj = tomllib.loads(path.read_text())
    assert obj["data_dir"] == str(elsewhere) and obj["consortium"] == ".."
    assert NodeConfig.load(path).data_dir == elsewhere


def test_an_older_absolute_node_toml_still_loads_in_place(tmp_path: Path) -> None:
    d = tmp_path / "c"
    _init(d)
    path = d / "carrier-1" / "node.toml"
    cfg = NodeConfig.load(path)
    path.write_text(cfg.to_toml())  # no `at`: every path absolute, as init wrote them before
    assert tomllib.loads(path.read_text())["consortium"] == str(d.resolve())
    assert NodeConfig.load(path) == cfg


def test_a_copy_of_an_older_absolute_folder_is_refused_until_reconfigured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original, copy = tmp_path / "c", tmp_path / "copy"
    _init(original)
    path = original / "carrier-1" / "node.toml"
    path.write_text(NodeConfig.load(path).to_toml())  # an older, absolute file
    shutil.copytree(original, copy)
    before = _snapshot(original)

    with pytest.raises(ConfigError, match="names .*a copy would open the original's") as e:
        NodeConfig.for_participant(copy, "carrier-1")
    assert str(copy / "carrier-1" / "node.toml") in str(e.value)
    assert 'consortium = ".."' in str(e.value)
    code = main(["node", "run", "--consortium", str(copy), "--as", "carrier-1"])
    assert code == 2 and "a copy would open the original's data and keys" in capsys.readouterr().err
    # `node configure` is the fix: it writes the copy's own paths.
    assert main(["node", "configure", "--consortium", str(copy), "--as", "carrier-1",
                 "--pin", str(copy / "config" / "config.pub"), "--new-feed"]) == 0
    assert NodeConfig.for_participant(copy, "carrier-1").data_dir == (
        copy.resolve() / "carrier-1" / "data"
    )
    assert _snapshot(original) == before


# ---------------------------------------------------------------- 2. docs/config.md


def _documented() -> dict[str, dict[str, str]]:
    """docs/config.md's key sections: name -> {"type", "default", "written by", "example"}."""
    keys_part = DOC.read_text().split("\n## Keys\n", 1)[1]
    out: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"^### `([a-z_]+)`\n(.*?)(?=^### |\Z)", keys_part, re.S | re.M):
        items = dict(re.findall(r"^- ([A-Za-z ]+): (.*(?:\n  .*)*)", m.group(2), re.M))
        out[m.group(1)] = {k.lower(): " ".join(v.split()) for k, v in items.items()}
    return out


def test_docs_config_names_exactly_the_keys_node_config_reads() -> None:
    doc = _documented()
    assert list(doc) == list(TOML_KEYS)
    defaults = {f.name: f.default for f in dataclasses.fields(NodeConfig)}
    for key, items in doc.items():
        assert set(items) == {"type", "default", "written by", "example"}, key
        required = defaults[key] is dataclasses.MISSING
        assert (items["default"] == "required") == required, key
        assert "consortium init" in items["written by"], key
        example = re.fullmatch(r"`(.*)`", items["example"])
        assert example is not None, key
        assert list(tomllib.loads(example.group(1))) == [key]


def test_the_docs_examples_are_a_node_toml_that_loads(tmp_path: Path) -> None:
    doc = DOC.read_text()
    examples = "\n".join(i["example"].strip("`") for i in _documented().values())
    whole = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert whole is not None
    for text in (examples, whole.group(1)):
        cfg = NodeConfig.from_dict(tomllib.loads(text), base=tmp_path / "c" / "carrier-1")
        assert cfg.data_dir == tmp_path / "c" / "carrier-1" / "data"
        assert cfg.consortium == tmp_path / "c"


# ---------------------------------------------------------------- 3. a taken port


def _node_run(d: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "node", "run", "--consortium", str(d),
         "--as", "carrier-1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


@pytest.mark.parametrize("key", ["member_listen", "public_listen", "metrics_listen"])
def test_a_busy_port_names_the_key_and_the_file(tmp_path: Path, busy: int, key: str) -> None:
    d = tmp_path / "c"
    _init(d)
    path = d / "carrier-1" / "node.toml"
    address = f"127.0.0.1:{busy}"
    dataclasses.replace(NodeConfig.load(path), **{key: address}).write(path)

    done = _node_run(d)
    assert done.returncode != 0
    assert (f"port {address} ({key} in {path}) is in use by another program; "
            f"stop it or change {key}") in done.stderr
    assert "Traceback" not in done.stderr and "RuntimeError" not in done.stderr
    assert done.stdout == ""  # no ports line: it never started
    assert not any((d / "carrier-1" / "data").iterdir())  # the store was never opened


def test_the_port_init_gave_is_named_when_taken(tmp_path: Path) -> None:
    d = tmp_path / "c"
    _init(d)
    path = d / "carrier-1" / "node.toml"
    cfg = NodeConfig.load(path)
    host, _, port = cfg.public_listen.rpartition(":")
    with socket.socket() as s:
        s.bind((host, int(port)))
        s.listen()
        done = _node_run(d)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert (f"port {cfg.public_listen} (public_listen in {path}) is in use by another "
            "program; stop it or change public_listen") in done.stderr


def test_grpc_bind_failure_is_the_same_typed_error(tmp_path: Path, busy: int) -> None:
    """The check before start can race another program: gRPC's own "Failed to bind"
    becomes the same PortInUse."""
    d = tmp_path / "c"
    _init(d)
    cfg = dataclasses.replace(NodeConfig.for_participant(d, "carrier-1"),
                              public_listen=f"127.0.0.1:{busy}")
    server = grpc.server(futures.ThreadPoolExecutor(1), options=[("grpc.so_reuseport", 0)])
    creds = grpc.ssl_server_credentials([(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())])
    with pytest.raises(ports.PortInUse, match=f"public_listen in {cfg.source}") as e:
        ports.add_secure_port(server, cfg, "public_listen", creds)
    assert (e.value.key, e.value.address) == ("public_listen", f"127.0.0.1:{busy}")
    free = dataclasses.replace(cfg, public_listen="127.0.0.1:0")
    assert ports.add_secure_port(server, free, "public_listen", creds) > 0
    server.stop(0)


def test_an_address_not_of_this_machine_says_so(tmp_path: Path) -> None:
    d = tmp_path / "c"
    _init(d)
    cfg = dataclasses.replace(NodeConfig.for_participant(d, "carrier-1"),
                              member_listen="192.0.2.1:7400")  # TEST-NET-1: no machine's
    with pytest.raises(ports.CannotListen, match="change member_listen") as e:
        ports.check_free(cfg)
    assert not isinstance(e.value, ports.PortInUse)
    where = f"(member_listen in {cfg.source})"
    assert str(e.value).startswith(f"cannot listen on 192.0.2.1:7400 {where}: ")


def test_a_busy_tiles_port_warns_with_the_same_sentence(
    tmp_path: Path, busy: int, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "c"
    _init(d)
    cfg = dataclasses.replace(_on_free_ports(NodeConfig.for_participant(d, "carrier-1")),
                              tiles_listen=f"127.0.0.1:{busy}")
    caplog.set_level("WARNING", logger="markex.tiles")
    node = Node(cfg).start()
    try:
        assert node.tiles_port == 0 and node.public_port > 0  # tiles are optional
    finally:
        node.stop()
    warned = [json.loads(r.getMessage()) for r in caplog.records
              if "tiles-not-started" in r.getMessage()]
    assert warned[0]["message"] == (
        f"port 127.0.0.1:{busy} (tiles_listen in carrier-1/node.toml) is in use by another "
        "program; stop it or change tiles_listen"
    )


# ---------------------------------------------------------------- 4. init --host


HOST, IP = "node1.markex-test.example", "192.0.2.10"


def _sans(pem: bytes) -> x509.SubjectAlternativeName:
    cert = x509.load_pem_x509_certificate(pem)
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_init_host_names_the_certificates_and_the_endpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "c"
    base = free_port_block(9)
    # No complaints centre or regulator: the ports below count three nodes.
    assert main(["consortium", "init", str(d), "--carriers", "1", "--internet", "1",
                 "--complaints", "0", "--regulators", "0",
                 "--base-port", str(base), "--host", HOST, "--host", IP, "--json"]) == 0
    ids = json.loads(capsys.readouterr().out)["participants"]
    for pid in ids:
        san = _sans((d / pid / "tls.pem").read_bytes())
        assert set(san.get_values_for_type(x509.DNSName)) == {
            f"{pid}.participant.markex.invalid", "localhost", HOST
        }
        assert set(san.get_values_for_type(x509.IPAddress)) == {
            ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address(IP)
        }
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"markex://participant/{pid}"
        ]
    cons = json.loads((d / "consortium.json").read_text())
    carrier = next(p for p in cons["participants"] if p["id"] == "carrier-1")
    assert carrier["member_endpoint"] == f"{HOST}:{base + 2}"
    assert carrier["public_endpoint"] == f"{HOST}:{base + 3}"
    # A DNS name listens on loopback unless --listen-all; metrics always stay local.
    cfg = NodeConfig.for_participant(d, "carrier-1")
    assert (cfg.member_listen, cfg.public_listen, cfg.metrics_listen) == (
        f"127.0.0.1:{base + 2}", f"127.0.0.1:{base + 3}", f"127.0.0.1:{base + 9 + 1}"
    )
    assert cfg.tiles_listen == f"127.0.0.1:{base + 6 + 1}"


@pytest.mark.parametrize(
    ("argv", "endpoint_host", "listen_host"),
    [
        ([], "127.0.0.1", "127.0.0.1"),
        (["--host", IP, "--host", HOST], IP, IP),
        (["--host", HOST, "--listen-all"], HOST, "0.0.0.0"),
        (["--host", "::1"], "[::1]", "[::1]"),
    ],
)
def test_where_init_listens(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            argv: list[str], endpoint_host: str, listen_host: str) -> None:
    d = tmp_path / "c"
    assert main(["consortium", "init", str(d), "--carriers", "1", "--internet", "0",
                 "--complaints", "0", "--regulators", "0", "--base-port", "27400", *argv]) == 0
    capsys.readouterr()
    cons = json.loads((d / "consortium.json").read_text())
    assert cons["participants"][1]["public_endpoint"] == f"{endpoint_host}:27403"
    cfg = NodeConfig.for_participant(d, "carrier-1")
    assert cfg.public_listen == f"{listen_host}:27403"
    assert cfg.metrics_listen == "127.0.0.1:27407"  # base + 3N + k, on loopback always


@pytest.mark.parametrize(
    ("host", "why"),
    [("bad host!", "neither an IP address nor a DNS name"),
     ("carrier-2.participant.markex.invalid", "participant name"),
     ("", "must not be empty")],
)
def test_init_refuses_a_bad_host_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str, why: str
) -> None:
    d = tmp_path / "c"
    assert main(["consortium", "init", str(d), "--host", HOST, "--host", host]) == 2
    assert why in capsys.readouterr().err
    assert not d.exists()


def _health(port: int, ca: bytes, name: str) -> int:
    opts = [("grpc.ssl_target_name_override", name)]
    with grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca), opts) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return r.status


def test_a_client_that_checks_the_given_host_name_is_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "c"
    assert main(["consortium", "init", str(d), "--carriers", "1", "--internet", "0",
                 "--base-port", str(free_port_block(6)), "--host", HOST]) == 0
    capsys.readouterr()
    node = Node(_on_free_ports(NodeConfig.for_participant(d, "carrier-1"))).start()
    try:
        ca = (d / "ca" / "ca.pem").read_bytes()
        # The handshake on 127.0.0.1 checks the certificate for HOST, as a client dialling it would.
        assert _health(node.public_port, ca, HOST) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as e:
            _health(node.public_port, ca, "node2.markex-test.example")
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        node.stop()
