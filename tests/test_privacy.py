"""A subscriber's number in a preference never leaves the member side in
clear (issue 15, "Privacy"; docs/consent.md). With preferences issued at real
in-process nodes, every public answer is searched for the subscriber's
numbers, E.164 ("+8613...") and national ("13..."): every Public RPC
(checkpoints, feed heads, lookups of the subscribers and of others, batches,
every inclusion proof and a consistency proof), the tiles server without a
certificate (the checkpoint and hash tiles; entry bundles are refused), the
web front end's pages and /api/v1, and `markex view export`. A lookup of a
subscriber's own number echoes the number asked and must otherwise say what
it says of a number nobody ever named. On the member side the log's
envelopes hold the number only sealed: its clear forms are in no byte of any
node's store, and the sealed value is (the search is not vacuous)."""

from __future__ import annotations

import contextlib
import http.client
import io
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keys.sealing import MembersKey
from ledger import note
from ledger.sealing import KEY_FILE
from ledger.store import COLUMN_FAMILIES
from markex.v1 import service_pb2 as pb
from node.cli import main
from node.connect import TlsConnect
from node.web.app import create_app
from node.web.publish import bp as publish
from node.web.ratelimit import RateLimit
from node.webcli import node_reader
from tests.test_cli import InProcessNet

pytestmark = pytest.mark.timeout(240)

REFUSES_TWO = "+8613812340001"   # refuses real-estate and finance, through carrier-1
REFUSES_ALL = "+8613812340002"   # refuses every marketing call, through the institute
REVOKED = "+8613812340003"       # refused insurance, then revoked
SUBSCRIBERS = (REFUSES_TWO, REFUSES_ALL, REVOKED)
MARKED = "+8613812349001"        # a marked number: the view has something to show
NEVER = "+8613812349999"         # nobody ever named it
LINE = "+864001234567"           # a marketer's line (a business number: public)


def forms(number: str) -> tuple[bytes, ...]:
    """The clear forms searched for: E.164 and the national form."""
    return number.encode(), number.removeprefix("+86").encode()


def leaks(blob: bytes | str, numbers: tuple[str, ...] = SUBSCRIBERS) -> list[str]:
    raw = blob.encode() if isinstance(blob, str) else blob
    return [n for n in numbers if any(f in raw for f in forms(n))]


@dataclass
class Net:
    net: InProcessNet
    sealed: dict[str, bytes]   # subscriber -> its sealed value

    @property
    def dir(self) -> Path:
        return self.net.dir


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv])
    assert code == 0, argv
    return out.getvalue()


def _cosigned_views(net: InProcessNet, timeout: float = 60) -> None:
    """Until every node's view checkpoint carries the cosignature quorum and one root."""
    need = net.consortium.policy.cosign_quorum
    deadline = time.monotonic() + timeout
    while True:
        notes = [net.public(p).GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=5).note
                 for p in net.ids]
        parsed = [note.Note.parse(t) for t in notes]
        bodies = {tuple(n.text.split("\n")[1:4]) for n in parsed}  # entries, root, vector
        if all(len(n.signatures) > need for n in parsed) and len(bodies) == 1:
            return
        assert time.monotonic() < deadline, (need, [len(n.signatures) for n in parsed], bodies)
        time.sleep(0.3)


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    net = InProcessNet(tmp_path_factory.mktemp("privacy") / "c", carriers=1, internet=1,
                       sync_interval=0.2)
    net.start_all()
    try:
        c = ["--consortium", str(net.dir), "--json"]
        net.mark("internet-1", MARKED, "real-estate", 70, 20)
        _cli("prefer", "--as", "carrier-1", REFUSES_TWO, "--refuse", "real-estate,finance", *c)
        _cli("prefer", "--as", "institute", REFUSES_ALL.removeprefix("+86"), "--refuse", "all",
             "--modes", "voice", "--hours", "09-12", "--days", "weekend", *c)
        _cli("prefer", "--as", "carrier-1", REVOKED, "--refuse", "insurance", *c)
        _cli("prefer", "--as", "carrier-1", REVOKED, "--refuse", "none", *c)
        _cli("line", "register", "--as", "carrier-1", LINE, "--enterprise", "安家房产",
             "--uscc", "91110000100000000R", "--industry", "real-estate", *c)
        net.wait_converged(timeout=60)
        _cosigned_views(net)
        key = MembersKey.load(net.dir / "carrier-1" / KEY_FILE)
        yield Net(net, {n: key.seal(n) for n in SUBSCRIBERS})
    finally:
        net.stop_all()


def _clean(blob: bytes, n: Net) -> None:
    assert not leaks(blob), leaks(blob)
    for number, sealed in n.sealed.items():
        assert sealed not in blob, f"{number}'s sealed value is public"


# ------------------------------------------------------------------ the public gRPC port


def test_no_public_rpc_answer_holds_a_subscriber_number(issued: Net) -> None:
    net = issued.net
    for pid in net.ids:
        pub = net.public(pid)
        cp = pub.GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=10)
        answers: list[Any] = [
            cp,
            pub.GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=10),
            pub.GetFeedHeads(pb.FeedHeadsRequest(), timeout=10),
            pub.GetConsistencyProof(pb.GetConsistencyProofRequest(old_size=1, new_size=cp.size),
                                    timeout=10),
            pub.Lookup(pb.LookupRequest(number=MARKED), timeout=10),
            pub.Lookup(pb.LookupRequest(number=NEVER), timeout=10),
            pub.LookupBatch(pb.LookupBatchRequest(numbers=[MARKED, NEVER, LINE],
                                                  with_proofs=True), timeout=10),
        ]
        answers += [pub.GetInclusionProof(pb.GetInclusionProofRequest(index=i, size=cp.size),
                                          timeout=10) for i in range(cp.size)]
        for a in answers:
            _clean(a.SerializeToString(), issued)


