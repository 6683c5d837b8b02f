"""The log as C2SP tlog-tiles: pure tile math (ledger/tiles.py) against
ledger/merkle.py's hashes, and a real node's HTTPS endpoint (node/tilesrv.py)
read by Python and by Go's golang.org/x/mod/sumdb/tlog."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from keys import ConfigError
from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium
from keys.tls import make_ca, make_node_cert, participant_dns_name
from ledger import merkle, note, tiles
from ledger.errors import NotFound, TooLarge
from ledger.names import log_origin, witness_name
from ledger.record import Mark
from ledger.tiles import MalformedTilePath, Tile
from node.localnet import free_port_block
from node.server import Node
from node.tilesrv import MAX_CONNECTIONS, TileServer

# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(0, 0), "tile/0/000"),
        (Tile(0, 5, 17), "tile/0/005.p/17"),
        (Tile(1, 999), "tile/1/999"),
        (Tile(2, 1000, 1), "tile/2/x001/000.p/1"),
        (Tile(4, 1234067), "tile/4/x001/x234/067"),  # the spec's example
        (Tile(63, 0, 255), "tile/63/000.p/255"),
        (Tile(0, 1234067, 8, entries=True), "tile/entries/x001/x234/067.p/8"),
        (Tile(0, 0, entries=True), "tile/entries/000"),
    ],
)
def test_tile_paths_are_the_c2sp_spelling_both_ways(tile: Tile, path: str) -> None:
    assert tile.path() == path
    assert Tile.parse(path) == tile


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("tile/00/000", "level '00'"),  # no leading zeroes
        ("tile/64/000", "level 64"),
        ("tile/-1/000", "level '-1'"),
        ("tile/8/0/000", "index element '0'"),  # Go's sumdb path with the height is not C2SP's
        ("tile/data/000", "level 'data'"),
        ("tile/0/1", "index element '1'"),
        ("tile/0/0001", "index element '0001'"),
        ("tile/0/x000/001", "not canonical"),  # one index, one spelling
        ("tile/0/001/002", "x and 3 digits"),
        ("tile/0/000.p/0", "width '0'"),
        ("tile/0/000.p/256", "width '256'"),  # a full tile has no .p
        ("tile/0/000.p/017", "width '017'"),
        ("tile/0/000.p/", "width ''"),
        ("tile/0/000.p", "index element '000.p'"),
        ("tile/0/", "index element ''"),
        ("tile/0", "is not tile/<L>/<N>"),
        ("tiles/0/000", "is not tile/<L>/<N>"),
        ("tile/0/" + "x001/" * 7 + "000", "at most 7"),
        ("tile/0/" + "x" * 80, "at most 64 characters"),
        ("tile/entries/000.p/300", "width '300'"),
    ],
)
def test_malformed_tile_paths_are_refused_with_the_reason(path: str, why: str) -> None:
    with pytest.raises(MalformedTilePath, match=why.replace(".", r"\.").replace("'", "'")):
        Tile.parse(path)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"level": 64, "index": 0}, "level 64"),
        ({"level": 0, "index": -1}, "index -1"),
        ({"level": 0, "index": 0, "width": 0}, "width 0"),
        ({"level": 0, "index": 0, "width": 257}, "width 257"),
        ({"level": 1, "index": 0, "entries": True}, "level-0"),
        ({"level": True, "index": 0}, "integer"),
    ],
)
def test_tile_coordinates_are_checked_when_built(kwargs: dict, why: str) -> None:
    with pytest.raises(MalformedTilePath, match=why):
        Tile(**kwargs)


def test_right_edge_of_a_tree_of_70000_is_the_specs_example() -> None:
    """c2sp.org/tlog-tiles: 273 full level-0 tiles and one of width 112, one
    full level-1 tile and one of width 17, one level-2 tile of width 1."""
    assert tiles.tiles_for_size(70000) == [
        Tile(0, 272),
        Tile(0, 273, 112),
        Tile(1, 0),
        Tile(1, 1, 17),
        Tile(2, 0, 1),
    ]
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1 tile"
    assert tiles.tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles.tiles_for_size(0) == []


# ---------------------------------------------------------------- tile contents


@pytest.fixture(scope="module")
def tree70k() -> tuple[merkle.MemoryNodes, list[bytes]]:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(70000)]
    nodes = merkle.MemoryNodes()
    for h in leaves:
        nodes.append(h)
    return nodes, leaves


def _split(data: bytes) -> list[bytes]:
    assert len(data) % 32 == 0
    return [data[i : i + 32] for i in range(0, len(data), 32)]


def test_hash_tiles_are_ledger_merkle_hashes(
    tree70k: tuple[merkle.MemoryNodes, list[bytes]],
) -> None:
    nodes, leaves = tree70k
    size = 70000
    # level 0: the leaf hashes themselves, full and partial
    assert _split(tiles.hash_tile(nodes, Tile(0, 0), size)) == leaves[:256]
    assert _split(tiles.hash_tile(nodes, Tile(0, 273, 112), size)) == leaves[273 * 256 :]
    # level 1: each hash is the MTH of one full level-0 tile
    level1 = _split(tiles.hash_tile(nodes, Tile(1, 0), size))
    for j in (0, 1, 100, 255):
        assert level1[j] == merkle.root_from_leaf_hashes(leaves[j * 256 : (j + 1) * 256])
        assert level1[j] == merkle.root_from_leaf_hashes(
            _split(tiles.hash_tile(nodes, Tile(0, j), size))
        )
    partial1 = _split(tiles.hash_tile(nodes, Tile(1, 1, 17), size))
    assert partial1[16] == merkle.root_from_leaf_hashes(leaves[272 * 256 : 273 * 256])
    # level 2, width 1: the first 65,536 leaves
    assert tiles.hash_tile(nodes, Tile(2, 0, 1), size) == merkle.root_from_leaf_hashes(
        leaves[:65536]
    )
    # a partial tile is the prefix of the wider one
    assert (
        tiles.hash_tile(nodes, Tile(0, 3, 9), size)
        == tiles.hash_tile(nodes, Tile(0, 3), size)[: 9 * 32]
    )
    # and the right edge's tiles alone give the root: 70000 = 65536 + 4096 + 256 + 64 + 32 + 16
    last = _split(tiles.hash_tile(nodes, Tile(0, 273, 112), size))
    parts = [
        tiles.hash_tile(nodes, Tile(2, 0, 1), size),
        merkle.root_from_leaf_hashes(partial1[:16]),
        partial1[16],
        merkle.root_from_leaf_hashes(last[:64]),
        merkle.root_from_leaf_hashes(last[64:96]),
        merkle.root_from_leaf_hashes(last[96:]),
    ]
    root = parts.pop()
    while parts:
        root = merkle.node_hash(parts.pop(), root)
    assert root == nodes.root()


@pytest.mark.parametrize(
    ("tile", "size", "covered"),
    [
        (Tile(0, 0, 44), 300, True),
        (Tile(0, 0), 300, True),
        (Tile(0, 1, 44), 300, True),
        (Tile(0, 1, 45), 300, False),  # one hash past the tree
        (Tile(0, 1), 300, False),  # the full tile the store already holds
        (Tile(1, 0, 1), 300, True),
        (Tile(1, 0, 2), 300, False),
        (Tile(2, 0, 1), 65535, False),
        (Tile(63, 0, 1), 70000, False),
        (Tile(0, 10**20), 70000, False),
    ],
)
def test_only_what_the_tree_covers_is_read(
    tree70k: tuple[merkle.MemoryNodes, list[bytes]], tile: Tile, size: int, covered: bool
) -> None:
    """The store holds 70,000 leaves; a checkpoint of `size` serves only its own tree."""
    nodes, leaves = tree70k
    if covered:
        assert len(tiles.hash_tile(nodes, tile, size)) == 32 * tile.width
    else:
        with pytest.raises(NotFound, match="beyond the checkpoint's tree of size"):
            tiles.hash_tile(nodes, tile, size)


def test_entry_bundles_encode_and_decode_strictly() -> None:
    entries = [b"", b"a", bytes(range(256)) * 3, b"\xff" * 65535]
    data = tiles.encode_bundle(entries)
    assert data[:2] == b"\x00\x00" and data[2:5] == b"\x00\x01a"
    assert tiles.decode_bundle(data, width=4) == entries
    with pytest.raises(TooLarge, match="at most 65535"):
        tiles.encode_bundle([b"x", b"\x00" * 65536])
    with pytest.raises(MalformedTilePath, match="truncated"):
        tiles.decode_bundle(data[:-1])
    with pytest.raises(MalformedTilePath, match="length prefix"):
        tiles.decode_bundle(b"\x00")
    with pytest.raises(MalformedTilePath, match="holds 4 entries, not 5"):
        tiles.decode_bundle(data, width=5)


# ---------------------------------------------------------------- a real node


@dataclass
class Served:
    dir: Path
    consortium: Consortium
    node: Node
    old_note: str  # the checkpoint served at OLD_SIZE
    old_server: TileServer  # the same store served for the old checkpoint only

    @property
    def port(self) -> int:
        return self.node.tiles_port

    @property
    def ca(self) -> Path:
        return self.dir / "ca" / "ca.pem"


OLD_SIZE, SIZE = 40, 300


def _context(ca: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def _get(
    port: int,
    ca: Path,
    path: str,
    cert: tuple[Path, Path] | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=_context(ca, cert), timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp, resp.read()
    finally:
        conn.close()


def _creds(d: Path, pid: str, kind: str = "tls") -> tuple[Path, Path]:
    return d / pid / f"{kind}.pem", d / pid / f"{kind}.key"


def _wait_served(node: Node, size: int, cosignatures: int = 0) -> str:
    """The note the node serves once it is of `size` with `cosignatures` of its peers."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = node.log_checkpoint_note()
        if text is not None:
            parsed = note.Note.parse(text)
            cp = note.Checkpoint.parse_body(parsed.text)
            if cp.size == size and len(parsed.signatures) >= 1 + cosignatures:
                return text
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of size {size} with {cosignatures} cosignatures")


