"""`markex complain`, `complaints`, `handle`, `sanction`, `badlist` against
in-process nodes (their TLS ports) of a consortium with two carriers, the
complaints centre and the regulator: a complaint filed at the centre's node
is in the serving carrier's queue on that carrier's own node, without the
complainant; handled as confirmed with a mark; forwarded to the other
carrier, which handles it; not confirmed; overdue at an explicit time; an
enterprise listed then delisted, checked by code and by number (through its
marketer line) and screened by its line; every bad input refused with
nothing written."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ledger.payloads import Complaint
from ledger.payloads.line import uscc_check_char
from tests.test_cli import InProcessNet
from tests.test_trail import run_cli

pytestmark = pytest.mark.timeout(300)

C1_NUMBER = "+8613812340101"     # carrier-1's (+86138 of two carriers' round robin)
C2_NUMBER = "+8613912340102"     # carrier-2's (+86139)
LINE_NUMBER = "+8613812340199"   # a marketer line of carrier-1's
COMPLAINANT = "13900000009"
DESCRIPTION = "一天打了三次,推销贷款"
USCC = "91110000600037341" + uscc_check_char("91110000600037341")
ENTERPRISE = "北京某某营销有限公司"
NEVER_LISTED = "91110000MA0123456" + uscc_check_char("91110000MA0123456")


def iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def ago(**kw: float) -> str:
    return iso(datetime.now(UTC) - timedelta(**kw))


def later(**kw: float) -> str:
    return iso(datetime.now(UTC) + timedelta(**kw))


def wait_until(what: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessNet]:
    n = InProcessNet(tmp_path_factory.mktemp("complaints") / "c", carriers=2, internet=1,
                     sync_interval=0.2, complaints=1, regulators=1)
    n.start_all()
    try:
        yield n
    finally:
        n.stop_all()


@contextlib.contextmanager
def web_of(net: InProcessNet) -> Iterator[Any]:
    """carrier-1's web front end, as `markex web` builds it, as a test client."""
    from node.connect import TlsConnect
    from node.web.app import create_app
    from node.web.ratelimit import RateLimit
    from node.webcli import node_reader

    with TlsConnect() as tls:
        reader = node_reader(net.dir, net.consortium, "carrier-1", "carrier-1", tls)
        yield create_app(net.consortium, reader, rate=RateLimit(per_minute=0)).test_client()


def run_text(net: InProcessNet, *argv: str) -> str:
    """`markex ARGV` as a person reads it (no --json)."""
    import io

    from node.cli import main
    from tests.test_trail import _pinned

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, *_pinned(net)]) == 0
    return out.getvalue()


def node(net: InProcessNet, pid: str) -> Any:
    return next(n for n in net.nodes_running if n.participant_id == pid)


def ok(net: InProcessNet, *argv: str) -> dict[str, Any]:
    code, obj, err = run_cli(net, *argv)
    assert code == 0, (argv, err)
    assert isinstance(obj, dict)
    return obj


def complain(net: InProcessNet, number: str, *, at: str | None = None,
             complainant: str = COMPLAINANT, category: str = "marketing") -> dict[str, Any]:
    return ok(net, "complain", "--as", "complaints-1", number, category, "--at",
              at or ago(hours=1), "--channel", "app", "--complainant", complainant,
              "--description", DESCRIPTION)


def queue(net: InProcessNet, carrier: str, *extra: str) -> list[dict[str, Any]]:
    return list(ok(net, "complaints", "--as", carrier, *extra)["complaints"])


def in_queue(net: InProcessNet, carrier: str, cid: str, *extra: str) -> dict[str, Any] | None:
    return next((c for c in queue(net, carrier, *extra) if c["id"] == cid), None)


def arrives(net: InProcessNet, carrier: str, cid: str) -> dict[str, Any]:
    """The complaint, once it is in `carrier`'s queue at its own node."""
    return dict(wait_until(lambda: in_queue(net, carrier, cid)))


def heads(net: InProcessNet) -> dict[str, dict[str, int]]:
    return {n.participant_id: {i: f.seq for i, f in n.core.ledger.feeds().items()}
            for n in net.nodes_running}


# ------------------------------------------------------------------ the queue


