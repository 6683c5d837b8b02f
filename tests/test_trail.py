"""`markex trail` against real nodes in this process (their TLS ports): a
number's trail goes mark, appeal, upheld decision, reassignment, in causal
order, each record proven in the node's cosigned log checkpoint, the same
on every node; a bent inclusion proof, a record left out and a record of
another number slipped in are refused (exit 1) and say why; the causal
order of ledger/trail.py on records whose times disagree with their links."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from keys.layout import NodeConfig
from ledger.record import Correction, Mark, Record
from ledger.trail import causal_order, kind_in_trail
from markex.v1 import service_pb2 as pb
from node.cli import main
from node.connect import Dial, Need, TlsConnect
from tests.conftest import KEYS, NAME, NOW, stop_nodes
from tests.test_export import InProcessNet

pytestmark = pytest.mark.timeout(240)

NUMBER = "+8613812340077"
OTHER = "+8613812340078"
NODES = ("institute", "carrier-1", "internet-1")


def run_cli(net: InProcessNet, *argv: str, connect: Any = None) -> tuple[int, Any, str]:
    """`markex ARGV --json` against `net`: (exit code, the JSON printed, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, *_pinned(net), "--json"], connect=connect)
    text = out.getvalue()
    return code, (json.loads(text) if text.strip() else None), err.getvalue()


def _pinned(net: InProcessNet) -> list[str]:
    """--consortium and --institute-key of `net` (no environment: other modules' nodes
    run in this process too)."""
    key = NodeConfig.for_participant(net.dir, "institute").institute_key
    return ["--consortium", str(net.dir), "--institute-key", base64.b64encode(key).decode()]


def _issue(net: InProcessNet, *argv: str) -> str:
    code, obj, err = run_cli(net, *argv)
    assert code == 0, err
    return str(obj["id"])


def _all_in(net: InProcessNet, ids: list[str]) -> None:
    """Every node's cosigned log and view checkpoints hold every record of `ids`."""
    for pid in NODES:
        code, _, err = run_cli(net, "node", "wait", "--node", pid, "--timeout", "60",
                               *[a for i in ids for a in ("--for", i)])
        assert code == 0, err


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@pytest.fixture(scope="module")
def chain(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InProcessNet, dict[str, str]]]:
    """Three nodes: NUMBER marked by internet-1, appealed by carrier-1, the
    appeal upheld by the institute, the number reassigned by carrier-1; OTHER
    marked by internet-1 and by carrier-1; every record in every node's
    cosigned log and view."""
    net = InProcessNet(tmp_path_factory.mktemp("trail") / "c", carriers=1, internet=1,
                       sync_interval=0.2)
    net.start_all()
    try:
        ids = {"mark": _issue(net, "mark", "--as", "internet-1", NUMBER, "fraud"),
               "other": _issue(net, "mark", "--as", "internet-1", OTHER, "fraud"),
               "other2": _issue(net, "mark", "--as", "carrier-1", OTHER, "harassment")}
        net.wait_converged(timeout=30)
        ids["appeal"] = _issue(net, "correct", "--as", "carrier-1", ids["mark"],
                               "--withdraw", "--reason", "a hospital's line")
        net.wait_converged(timeout=30)
        ids["decision"] = _issue(net, "decide", "--as", "institute", ids["appeal"], "--uphold")
        ids["reassignment"] = _issue(net, "reassign", "--as", "carrier-1", NUMBER,
                                     "--at", _now_iso())
        net.wait_converged(timeout=30)
        _all_in(net, list(ids.values()))
        yield net, ids
    finally:
        net.stop_all()


# ------------------------------------------------------------------ the trail