def _issue(node: Node, start: int, end: int) -> None:
    for i in range(start, end):
        node.core.issue(Mark(f"138{i:08d}", "fraud", 60))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A consortium of three nodes in-process, each on the ports `consortium
    init` gave it (tiles included); carrier-1's log grown to OLD_SIZE (the
    checkpoint it served then kept) and then to SIZE, cosigned by both peers."""
    d = tmp_path_factory.mktemp("tiles") / "c"
    cons = init_consortium(
        d, carriers=1, internet=1, base_port=free_port_block(9), now=datetime.now(UTC)
    )
    nodes = [
        Node(NodeConfig.for_participant(d, pid), sync_interval=0.2)
        for pid in ("carrier-1", "institute", "internet-1")
    ]
    node = nodes[0]
    old_server = None
    try:
        for n in nodes:
            n.start()
        _issue(node, 0, OLD_SIZE)
        old = _wait_served(node, OLD_SIZE)
        _issue(node, OLD_SIZE, SIZE)
        _wait_served(node, SIZE, cosignatures=cons.policy.cosign_quorum)
        old_text = node.core.ledger.checkpoint_at(OLD_SIZE)
        cfg = node.cfg
        old_server = TileServer(
            "127.0.0.1:0",
            checkpoint=lambda: old_text,
            source=node.core.ledger,
            consortium=cons,
            cert_file=cfg.tls_cert,
            key_file=cfg.tls_key,
            ca_pem=cfg.ca_cert.read_bytes(),
        )
        old_server.start()
        yield Served(d, cons, node, old, old_server)
    finally:
        if old_server is not None:
            old_server.stop()
        # Together: each waits for its peer links, which wait for the others.
        with ThreadPoolExecutor(len(nodes)) as ex:
            list(ex.map(lambda n: n.stop(grace=0.1), nodes))


def test_node_serves_its_log_checkpoint_uncached(served: Served) -> None:
    status, resp, body = _get(served.port, served.ca, "/checkpoint")
    assert status == 200
    assert resp.getheader("Content-Type") == "text/plain; charset=utf-8"
    assert resp.getheader("Cache-Control") == "no-store"
    # exactly what the node serves over gRPC (GetLogCheckpoint's note), its peers' cosignatures too
    assert body.decode() == served.node.log_checkpoint_note()
    signers = {s.name for s in note.Note.parse(body.decode()).signatures}
    assert signers == {
        log_origin(served.consortium.name, "carrier-1"),
        witness_name(served.consortium.name, "institute"),
        witness_name(served.consortium.name, "internet-1"),
    }
    p = served.consortium.participant("carrier-1")
    assert p is not None
    origin = log_origin(served.consortium.name, "carrier-1")
    cp = note.open_checkpoint(body.decode(), note.Verifier.for_key(origin, p.public_key))
    assert cp.size == SIZE and cp.root == merkle.root_at(served.node.core.ledger, SIZE)


def test_node_tiles_are_its_stored_hashes(served: Served) -> None:
    led = served.node.core.ledger
    envelopes = led.entries(0, SIZE)
    leaves = [merkle.leaf_hash(e) for e in envelopes]
    status, resp, full = _get(served.port, served.ca, "/tile/0/000")
    assert status == 200 and resp.getheader("Content-Type") == "application/octet-stream"
    assert resp.getheader("Cache-Control") == "public, max-age=31536000, immutable"
    assert _split(full) == leaves[:256] == [led.get_node(0, i) for i in range(256)]
    status, resp, part = _get(served.port, served.ca, "/tile/0/001.p/44")
    assert status == 200 and _split(part) == leaves[256:]
    assert "immutable" not in resp.getheader("Cache-Control", "")
    status, _, top = _get(served.port, served.ca, "/tile/1/000.p/1")
    assert status == 200 and top == merkle.root_from_leaf_hashes(leaves[:256])
    # HEAD: the headers of the GET, no body
    status, resp, body = _get(served.port, served.ca, "/tile/0/000", method="HEAD")
    assert status == 200 and body == b"" and resp.getheader("Content-Length") == "8192"


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/tile/0/001", 404, "beyond the checkpoint's tree of size 300"),
        ("/tile/0/001.p/45", 404, "beyond the checkpoint's tree of size 300"),
        ("/tile/1/000.p/2", 404, "beyond"),
        ("/tile/2/000.p/1", 404, "beyond"),
        ("/tile/0/x999/x999/x999/x999/x999/999", 404, "beyond"),
        ("/tile/00/000", 400, "level '00'"),
        ("/tile/0/000.p/256", 400, "width '256'"),
        ("/tile/8/0/000", 400, "index element"),
        ("/tile/0/x000/001", 400, "not canonical"),
        ("/tile/0/%2e%2e/000", 400, "index element"),
        ("/tile/" + "9" * 5000, 400, "at most 64 characters"),
        ("/", 404, "not a tlog-tiles path"),
        ("/etc/passwd", 404, "not a tlog-tiles path"),
    ],
)
def test_bad_and_uncovered_paths_get_one_line_reasons(
    served: Served, path: str, status: int, reason: str
) -> None:
    got, resp, body = _get(served.port, served.ca, path)
    assert got == status
    text = body.decode()
    assert reason in text and text.count("\n") == 1 and "Traceback" not in text
    assert resp.getheader("Content-Type") == "text/plain; charset=utf-8"


def test_tiles_follow_the_served_checkpoint_not_the_store(served: Served) -> None:
    """The same store (300 entries) served for its checkpoint of 40: nothing past 40."""
    port = served.old_server.port
    auditor = _creds(served.dir, "auditor-1")
    status, _, body = _get(port, served.ca, "/checkpoint")
    assert status == 200 and body.decode() == served.node.core.ledger.checkpoint_at(OLD_SIZE)
    assert _get(port, served.ca, "/tile/0/000.p/40")[0] == 200
    for path in ("/tile/0/000.p/41", "/tile/0/000", "/tile/entries/000.p/41"):
        status, _, body = _get(port, served.ca, path, cert=auditor)
        assert status == 404 and b"tree of size 40" in body
    status, _, bundle = _get(port, served.ca, "/tile/entries/000.p/40", cert=auditor)
    assert status == 200
    assert tiles.decode_bundle(bundle, 40) == served.node.core.ledger.entries(0, 40)


def test_entry_bundles_only_for_members_and_auditors(served: Served, tmp_path: Path) -> None:
    d = served.dir
    led = served.node.core.ledger
    status, _, body = _get(served.port, served.ca, "/tile/entries/000")
    assert status == 403 and b"members and auditors" in body
    # the operator's admin certificate is no member certificate
    status, _, body = _get(
        served.port, served.ca, "/tile/entries/000", _creds(d, "carrier-1", "admin")
    )
    assert status == 403 and b"not a member or auditor certificate" in body
    # a call centre's certificate screens calls and reads no records
    status, _, body = _get(served.port, served.ca, "/tile/entries/000",
                           _creds(d, "callcenter-1"))
    assert status == 403 and b"call centre" in body
    for who in ("auditor-1", "internet-1"):
        status, resp, bundle = _get(
            served.port, served.ca, "/tile/entries/001.p/44", _creds(d, who)
        )
        assert status == 200 and resp.getheader("Content-Encoding") is None
        entries = tiles.decode_bundle(bundle, 44)
        assert entries == led.entries(256, SIZE)
        assert [merkle.leaf_hash(e) for e in entries] == [
            led.get_node(0, i) for i in range(256, SIZE)
        ]
    # compressed when asked (the spec: entry bundles SHOULD be compressed at the HTTP layer)
    status, resp, packed = _get(
        served.port,
        served.ca,
        "/tile/entries/000",
        _creds(d, "auditor-1"),
        headers={"Accept-Encoding": "gzip"},
    )
    assert status == 200 and resp.getheader("Content-Encoding") == "gzip"
    assert tiles.decode_bundle(gzip.decompress(packed), 256) == led.entries(0, 256)
    # a certificate of another CA does not get through the handshake at all
    now = datetime.now(UTC)
    other_key, other_ca = make_ca("someone else", now)
    key, cert = make_node_cert(other_key, other_ca, "auditor-1", [], now)
    (tmp_path / "k.pem").write_bytes(key)
    (tmp_path / "c.pem").write_bytes(cert)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get(served.port, served.ca, "/tile/entries/000", (tmp_path / "c.pem", tmp_path / "k.pem"))


def test_other_methods_and_garbage_requests_get_one_line(served: Served) -> None:
    status, resp, body = _get(served.port, served.ca, "/tile/0/000", method="POST")
    assert status == 405 and resp.getheader("Allow") == "GET, HEAD"
    assert body == b"only GET and HEAD are served\n"
    # a request line that is not HTTP at all
    ctx = _context(served.ca)
    raw = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 400 ")
    assert "Traceback" not in reply and "<html" not in reply.lower()
    # a plain-text client talking to the TLS port changes nothing: the node still serves
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw:
        raw.sendall(b"GET /checkpoint HTTP/1.1\r\n\r\n")
        raw.settimeout(5)
        with contextlib.suppress(ConnectionError, TimeoutError):
            raw.recv(100)
    assert _get(served.port, served.ca, "/checkpoint")[0] == 200


def test_connections_are_bounded_and_freed(served: Served) -> None:
    """MAX_CONNECTIONS idle clients hold every slot: the next connection is
    closed at once (no thread, no handshake); once they leave, it is served."""
    idle = [
        socket.create_connection(("127.0.0.1", served.port), timeout=10)
        for _ in range(MAX_CONNECTIONS)
    ]
    try:
        time.sleep(0.3)  # every one accepted and waiting in its handshake
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            _get(served.port, served.ca, "/checkpoint")
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert _get(served.port, served.ca, "/checkpoint")[0] == 200
            break
        except (ssl.SSLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_answers_are_not_held_back_by_nagle(served: Served,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers and body are two writes: the connection handed to TLS has
    TCP_NODELAY, so the body never waits for the client's delayed ACK of the
    headers (about 40 ms a request on a kept-alive connection)."""
    assert served.node.tiles is not None
    ctx = served.node.tiles.tls_context
    seen: list[int] = []
    wrap = ctx.wrap_socket

    def recording(sock: socket.socket, **kw: Any) -> Any:
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return wrap(sock, **kw)

    monkeypatch.setattr(ctx, "wrap_socket", recording)
    assert _get(served.port, served.ca, "/checkpoint")[0] == 200
    assert seen and all(seen)