def test_a_complaint_filed_at_the_centre_is_in_the_serving_carrier_s_queue_on_its_node(
        net: InProcessNet) -> None:
    filed = complain(net, C1_NUMBER)
    assert filed["issuer"] == "complaints-1" and filed["addressed_to"] == "carrier-1"
    assert set(filed) >= {"id", "issuer", "seq", "addressed_to"}
    c = arrives(net, "carrier-1", filed["id"])
    assert (c["number"], c["category"], c["channel"], c["status"]) == (
        C1_NUMBER, "marketing", "app", "open")
    assert c["addressed_to"] == "carrier-1" and c["forwarded_from"] == [] and not c["overdue"]
    assert c["ack_due"] and c["close_due"] and c["filed_at"] and c["call_at"]
    # the complainant never leaves the member side in clear, nor the description
    code, raw, _ = run_cli(net, "complaints", "--as", "carrier-1")
    text = repr(raw)
    assert COMPLAINANT not in text and "+86" + COMPLAINANT not in text
    assert DESCRIPTION not in text
    rec = node(net, "carrier-1").core.ledger.record_by_id(bytes.fromhex(filed["id"]))
    assert rec is not None
    env = rec[1]
    assert COMPLAINANT.encode() not in env and DESCRIPTION.encode() not in env
    from ledger.record import Record

    pay = Record.from_envelope(env).payload
    assert isinstance(pay, Complaint)
    assert pay.description_digest == hashlib.sha256(DESCRIPTION.encode()).digest()
    # the other carrier's queue does not hold it
    assert in_queue(net, "carrier-2", filed["id"]) is None


def test_a_complaint_handled_as_confirmed_with_a_mark(net: InProcessNet) -> None:
    filed = complain(net, C1_NUMBER, complainant="13900000010")
    arrives(net, "carrier-1", filed["id"])
    mark = ok(net, "mark", "--as", "carrier-1", C1_NUMBER, "marketing")["id"]
    # short prefixes are resolved at the node, as `markex correct` does
    h = ok(net, "handle", "--as", "carrier-1", filed["id"][:12], "--confirmed", "--mark",
           mark[:12], "--feedback-complainant", ago(minutes=1))
    assert h["issuer"] == "carrier-1" and set(h) >= {"id", "issuer", "seq"}
    c = in_queue(net, "carrier-1", filed["id"])
    assert c is not None and c["status"] == "closed" and c["finding"] == "confirmed"
    assert c["closed_by"] == h["id"] and c["acknowledged_at"]
    assert in_queue(net, "carrier-1", filed["id"], "--open") is None


def test_a_forwarded_complaint_is_handled_by_the_carrier_it_went_to(net: InProcessNet) -> None:
    filed = complain(net, C1_NUMBER, complainant="13900000011")
    arrives(net, "carrier-1", filed["id"])
    ok(net, "handle", "--as", "carrier-1", filed["id"], "--forward", "carrier-2")
    # carrier-1 no longer holds it; carrier-2's own node has it, forwarded from carrier-1
    assert in_queue(net, "carrier-1", filed["id"]) is None
    c = arrives(net, "carrier-2", filed["id"])
    assert c["forwarded_from"] == ["carrier-1"] and c["status"] == "open"
    h = ok(net, "handle", "--as", "carrier-2", filed["id"], "--confirmed", "--action",
           "warning")
    c = wait_until(lambda: (x := in_queue(net, "carrier-2", filed["id"])) and
                   x["status"] == "closed" and x)
    assert c["finding"] == "confirmed" and c["closed_by"] == h["id"]


def test_a_complaint_not_confirmed(net: InProcessNet) -> None:
    filed = complain(net, C2_NUMBER, complainant="13900000012")
    assert filed["addressed_to"] == "carrier-2"
    arrives(net, "carrier-2", filed["id"])
    ok(net, "handle", "--as", "carrier-2", filed["id"], "--not-confirmed")
    c = in_queue(net, "carrier-2", filed["id"])
    assert c is not None and (c["status"], c["finding"]) == ("closed", "not-confirmed")