@pytest.mark.parametrize("node", NODES)
def test_the_trail_is_mark_appeal_decision_reassignment_proven_on_every_node(
    chain: tuple[InProcessNet, dict[str, str]], node: str
) -> None:
    net, ids = chain
    code, out, err = run_cli(net, "trail", "--node", node, "138 1234 0077")
    assert code == 0, err
    assert out["number"] == NUMBER and out["verified"] is True
    recs = out["records"]
    assert [r["kind"] for r in recs] == ["mark", "appeal", "decision", "reassignment"]
    assert [r["id"] for r in recs] == [ids["mark"], ids["appeal"], ids["decision"],
                                       ids["reassignment"]]
    assert [r["issuer"] for r in recs] == ["internet-1", "carrier-1", "institute", "carrier-1"]
    assert all(r["verified"] for r in recs)
    assert recs[1]["names"] == [ids["mark"]] and recs[2]["names"] == [ids["appeal"]]
    assert recs[2]["outcome"] == "uphold" and recs[0]["category"] == "fraud"
    # Each index is where the record sits in that node's log, below the checkpoint's size.
    size = out["checkpoint"]["size"]
    audit = net.audit(node)
    for r in recs:
        got = audit.GetRecord(pb.GetRecordRequest(id=bytes.fromhex(r["id"])))
        assert r["index"] == got.index < size
    assert out["checkpoint"]["node"] == node and len(out["checkpoint"]["cosigned_by"]) >= 1
    # No free text: the appeal's reason stays out of the trail.
    assert "hospital" not in json.dumps(out)


def test_a_number_nobody_marked_has_an_empty_proven_trail(
    chain: tuple[InProcessNet, dict[str, str]]
) -> None:
    net, _ = chain
    code, out, err = run_cli(net, "trail", "--node", "carrier-1", "+8613812340099")
    assert code == 0, err
    assert out["records"] == [] and out["verified"] is True


def test_the_trail_as_text(chain: tuple[InProcessNet, dict[str, str]]) -> None:
    net, ids = chain
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["trail", "--node", "internet-1", NUMBER, *_pinned(net)])
    assert code == 0
    text = buf.getvalue()
    assert ids["decision"][:16] in text and "appeal" in text and "verified: yes" in text


# ------------------------------------------------------------------ refusals


class Bending:
    """The real connections, with the node's GetTrail answer changed by `bend`."""

    def __init__(self, bend: Callable[[pb.Trail], None]) -> None:
        self.real = TlsConnect()
        self.bend = bend

    def __call__(self, need: Need, dial: Dial) -> Any:
        stub = self.real(need, dial)
        if need != "audit":
            return stub
        outer = self

        class Audit:
            def __getattr__(self, name: str) -> Any:
                return getattr(stub, name)

            def GetTrail(self, request: Any, **kw: Any) -> pb.Trail:  # noqa: N802
                got = stub.GetTrail(request, **kw)
                outer.bend(got)
                return got

        return Audit()


def _bent_proof(t: pb.Trail) -> None:
    r = max(t.records, key=lambda r: len(r.path))
    h = bytearray(r.path[0])
    h[0] ^= 1
    r.path[0] = bytes(h)


def _dropped(t: pb.Trail) -> None:
    del t.records[0]


def _index_moved(t: pb.Trail) -> None:
    t.records[0].index = (t.records[0].index + 1) % t.size


REFUSALS = [
    (_bent_proof, "ProofMismatch"),
    (_dropped, "IncompleteTrail"),
    (_index_moved, "Proof"),        # ProofMismatch, or MalformedProof when its length is off
]


@pytest.mark.parametrize("bend,why", REFUSALS, ids=["bent proof", "dropped", "index moved"])
def test_a_bent_answer_is_refused(
    chain: tuple[InProcessNet, dict[str, str]], bend: Callable[[pb.Trail], None], why: str
) -> None:
    net, _ = chain
    c = Bending(bend)
    code, out, err = run_cli(net, "trail", "--node", "carrier-1", NUMBER, connect=c)
    c.real.close()
    assert code == 1 and out is None
    assert why in err and "does not verify" in err


def test_a_record_of_another_number_slipped_in_is_refused(
    chain: tuple[InProcessNet, dict[str, str]]
) -> None:
    net, ids = chain
    other = net.audit("carrier-1").GetRecord(pb.GetRecordRequest(id=bytes.fromhex(ids["other"])))

    def slip(t: pb.Trail) -> None:
        t.records.add(envelope=other.envelope, index=other.index)

    c = Bending(slip)
    code, _, err = run_cli(net, "trail", "--node", "carrier-1", NUMBER, connect=c)
    c.real.close()
    assert code == 1 and "NotAboutNumber" in err and ids["other"][:16] in err