def test_a_lookup_of_a_subscriber_says_what_it_says_of_a_number_nobody_named(
    issued: Net,
) -> None:
    """Only the number asked is echoed: no entry, and nothing else of it."""
    pub = issued.net.public("carrier-1")
    never = pub.Lookup(pb.LookupRequest(number=NEVER), timeout=10)
    assert never.entry == b""
    for n in SUBSCRIBERS:
        for asked in (n, n.removeprefix("+86")):
            got = pub.Lookup(pb.LookupRequest(number=asked), timeout=10)
            assert got.number == n and got.entry == b""
            got.number = ""  # the echo of what was asked
            _clean(got.SerializeToString(), issued)
        batch = pub.LookupBatch(pb.LookupBatchRequest(numbers=[n], with_proofs=True), timeout=10)
        [r] = batch.results
        assert r.entry == b"" and r.number == n
        r.number = ""
        _clean(batch.SerializeToString(), issued)


# ------------------------------------------------------------------ tiles


def _tiles_get(port: int, ca: Path, path: str) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(ca))  # no client certificate: the public
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_the_tiles_server_shows_the_public_hashes_and_no_entries(issued: Net) -> None:
    net = issued.net
    ca = net.dir / "ca" / "ca.pem"
    for node in net.nodes_running:
        port = node.tiles_port
        status, body = _tiles_get(port, ca, "/checkpoint")
        assert status == 200
        _clean(body, issued)
        size = note.Checkpoint.parse_body(note.Note.parse(body.decode()).text).size
        width = size % 256 or 256
        tile = "/tile/0/000" + (f".p/{width}" if width < 256 else "")
        status, body = _tiles_get(port, ca, tile)
        assert status == 200 and len(body) == 32 * width
        _clean(body, issued)
        status, body = _tiles_get(port, ca, "/tile/entries/000" + (
            f".p/{width}" if width < 256 else ""))
        assert status == 403, body


# ------------------------------------------------------------------ the web front end


def test_the_web_pages_and_api_show_nothing_of_a_preference(issued: Net) -> None:
    net = issued.net
    with TlsConnect() as tls:
        reader = node_reader(net.dir, net.consortium, "carrier-1", "carrier-1", tls)
        app = create_app(net.consortium, reader, rate=RateLimit(per_minute=0),
                         blueprints=[publish])
        client = app.test_client()
        for path in ("/", "/stats", "/api/v1/stats", "/api/v1/consortium",
                     "/export/latest.csv", "/export/latest.jsonl", f"/numbers/{MARKED}",
                     f"/api/v1/numbers/{MARKED}", f"/numbers/{NEVER}",
                     f"/api/v1/numbers/{NEVER}", f"/numbers/{LINE}"):
            resp = client.get(path)
            assert resp.status_code == 200, path
            _clean(resp.data, issued)
        never = client.get(f"/api/v1/numbers/{NEVER}").get_json()
        for n in SUBSCRIBERS:
            page = client.get(f"/api/v1/numbers/{n}").get_json()
            # the subscriber's page: no entry, no records, the keys of a never-named number
            assert page["entry"] in ("", None) and page["records"] == []
            assert set(page) == set(never)
            html = client.get(f"/numbers/{n}").data.decode()
            for word in ("real-estate", "finance", "insurance", "refus", "prefer", "房产中介"):
                assert word not in html, (n, word)


# ------------------------------------------------------------------ the published view


def test_the_view_export_holds_no_subscriber(issued: Net, tmp_path: Path) -> None:
    net = issued.net
    out = tmp_path / "view.jsonl"
    _cli("view", "export", "--consortium", str(net.dir), "--node", "carrier-1", "--as",
         "carrier-1", "--format", "jsonl", "--out", str(out))
    data = out.read_bytes()
    assert forms(MARKED)[0] in data  # the export does hold the view
    _clean(data, issued)


# ------------------------------------------------------------------ the member side


def test_records_hold_the_number_only_sealed_in_every_store(issued: Net) -> None:
    net = issued.net
    for node in net.nodes_running:
        store = node.core.ledger.store
        seen_sealed = set()
        for cf in COLUMN_FAMILIES:
            for k, v in store.scan_iter(cf, b""):
                assert not leaks(k + v), (node.participant_id, cf, leaks(k + v))
                seen_sealed |= {n for n, s in issued.sealed.items() if s in k + v}
        assert seen_sealed == set(SUBSCRIBERS), node.participant_id  # not a vacuous search
    # and what members read of the log: the envelopes, sealed
    audit = net.audit("carrier-1", "auditor-1")
    size = net.log_size("carrier-1")
    blob = b"".join(audit.GetEntries(pb.GetEntriesRequest(start=0, end=size), timeout=10)
                    .envelopes)
    assert not leaks(blob)
    assert all(s in blob for s in issued.sealed.values())