def test_a_complaint_nobody_handles_is_overdue_at_an_explicit_time(net: InProcessNet) -> None:
    filed = complain(net, C1_NUMBER, complainant="13900000013")
    arrives(net, "carrier-1", filed["id"])
    assert in_queue(net, "carrier-1", filed["id"], "--overdue") is None
    text = run_text(net, "complaints", "--as", "carrier-1", "--open")
    assert f"{filed['id'][:16]}  {C1_NUMBER}" in text and "carrier-1's complaints at" in text
    # past the 24 hours to acknowledge it
    c = in_queue(net, "carrier-1", filed["id"], "--overdue", "--at", later(hours=25))
    assert c is not None and c["overdue"] and c["status"] == "overdue"
    assert in_queue(net, "carrier-1", filed["id"], "--open", "--at", later(days=6))
    # the institute and the regulator read a carrier's queue by naming it
    for reader in ("institute", "regulator-1"):
        c = wait_until(lambda r=reader: next(
            (x for x in ok(net, "complaints", "--as", r, "--carrier", "carrier-1", "--overdue",
                           "--at", later(days=6))["complaints"] if x["id"] == filed["id"]),
            None))
        assert c["status"] == "overdue"


# ------------------------------------------------------------------ the bad list


def _in_checkpoints(net: InProcessNet, *ids: str) -> None:
    for pid in ("carrier-1", "internet-1"):
        ok(net, "node", "wait", "--node", pid, "--timeout", "60",
           *[a for i in ids for a in ("--for", i)])


def test_a_sanction_listed_then_delisted_checked_by_code_number_and_screen(
        net: InProcessNet) -> None:
    line_id = ok(net, "line", "register", "--as", "carrier-1", LINE_NUMBER, "--enterprise",
                 ENTERPRISE, "--uscc", USCC, "--industry", "finance")["id"]
    listed = ok(net, "sanction", "--as", "regulator-1", "--uscc", USCC, "--name", ENTERPRISE,
                "--reason", "骚扰电话", "--doc", "工信罚〔2026〕12号", "--licence", "B2-2026")
    assert listed["issuer"] == "regulator-1" and not listed["delist"]
    _in_checkpoints(net, listed["id"], line_id)
    for pid in ("carrier-1", "internet-1"):
        bl = ok(net, "badlist", "--node", pid)
        assert bl["verified"] is True
        (e,) = [x for x in bl["listed"] if x["uscc"] == USCC]
        assert (e["enterprise"], e["reason"], e["document"], e["licence"], e["id"]) == (
            ENTERPRISE, "骚扰电话", "工信罚〔2026〕12号", "B2-2026", listed["id"])
        assert e["verified"] and isinstance(e["index"], int)
    by_code = ok(net, "badlist", "--node", "carrier-1", "--check", USCC)
    assert by_code["check"]["listed"] is True and [x["uscc"] for x in by_code["listed"]] == [USCC]
    by_number = ok(net, "badlist", "--node", "internet-1", "--check", LINE_NUMBER[3:])
    assert by_number["check"]["listed"] is True
    assert by_number["check"]["line"]["id"] == line_id
    other = ok(net, "badlist", "--node", "carrier-1", "--check", C2_NUMBER)
    assert other["check"]["listed"] is False and other["listed"] == []
    # the web front end shows the same list, verified, with its labels in both languages
    with web_of(net) as web:
        page = web.get("/badlist").get_data(as_text=True)
        assert "黑名单" in page and "Bad list" in page and ENTERPRISE in page
        assert "骚扰电话" in page and "工信罚〔2026〕12号" in page and 'data-verified="yes"' in page
        assert f'data-id="{listed["id"]}"' in page and "log index" in page
        api = web.get("/api/v1/badlist").get_json()
        assert api["verified"] and [e["id"] for e in api["listed"]] == [listed["id"]]
        got = web.get(f"/api/v1/badlist?check={LINE_NUMBER}").get_json()
        assert got["check"]["listed"] and got["check"]["line"]["id"] == line_id
        assert 'data-listed="yes"' in web.get(f"/badlist?check={USCC}").get_data(as_text=True)
        bad = web.get("/api/v1/badlist?check=hello")
        assert bad.status_code == 400 and "neither" in bad.get_json()["error"]
    # without --json: one line per listing and the verdict, in words
    text = run_text(net, "badlist", "--node", "carrier-1", "--check", LINE_NUMBER)
    assert f"{USCC}  {ENTERPRISE}" in text and "LISTED through line" in text
    assert "verified: yes, against carrier-1's log checkpoint" in text
    # the screen blocks the listed enterprise's line (policy default: block)
    d = ok(net, "screen", "--as", "carrier-1", LINE_NUMBER, C2_NUMBER)
    assert d["action"] == "BLOCK" and d["reasons"][0]["code"] == "caller-enterprise-listed"
    assert d["reasons"][0]["records"] == [listed["id"]]
    # delisted: off the list, and the line is a plain registered marketer again
    off = ok(net, "sanction", "--as", "regulator-1", "--uscc", USCC, "--name", ENTERPRISE,
             "--doc", "工信函〔2026〕30号", "--delist")
    assert off["delist"] is True
    _in_checkpoints(net, off["id"])
    after = ok(net, "badlist", "--node", "carrier-1", "--check", USCC)
    assert after["check"]["listed"] is False and after["listed"] == []
    assert USCC not in [x["uscc"] for x in ok(net, "badlist", "--node", "internet-1")["listed"]]
    # the list as it was, at an explicit time between the two
    was = ok(net, "badlist", "--node", "carrier-1", "--check", USCC, "--at",
             listed["listed_at"])
    assert was["check"]["listed"] is True
    d = ok(net, "screen", "--as", "carrier-1", LINE_NUMBER, C2_NUMBER)
    assert d["reasons"][0]["code"] != "caller-enterprise-listed"