def test_the_answer_about_another_number_is_refused(
    chain: tuple[InProcessNet, dict[str, str]]
) -> None:
    net, _ = chain
    other = net.audit("carrier-1").GetTrail(pb.TrailRequest(number=OTHER, size=1))

    def swap(t: pb.Trail) -> None:
        t.lookup.CopyFrom(other.lookup)

    c = Bending(swap)
    code, _, err = run_cli(net, "trail", "--node", "carrier-1", NUMBER, connect=c)
    c.real.close()
    assert code == 1 and "WrongNumber" in err


def test_a_bad_number_changes_nothing_and_says_so(
    chain: tuple[InProcessNet, dict[str, str]]
) -> None:
    net, _ = chain
    code, _, err = run_cli(net, "trail", "--node", "carrier-1", "not-a-number")
    assert code == 2 and "number" in err


# ------------------------------------------------------------------ causal order (pure)


def _rec(pid: str, seq: int, at: int, payload: Any) -> Record:
    prev = b"" if seq == 1 else b"\x00" * 32  # links are not checked here
    return Record.issue(KEYS[pid], pid, seq, prev, at, payload, consortium=NAME)


def test_causal_order_puts_a_record_after_what_it_names_whatever_its_time() -> None:
    mark = _rec("internet-1", 1, NOW, Mark("+8613812340077", "fraud"))
    # The appellant's clock runs behind: its appeal is issued "before" the mark.
    appeal = _rec("carrier-1", 1, NOW - 5000, Correction(targets=(mark.id,), action="withdraw"))
    decision = _rec("institute", 1, NOW - 9000,
                    Correction(appeal_id=appeal.id, outcome="uphold"))
    pull = _rec("carrier-1", 2, NOW - 4000, Correction(targets=(appeal.id,), action="withdraw"))
    tie_a = _rec("carrier-2", 1, NOW + 1, Mark("+8613812340077", "fraud"))
    tie_b = _rec("carrier-1", 3, NOW + 1, Mark("+8613812340077", "fraud"))
    got = causal_order([tie_a, decision, pull, tie_b, appeal, mark])
    assert got == [mark, appeal, decision, pull, tie_b, tie_a]
    by_id = {r.id: r for r in got}
    assert [kind_in_trail(r, by_id) for r in got] == [
        "mark", "appeal", "decision", "withdrawal", "mark", "mark"]
    own = _rec("internet-1", 2, NOW + 2, Correction(targets=(mark.id,), action="withdraw"))
    assert kind_in_trail(own, {**by_id, own.id: own}) == "correction"
    # Without what it names, a record is ordered by time alone.
    assert causal_order([appeal, tie_a]) == [appeal, tie_a]


# ------------------------------------------------------------------ the web front end


@pytest.fixture(scope="module")
def web(chain: tuple[InProcessNet, dict[str, str]]) -> Iterator[Any]:
    """The front end of carrier-1 (read as carrier-1), as `markex web` builds it."""
    from node.web.app import create_app
    from node.web.ratelimit import RateLimit
    from node.webcli import node_reader

    net, _ = chain
    tls = TlsConnect()
    try:
        reader = node_reader(net.dir, net.consortium, "carrier-1", "carrier-1", tls)
        yield create_app(net.consortium, reader, rate=RateLimit(per_minute=0)).test_client()
    finally:
        tls.close()


def test_the_number_page_links_to_its_trail_page(
    chain: tuple[InProcessNet, dict[str, str]], web: Any
) -> None:
    net, ids = chain
    page = web.get(f"/numbers/{NUMBER}").get_data(as_text=True)
    assert f'href="/numbers/{NUMBER}/trail"' in page
    r = web.get(f"/numbers/{NUMBER}/trail")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert 'data-verified="yes"' in html and "hospital" not in html
    rows = [html.index(f'data-id="{ids[k]}"') for k in ("mark", "appeal", "decision",
                                                        "reassignment")]
    assert rows == sorted(rows)                      # in causal order
    assert ids["other"] not in html                  # another number's records stay out
    api = web.get(f"/api/v1/numbers/{NUMBER}/trail").get_json()
    _, cli, _ = run_cli(net, "trail", "--node", "carrier-1", NUMBER)
    assert api["verified"] and [x["id"] for x in api["records"]] == \
        [x["id"] for x in cli["records"]]
    assert all(not k.startswith("complainant") for x in api["records"] for k in x)