# ---------------------------------------------------------------- Go's tlog reads it

GO = shutil.which("go")
GOPATH = "/usr/share/gocode"
needs_go = pytest.mark.skipif(
    GO is None or not Path(GOPATH, "src/golang.org/x/mod/sumdb/tlog").is_dir(),
    reason="Go and Debian's golang-golang-x-mod-dev are needed (.ci/run installs them)",
)


@pytest.fixture(scope="module")
def go_tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/interop/tiles.go built once, offline, against Debian's golang.org/x/mod."""
    assert GO is not None
    out = tmp_path_factory.mktemp("go")
    env = dict(os.environ, GOPATH=GOPATH, GO111MODULE="off", GOFLAGS="", GOCACHE=str(out / "cache"))
    src = Path(__file__).parent / "interop" / "tiles.go"
    res = subprocess.run(
        [GO, "build", "-o", str(out / "tiles"), str(src)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return out / "tiles"


def _go(binary: Path, port: int, ca: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The Go tile reader against https://127.0.0.1:port."""
    return subprocess.run(
        [str(binary), "-url", f"https://127.0.0.1:{port}", "-ca", str(ca), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _vkey(served: Served, pid: str = "carrier-1") -> str:
    p = served.consortium.participant(pid)
    assert p is not None
    # the key name is carrier-1's log origin either way: only the key differs
    return note.Verifier.for_key(
        log_origin(served.consortium.name, "carrier-1"), p.public_key
    ).to_string()


@needs_go
def test_go_tlog_reads_the_nodes_tiles_and_checks_its_proofs(
    served: Served, go_tiles: Path, tmp_path: Path
) -> None:
    """golang.org/x/mod/sumdb/tlog, written elsewhere, reads the node's tiles
    over HTTPS through tlog.TileHashReader: the tree hash is the checkpoint's
    root, records are proven included, the checkpoint of 40 consistent with
    that of 300, and every entry of every bundle hashes to its leaf."""
    old = tmp_path / "old.checkpoint"
    old.write_text(served.old_note)
    auditor = _creds(served.dir, "auditor-1")
    res = _go(
        go_tiles,
        served.port,
        served.ca,
        "-vkey",
        _vkey(served),
        "-old",
        str(old),
        "-records",
        "0,1,39,40,255,256,299",
        "-cert",
        str(auditor[0]),
        "-key",
        str(auditor[1]),
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(
        f"ok size={SIZE} proved=7 consistent_from={OLD_SIZE} entries={SIZE} "
    ), res.stdout
    # without a certificate: the hashes and proofs still check; the entries are refused
    res = _go(go_tiles, served.port, served.ca, "-vkey", _vkey(served), "-records", "7")
    assert res.returncode == 0 and "proved=1" in res.stdout, res.stderr
    # another participant's key does not open carrier-1's checkpoint
    res = _go(go_tiles, served.port, served.ca, "-vkey", _vkey(served, "internet-1"))
    assert res.returncode == 1 and "note.Open" in res.stderr


@needs_go
@pytest.mark.parametrize(
    ("flipped", "error"),
    [
        ((8, 0), "TreeHash(300): downloaded inconsistent tile"),  # tile/1/000.p/1: the root
        ((0, 7), "CheckRecord(7 in 300): invalid transparency proof"),  # tile/0/000: a leaf
    ],
)
def test_go_tlog_refuses_tiles_that_disagree_with_the_checkpoint(
    served: Served, go_tiles: Path, flipped: tuple[int, int], error: str
) -> None:
    """The node's store read with one Merkle node changed under the served
    checkpoint: Go refuses, so the check above is not vacuous."""

    class Flipped:  # the real store, one stored node changed
        def get_node(self, level: int, index: int) -> bytes:
            h = served.node.core.ledger.get_node(level, index)
            return bytes([h[0] ^ 1]) + h[1:] if (level, index) == flipped else h

        def entries(self, start: int, end: int) -> list[bytes]:
            return served.node.core.ledger.entries(start, end)

    cfg = served.node.cfg
    bad = TileServer(
        "127.0.0.1:0",
        checkpoint=served.node.log_checkpoint_note,
        source=Flipped(),
        consortium=served.consortium,
        cert_file=cfg.tls_cert,
        key_file=cfg.tls_key,
        ca_pem=cfg.ca_cert.read_bytes(),
    )
    bad.start()
    try:
        res = _go(go_tiles, bad.port, served.ca, "-vkey", _vkey(served), "-records", "7")
    finally:
        bad.stop()
    assert res.returncode == 1 and error in res.stderr, res.stderr


# ---------------------------------------------------------------- node.toml


def test_consortium_init_gives_each_node_its_own_tiles_port(tmp_path: Path) -> None:
    d = tmp_path / "c"
    init_consortium(d, carriers=2, internet=1, base_port=9000, now=datetime.now(UTC))
    ports = {}
    for pid in ("institute", "carrier-1", "carrier-2", "internet-1"):
        obj = tomllib.loads((d / pid / "node.toml").read_text())
        ports[pid] = obj["tiles_listen"]
        assert NodeConfig.for_participant(d, pid).tiles_listen == obj["tiles_listen"]
    # after the 2 x 4 gRPC ports 9000..9007, in node order
    assert ports == {
        "institute": "127.0.0.1:9008",
        "carrier-1": "127.0.0.1:9009",
        "carrier-2": "127.0.0.1:9010",
        "internet-1": "127.0.0.1:9011",
    }
    # five nodes need 20 ports now (gRPC, tiles, metrics): a base that left room for ten
    with pytest.raises(ConfigError, match=r"need ports 65522\.\.65541, past 65535"):
        init_consortium(
            tmp_path / "e", carriers=3, internet=1, base_port=65522, now=datetime.now(UTC)
        )


def test_node_toml_tiles_listen_is_optional_and_checked(tmp_path: Path) -> None:
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, base_port=9000, now=datetime.now(UTC))
    path = d / "carrier-1" / "node.toml"
    text = path.read_text()
    older = "".join(
        line + "\n" for line in text.splitlines() if not line.startswith("tiles_listen")
    )
    path.write_text(older)
    assert NodeConfig.load(path).tiles_listen == ""  # a file from before: tiles off
    for value, why in (
        ('"no-port"', "'tiles_listen' must be HOST:PORT"),
        ("7", "'tiles_listen' must be a str"),
        ('"h\\u0000:1"', "NUL byte"),
    ):
        path.write_text(older + f"tiles_listen = {value}\n")
        with pytest.raises(ConfigError, match=why):
            NodeConfig.load(path)


def test_a_busy_tiles_port_names_the_key_and_the_node_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, base_port=free_port_block(6), now=datetime.now(UTC))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = dataclasses.replace(
            NodeConfig.for_participant(d, "carrier-1"),
            member_listen="127.0.0.1:0",
            public_listen="127.0.0.1:0",
            tiles_listen=f"127.0.0.1:{busy.getsockname()[1]}",
            data_dir=tmp_path / "data",
        )
        caplog.set_level("WARNING", logger="markex.tiles")
        node = Node(cfg).start()
        try:
            assert node.tiles_port == 0 and node.public_port > 0
        finally:
            node.stop()
    warned = [
        json.loads(r.getMessage()) for r in caplog.records if "tiles-not-started" in r.getMessage()
    ]
    assert warned and warned[0]["fix"].startswith(
        "change the key tiles_listen in carrier-1/node.toml"
    )


# ---------------------------------------------------------------- grpcurl (docs/grpcurl.md)


class Reflected:
    """What grpcurl does with a server it knows nothing of: ask the reflection
    service for names and file descriptors, build a descriptor pool of its own
    from them (never this process's generated code), and make calls with
    messages built from JSON."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.pool = descriptor_pool.DescriptorPool()
        self._stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        self._added: set[str] = set()

    def _ask(self, **what: str) -> reflection_pb2.ServerReflectionResponse:
        req = reflection_pb2.ServerReflectionRequest(**what)
        (resp,) = list(self._stub.ServerReflectionInfo(iter([req]), timeout=10))
        if resp.HasField("error_response"):
            raise LookupError(resp.error_response.error_message)
        return resp

    def list(self) -> list[str]:
        """grpcurl ... list"""
        resp = self._ask(list_services="")
        return sorted(s.name for s in resp.list_services_response.service)

    def _add_files(self, blobs: list[bytes]) -> None:
        protos = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in blobs]
        by_name = {p.name: p for p in protos}
        for p in protos:
            self._add(p, by_name)

    def _add(self, proto: descriptor_pb2.FileDescriptorProto, known: dict) -> None:
        if proto.name in self._added:
            return
        for dep in proto.dependency:  # dependencies first, fetched by file name if not sent
            if dep not in self._added:
                if dep not in known:
                    blobs = self._ask(file_by_filename=dep).file_descriptor_response
                    for b in blobs.file_descriptor_proto:
                        p = descriptor_pb2.FileDescriptorProto.FromString(b)
                        known[p.name] = p
                self._add(known[dep], known)
        self.pool.Add(proto)
        self._added.add(proto.name)

    def describe(self, symbol: str) -> Any:
        """grpcurl ... describe SYMBOL: the service (or message) descriptor."""
        resp = self._ask(file_containing_symbol=symbol)
        self._add_files(list(resp.file_descriptor_response.file_descriptor_proto))
        try:
            return self.pool.FindServiceByName(symbol)
        except KeyError:
            return self.pool.FindMessageTypeByName(symbol)

    def call(self, method: str, request_json: str) -> dict:
        """grpcurl -d JSON ... SERVICE/METHOD"""
        service_name, name = method.split("/")
        m = self.describe(service_name).FindMethodByName(name)
        req_cls = message_factory.GetMessageClass(m.input_type)
        resp_cls = message_factory.GetMessageClass(m.output_type)
        req = json_format.Parse(request_json, req_cls())
        call = self.channel.unary_unary(
            f"/{service_name}/{name}",
            request_serializer=lambda x: x.SerializeToString(),
            response_deserializer=resp_cls.FromString,
        )
        return json_format.MessageToDict(call(req, timeout=10))


def _public_channel(served: Served, authority: str | None = None) -> grpc.Channel:
    """grpcurl -cacert DIR/ca/ca.pem [-authority NAME] 127.0.0.1:PORT"""
    creds = grpc.ssl_channel_credentials(served.ca.read_bytes())
    opts = [] if authority is None else [("grpc.ssl_target_name_override", authority)]
    return grpc.secure_channel(f"127.0.0.1:{served.node.public_port}", creds, options=opts)


def test_public_port_answers_what_grpcurl_asks(served: Served) -> None:
    """docs/grpcurl.md's commands: list, describe, the health check and a
    Lookup, each built from reflection alone, over TLS with the CA file."""
    number = "13800000007"
    with _public_channel(served) as ch:
        r = Reflected(ch)
        assert r.list() == [
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            "markex.v1.Public",
        ]
        public = r.describe("markex.v1.Public")
        assert [m.name for m in public.methods] == [
            "GetLogCheckpoint",
            "GetInclusionProof",
            "GetConsistencyProof",
            "GetFeedHeads",
            "Lookup",
            "LookupBatch",
            "GetViewCheckpoint",
            "GetBadList",
            "WatchView",
        ]
        req = r.describe("markex.v1.LookupRequest")
        assert [f.name for f in req.fields] == ["number", "at_ms"]
        for service in ("", "markex.v1.Public"):
            health = r.call("grpc.health.v1.Health/Check", json.dumps({"service": service}))
            assert health == {"status": "SERVING"}
        cp = r.call("markex.v1.Public/GetLogCheckpoint", "{}")
        assert cp["note"] == served.node.log_checkpoint_note() and cp["size"] == str(SIZE)
        deadline = time.monotonic() + 20
        while True:  # the view signs its checkpoint on the node's tick
            try:
                got = r.call("markex.v1.Public/Lookup", json.dumps({"number": number}))
                break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert got["number"] == "+86" + number and got["entry"] and got["viewCheckpoint"]
        # a request field that does not exist is refused before anything is sent, as grpcurl does
        with pytest.raises(json_format.ParseError, match="nmber"):
            r.call("markex.v1.Public/Lookup", '{"nmber": "1"}')


def test_public_port_authority_names_the_participant(served: Served) -> None:
    """-authority carrier-1.participant.markex.invalid accepts only carrier-1's
    certificate; without the consortium CA file nothing is trusted."""
    for name, ok in (
        (participant_dns_name("carrier-1"), True),
        ("localhost", True),
        (participant_dns_name("internet-1"), False),
    ):
        with _public_channel(served, name) as ch:
            check = health_pb2_grpc.HealthStub(ch).Check
            if ok:
                assert check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
            else:
                with pytest.raises(grpc.RpcError) as ei:
                    check(health_pb2.HealthCheckRequest(), timeout=10)
                assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    # the system's roots do not know the consortium CA
    with grpc.secure_channel(
        f"127.0.0.1:{served.node.public_port}", grpc.ssl_channel_credentials()
    ) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