# ------------------------------------------------------------------ refusals


def converged(net: InProcessNet) -> dict[str, dict[str, int]]:
    """Every node's feed heads, once they are all the same."""
    def same() -> dict[str, dict[str, int]] | None:
        h = heads(net)
        return h if all(v == h["complaints-1"] for v in h.values()) else None
    return dict(wait_until(same))


def _refused(net: InProcessNet, want: int, *argv: str) -> str:
    before = converged(net)
    code, out, err = run_cli(net, *argv)
    assert code == want, (argv, code, err)
    assert out is None and "Traceback" not in err and err.count("\n") == 1, (argv, err)
    time.sleep(0.05)
    assert heads(net) == before, " ".join(argv)   # nothing written anywhere
    return err


def test_every_bad_input_is_refused_with_nothing_written(net: InProcessNet) -> None:
    filed = complain(net, C1_NUMBER, complainant="13900000014")
    arrives(net, "carrier-1", filed["id"])
    converged(net)
    cid = filed["id"]
    base = ["--channel", "app", "--complainant", COMPLAINANT]
    at = ago(hours=1)
    cases: list[tuple[int, list[str], str]] = [
        (2, ["complain", "--as", "complaints-1", C1_NUMBER, "no-such", "--at", at, *base],
         "not a category"),
        (2, ["complain", "--as", "carrier-1", C1_NUMBER, "marketing", "--at", at, *base],
         "complaints role"),
        (2, ["complain", "--as", "complaints-1", C1_NUMBER, "marketing", "--at", at,
             "--channel", "app", "--complainant", "not-a-number"], "number"),
        (2, ["complain", "--as", "complaints-1", C1_NUMBER, "marketing", "--at", "yesterday",
             *base], "ISO 8601"),
        (2, ["complain", "--as", "complaints-1", C1_NUMBER, "marketing", "--at", at,
             "--channel", "fax", "--complainant", COMPLAINANT], "channel"),
        (2, ["complain", "--as", "complaints-1", "+86110", "marketing", "--at", at, *base],
         "protected"),
        (2, ["complain", "--as", "complaints-1", "+8617012345678", "marketing", "--at", at,
             *base], "no carrier"),
        (2, ["complain", "--as", "complaints-1", C1_NUMBER, "marketing", "--at",
             later(days=1), *base], "call"),
        (2, ["complain", "--as", "complaints-1", C1_NUMBER, "marketing", "--at",
             ago(days=9), *base], "call"),
        (2, ["handle", "--as", "carrier-1", cid, "--confirmed", "--not-confirmed"],
         "exactly one"),
        (2, ["handle", "--as", "carrier-1", cid], "exactly one"),
        (2, ["handle", "--as", "carrier-1", cid, "--not-confirmed", "--mark", cid], "--mark"),
        (2, ["handle", "--as", "carrier-1", cid, "--confirmed", "--action", "mark"],
         "invalid choice"),
        (2, ["handle", "--as", "carrier-1", cid, "--forward", "carrier-1"], "another carrier"),
        (2, ["handle", "--as", "carrier-1", cid, "--forward", "internet-1"], "another carrier"),
        (2, ["handle", "--as", "regulator-1", cid, "--not-confirmed"], "carrier role"),
        (2, ["handle", "--as", "carrier-1", "xyz", "--not-confirmed"], "record id"),
        (3, ["handle", "--as", "carrier-1", "ab" * 32, "--not-confirmed"], "not in"),
        (4, ["handle", "--as", "carrier-2", cid, "--not-confirmed"], "addressed to carrier-1"),
        (4, ["handle", "--as", "carrier-1", cid, "--confirmed", "--mark", cid], "not a mark"),
        (2, ["sanction", "--as", "regulator-1", "--uscc", "91110000600037341A", "--name", "x",
             "--reason", "r", "--doc", "d"], "check character"),
        (2, ["sanction", "--as", "regulator-1", "--uscc", USCC, "--name", "x", "--doc", "d"],
         "reason"),
        (2, ["sanction", "--as", "carrier-1", "--uscc", USCC, "--name", "x", "--reason", "r",
             "--doc", "d"], "regulator role"),
        (4, ["sanction", "--as", "regulator-1", "--uscc", NEVER_LISTED, "--name", "x", "--doc",
             "d", "--delist"], "nothing to delist"),
        (2, ["complaints", "--as", "carrier-1", "--open", "--overdue"], "not allowed with"),
        (4, ["complaints", "--as", "internet-1"], "only carriers"),
        (4, ["complaints", "--as", "carrier-1", "--carrier", "carrier-2"], "its own"),
        (2, ["complaints", "--as", "institute"], "names the carrier"),
        (2, ["complaints", "--as", "regulator-1", "--carrier", "internet-1"], "not a carrier"),
        (2, ["badlist", "--node", "carrier-1", "--check", "hello"], "neither"),
        (2, ["badlist", "--node", "carrier-1", "--check", "91110000600037341A"],
         "check character"),
        (2, ["badlist"], "--node"),
    ]
    for want, argv, needle in cases:
        err = _refused(net, want, *argv)
        assert needle in err, (argv, err)
    # the same complaint again (complainant, number, call time, category): refused
    again_at = ago(hours=2)
    complain(net, C1_NUMBER, at=again_at, complainant="13900000015")
    err = _refused(net, 4, "complain", "--as", "complaints-1", C1_NUMBER, "marketing", "--at",
                   again_at, "--channel", "web", "--complainant", "13900000015")
    assert "already reports" in err
    # a closed complaint is not handled again
    ok(net, "handle", "--as", "carrier-1", cid, "--not-confirmed")
    err = _refused(net, 4, "handle", "--as", "carrier-1", cid, "--confirmed")
    assert "closed already" in err