def test_the_trail_page_normalizes_refuses_and_says_why(web: Any) -> None:
    r = web.get("/numbers/13812340077/trail")
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/numbers/{NUMBER}/trail")
    assert web.get("/numbers/not-a-number/trail").status_code == 400
    assert web.get("/api/v1/numbers/not-a-number/trail").get_json()["status"] == 400
    empty = web.get("/api/v1/numbers/+8613812340099/trail").get_json()
    assert empty["records"] == [] and empty["verified"] is True


def test_without_a_member_credential_there_is_no_trail(
    chain: tuple[InProcessNet, dict[str, str]]
) -> None:
    from node.web.app import create_app
    from node.web.ratelimit import RateLimit
    from node.web.report import NodeReader

    net, _ = chain
    app = create_app(net.consortium, NodeReader("carrier-1", net.public("carrier-1")),
                     rate=RateLimit(per_minute=0))
    r = app.test_client().get(f"/api/v1/numbers/{NUMBER}/trail")
    assert r.status_code == 503 and "member credential" in r.get_json()["error"]


# ------------------------------------------------------------------ complaints (pure)
# A trail built in memory (tests/test_complaints.py's consortium, with the
# complaints centre and the regulator): the view, its cosigned checkpoint, a
# log of every record; what a node's GetTrail answers, then ledger/trail.py.

T = NOW - 48 * 3_600_000
HOUR = 3_600_000