def test_the_admin_rpcs_take_only_the_node_s_own_operator_and_check_what_they_seal(
        net: InProcessNet) -> None:
    """Another participant's admin certificate is refused at the centre's node;
    an over-long description and a complainant that is no number are refused
    before anything is sealed or signed."""
    import grpc

    from markex.v1 import service_pb2 as pb
    from node.command import node_endpoints
    from node.connect import Dial, TlsConnect

    ep = node_endpoints(net.consortium, "complaints-1")
    req = pb.ComplaintRequest(number=C1_NUMBER, category="marketing",
                              call_at_ms=int(time.time() * 1000) - 3_600_000, channel="app",
                              complainant=COMPLAINANT)
    before = converged(net)
    with TlsConnect() as tls:
        other = tls("admin", Dial(net.dir, ep, "carrier-1"))
        with pytest.raises(grpc.RpcError) as e:
            other.IssueComplaint(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "only complaints-1 issues records" in (e.value.details() or "")
        own = tls("admin", Dial(net.dir, ep, "complaints-1"))
        for bad, why in ((pb.ComplaintRequest(**{**_fields(req), "description": "x" * 5000}),
                          "at most 4000"),
                         (pb.ComplaintRequest(**{**_fields(req), "complainant": "nobody"}),
                          ""),
                         (pb.ComplaintRequest(**{**_fields(req), "complainant": ""}),
                          "complainant")):
            with pytest.raises(grpc.RpcError) as e:
                own.IssueComplaint(bad, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert why in (e.value.details() or "")
    time.sleep(0.3)
    assert heads(net) == before


def _fields(m: Any) -> dict[str, Any]:
    return {f.name: v for f, v in m.ListFields()}