class Book:
    """Signed records on their feeds (test_complaints's consortium), their log,
    the view over them, a cosigned view checkpoint at NOW."""

    def __init__(self) -> None:
        from tests import test_complaints as TC

        self.TC = TC
        self.cons = TC.CONS
        self.feeds = TC.Feeds()
        self.keys = TC.KEYS

    def issue(self, issuer: str, payload: Any, at: int) -> Record:
        return self.feeds.issue(issuer, payload, at)

    def answer(self, number: str, linked: list[Record], drop: int | None = None) -> Any:
        """(answer, proven records, log size, log root) as a node would give them."""
        from ledger import merkle, note
        from ledger.names import view_origin, witness_name
        from ledger.trail import Proven, ids_of_entry
        from ledger.view import resolve, sign_view_checkpoint

        recs = self.feeds.records
        view = resolve(recs, self.cons)
        cp = view.checkpoint(view_origin(self.cons.name, "institute"), NOW)
        text = note.add_signature_lines(
            sign_view_checkpoint(cp, self.keys["institute"]),
            [note.cosign_line(cp.body(), witness_name(self.cons.name, p), self.keys[p],
                              NOW // 1000) for p in ("carrier-1", "carrier-2")])
        entry = view.entry(number)
        resp = pb.LookupResponse(number=number, entry=view.entry_bytes(number) or b"",
                                 proof=view.proof(number).encode(), view_checkpoint=text)
        log = merkle.MemoryNodes()
        for r in recs:
            log.append(merkle.leaf_hash(r.envelope))
        want = ids_of_entry(entry) | {r.id for r in linked}
        given = [Proven(r.envelope, i, tuple(merkle.inclusion_proof(log, i, log.size)))
                 for i, r in enumerate(recs) if r.id in want]
        if drop is not None:
            del given[drop]
        return resp, given, log.size, log.root()


@pytest.fixture
def complained() -> tuple[Book, dict[str, Record]]:
    """C1_NUMBER, registered as an enterprise's marketing line, complained of
    at the centre; carrier-1 confirms it with a mark; internet-1 appeals the
    mark and the institute upholds the appeal; the regulator lists the
    enterprise. Another number's complaint and a second line stay apart."""
    from ledger.payloads import MarketerLine

    b = Book()
    TC = b.TC
    num = TC.C1_NUMBER
    r: dict[str, Record] = {}
    r["line"] = b.issue("carrier-1", MarketerLine(num, False, "北京某某营销有限公司", TC.USCC,
                                                   "finance"), T - 24 * HOUR)
    r["complaint"] = b.issue("complaints-1", TC.complaint(num, call_at=T - HOUR), T)
    r["mark"] = b.issue("carrier-1", Mark(num, "marketing", observed_at_ms=T + HOUR), T + HOUR)
    r["handling"] = b.issue("carrier-1", TC.confirmed(r["complaint"].id, mark=r["mark"].id,
                                                      feedback_complainant_at_ms=T + HOUR),
                            T + HOUR)
    r["appeal"] = b.issue("internet-1", Correction(targets=(r["mark"].id,), action="withdraw"),
                          T + 2 * HOUR)
    r["sanction"] = b.issue("regulator-1", TC.listing(at=T + 3 * HOUR), T + 3 * HOUR)
    r["decision"] = b.issue("institute", Correction(appeal_id=r["appeal"].id, outcome="uphold"),
                            T + 5 * HOUR)
    r["elsewhere"] = b.issue("complaints-1", TC.complaint(TC.C2_NUMBER), T)
    return b, r


LINKED = ("handling", "line", "sanction")


def test_a_trail_goes_complaint_handling_mark_appeal_upheld_decision(
    complained: tuple[Book, dict[str, Record]]
) -> None:
    from ledger.trail import verify_trail

    b, r = complained
    num = b.TC.C1_NUMBER
    resp, given, size, root = b.answer(num, [r[k] for k in LINKED])
    t = verify_trail(b.cons, num, resp, given, size, root, NOW)
    assert t.verified
    got = t.to_json()["records"]
    assert [x["id"] for x in got] == [r[k].id.hex() for k in (
        "line", "complaint", "mark", "handling", "appeal", "sanction", "decision")]
    assert [x["kind"] for x in got] == ["line", "complaint", "mark", "handling", "appeal",
                                        "sanction", "decision"]
    assert [x["source"] for x in got] == ["index", "entry", "entry", "index", "entry",
                                          "index", "entry"]
    assert got[3]["names"] == [r["complaint"].id.hex(), r["mark"].id.hex()]
    assert got[3]["finding"] == "confirmed" and got[3]["action"] == "mark"
    assert got[1]["addressed_to"] == "carrier-1" and len(got[1]["complainant"]) > 32
    assert got[5]["uscc"] == b.TC.USCC and got[5]["delist"] is False
    # The complainant's number never shows, nor the description's digest.
    text = json.dumps(t.to_json())
    assert "+8613900000009" not in text and b.TC.DIGEST.hex() not in text


def test_what_the_entry_names_cannot_be_left_out_what_the_index_links_must_link(
    complained: tuple[Book, dict[str, Record]]
) -> None:
    from ledger.errors import ProofMismatch
    from ledger.trail import IncompleteTrail, NotAboutNumber, Proven, verify_trail

    b, r = complained
    num = b.TC.C1_NUMBER
    resp, given, size, root = b.answer(num, [r[k] for k in LINKED])
    # The complaint (named by the entry) left out: refused.
    at = next(i for i, p in enumerate(given) if p.envelope == r["complaint"].envelope)
    with pytest.raises(IncompleteTrail, match="1 record"):
        verify_trail(b.cons, num, resp, [p for i, p in enumerate(given) if i != at], size,
                     root, NOW)
    # The handling (linked by the index) left out: the node's word, so it verifies.
    at = next(i for i, p in enumerate(given) if p.envelope == r["handling"].envelope)
    assert verify_trail(b.cons, num, resp, [p for i, p in enumerate(given) if i != at],
                        size, root, NOW).verified
    # Another number's complaint, or a sanction without the line that links it: refused.
    _, more, _, _ = b.answer(num, [r[k] for k in (*LINKED, "elsewhere")])
    with pytest.raises(NotAboutNumber, match="not of"):
        verify_trail(b.cons, num, resp, more, size, root, NOW)
    line = next(i for i, p in enumerate(given) if p.envelope == r["line"].envelope)
    with pytest.raises(NotAboutNumber, match="enterprise of no line"):
        verify_trail(b.cons, num, resp, [p for i, p in enumerate(given) if i != line], size,
                     root, NOW)
    # A bent proof of a linked record is refused like any other.
    h = next(i for i, p in enumerate(given) if p.envelope == r["sanction"].envelope)
    bent = bytearray(given[h].path[0])
    bent[5] ^= 0x40
    given[h] = Proven(given[h].envelope, given[h].index, (bytes(bent), *given[h].path[1:]))
    with pytest.raises(ProofMismatch):
        verify_trail(b.cons, num, resp, given, size, root, NOW)


def test_the_web_trail_shows_complaints_without_complainants(
    complained: tuple[Book, dict[str, Record]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page and its JSON, on the trail above (the node's answer replaced by
    the verified one built in memory): no complainant field, no sealed value."""
    from types import SimpleNamespace

    from ledger.trail import verify_trail
    from node import trailcli
    from node.recordcli import TrustedCheckpoint
    from node.web.app import create_app
    from node.web.ratelimit import RateLimit
    from node.web.report import NodeReader

    b, r = complained
    num = b.TC.C1_NUMBER
    resp, given, size, root = b.answer(num, [r[k] for k in LINKED])
    t = verify_trail(b.cons, num, resp, given, size, root, NOW)
    cp = TrustedCheckpoint("carrier-1", SimpleNamespace(size=size, root=root),  # type: ignore[arg-type]
                           ("carrier-2", "institute"), None)
    monkeypatch.setattr(trailcli, "fetch_trail", lambda *a: (t, cp))
    app = create_app(b.cons, NodeReader("carrier-1", object(), object()),
                     rate=RateLimit(per_minute=0), now_ms=lambda: NOW)
    c = app.test_client()
    sealed = r["complaint"].payload.complainant.hex()
    api = c.get(f"/api/v1/numbers/{num}/trail").get_json()
    assert [x["kind"] for x in api["records"]][:2] == ["line", "complaint"]
    assert all(not k.startswith("complainant") for x in api["records"] for k in x)
    page = c.get(f"/numbers/{num}/trail").get_data(as_text=True)
    for text in (json.dumps(api), page):
        assert sealed not in text and "+8613900000009" not in text
    assert 'class="trail-complaint"' in page and 'class="trail-sanction"' in page
    assert r["handling"].id.hex() in page


# ------------------------------------------------------------------ complaints on real nodes


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    """Nodes of a consortium with the complaints centre and the regulator: a
    marketer line of carrier-1's for NUMBER, a complaint about it filed at
    complaints-1, carrier-1's confirming handling with a mark, internet-1's
    appeal of that mark upheld, the line's enterprise listed by regulator-1.
    (Records issued through each node's writer: the issuing commands are
    another part's.)"""
    from keys.layout import init_consortium
    from ledger.payloads import Complaint, Handling, MarketerLine, Sanction
    from ledger.payloads.line import uscc_check_char
    from ledger.sealing import COMPLAINANT
    from node.localnet import free_port_block
    from node.server import Node

    d = tmp_path_factory.mktemp("centre") / "c"
    cons = init_consortium(d, carriers=1, internet=1, complaints=1, regulators=1,
                           base_port=free_port_block(24), now=datetime.now(UTC))
    ids = [p.id for p in cons.participants if p.member_endpoint]
    nodes = {pid: Node(NodeConfig.for_participant(d, pid), sync_interval=0.2) for pid in ids}
    for n in nodes.values():
        n.start()
    net = SimpleNet(d, cons, nodes)
    try:
        now = int(datetime.now(UTC).timestamp() * 1000)
        uscc = "91110000600037341" + uscc_check_char("91110000600037341")
        industry = "finance"  # keys/industries.py DEFAULT_INDUSTRIES
        key = nodes["complaints-1"].consortium.members_key
        got: dict[str, str] = {}

        def issue(pid: str, payload: Any) -> bytes:
            out = nodes[pid].core.issue(payload)
            assert out.record is not None
            return out.record.id

        got["line"] = issue("carrier-1", MarketerLine(NUMBER, False, "北京某某营销有限公司",
                                                      uscc, industry)).hex()
        cid = issue("complaints-1", Complaint(
            NUMBER, "marketing", now - 3_600_000, "app", key.seal("+8613900000009", COMPLAINANT),
            key.id, hashlib.sha256("一天打了三次".encode()).digest(), "carrier-1"))
        got["complaint"] = cid.hex()
        net.converge()
        mark = issue("carrier-1", Mark(NUMBER, "marketing"))
        got["mark"] = mark.hex()
        got["handling"] = issue("carrier-1", Handling((cid,), "confirmed", action="mark",
                                                      mark_id=mark)).hex()
        net.converge()
        appeal = issue("internet-1", Correction(targets=(mark,), action="withdraw"))
        got["appeal"] = appeal.hex()
        got["sanction"] = issue("regulator-1", Sanction(
            "北京某某营销有限公司", uscc, "", "骚扰电话", "工信罚〔2026〕12号", now)).hex()
        net.converge()
        got["decision"] = issue("institute", Correction(appeal_id=appeal,
                                                        outcome="uphold")).hex()
        net.converge()
        yield net, got
    finally:
        stop_nodes(nodes.values())


class SimpleNet:
    """What run_cli and the waits need of a net: its folder and its nodes."""

    def __init__(self, d: Any, cons: Any, nodes: dict[str, Any]) -> None:
        self.dir, self.consortium, self.nodes = d, cons, nodes

    def converge(self, timeout: float = 30) -> None:
        import time

        deadline = time.monotonic() + timeout
        while True:
            heads = [{i: f.seq for i, f in n.core.ledger.feeds().items()}
                     for n in self.nodes.values()]
            if all(h == heads[0] for h in heads):
                return
            assert time.monotonic() < deadline, heads
            time.sleep(0.05)


def test_markex_trail_of_a_complaint_verifies_on_every_node(
    centre: tuple[Any, dict[str, str]]
) -> None:
    net, got = centre
    order = ["line", "complaint", "mark", "handling", "appeal", "sanction", "decision"]
    for pid in net.nodes:
        code, _, err = run_cli(net, "node", "wait", "--node", pid, "--timeout", "60",
                               *[a for i in got.values() for a in ("--for", i)])
        assert code == 0, err
        code, out, err = run_cli(net, "trail", "--node", pid, NUMBER)
        assert code == 0, err
        assert out["verified"] and [x["id"] for x in out["records"]] == [got[k] for k in order]
        assert [x["kind"] for x in out["records"]] == order
        assert {x["id"]: x["source"] for x in out["records"]}[got["handling"]] == "index"
        assert "+8613900000009" not in json.dumps(out)


def test_markex_stats_of_the_centre_s_net_is_one_on_every_node_and_offline(
    centre: tuple[Any, dict[str, str]]
) -> None:
    net, got = centre
    outs = []
    for pid in net.nodes:
        code, _, err = run_cli(net, "node", "wait", "--node", pid, "--timeout", "60",
                               "--for", got["decision"])
        assert code == 0, err
        code, out, err = run_cli(net, "stats", "--node", pid)
        assert code == 0, err
        outs.append({k: v for k, v in out.items() if k not in ("source", "checkpoint")})
    assert all(o == outs[0] for o in outs)
    c1 = outs[0]["carriers"]["carrier-1"]
    assert (c1["received"], c1["acknowledged_in_sla"], c1["closed"], c1["closed_in_sla"],
            c1["open"]) == (1, 1, 1, 1, 0)
    assert outs[0]["participants"]["carrier-1"]["overturn_rate"] == 1.0
    data = NodeConfig.for_participant(net.dir, "regulator-1").data_dir
    code, off, err = run_cli(net, "stats", "--data-dir", str(data))
    assert code == 0, err
    assert {k: v for k, v in off.items() if k != "source"} == outs[0]


def test_a_trail_before_the_line_was_registered_has_no_line_nor_sanction(
    centre: tuple[Any, dict[str, str]]
) -> None:
    net, got = centre
    code, out, err = run_cli(net, "trail", "--node", "carrier-1", NUMBER,
                             "--at", "2020-01-01T00:00:00Z")
    assert code == 0, err
    ids = [x["id"] for x in out["records"]]
    assert got["line"] not in ids and got["sanction"] not in ids and got["complaint"] in ids
    code, _, err = run_cli(net, "trail", "--node", "carrier-1", NUMBER, "--at", "yesterday")
    assert code == 2 and "ISO 8601" in err
