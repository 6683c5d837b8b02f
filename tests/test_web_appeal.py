"""The holder's appeal on the web (node/web/appeals.py) at the HTTP level,
against real in-process nodes over the TLS connections `markex web` opens:
the code from the serving carrier's outbox, the appeal filed by that
carrier's node, the appeal's page through the institute's decision to
"applied on 3 of 3 nodes"; every refusal with its status and no record."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from markex.v1 import service_pb2 as pb
from node.cli import main
from node.connect import TlsConnect
from node.sms import OUTBOX_FILE, read_outbox
from node.web.app import create_app
from node.web.appeals import AppealRelay, applied_at, install_relay
from node.web.ratelimit import RateLimit
from node.webcli import node_reader
from tests.test_cli import InProcessNet

pytestmark = pytest.mark.timeout(240)

HAPPY = "+8613812350001"
WRONG = "+8613812350002"
LIMITED = "+8613812350003"
LONG = "+8613812350004"
HTML = "+8613812350005"
UNMARKED = "+8613812350999"
SCRIPT = '<script>alert("x")</script>'


def _cli(*argv: str) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--json"])
    assert code == 0, argv
    return json.loads(out.getvalue())


@dataclass
class Web:
    net: InProcessNet
    app: Any
    tls: TlsConnect

    def client(self, addr: str) -> Any:
        c = self.app.test_client()
        c.environ_base["REMOTE_ADDR"] = addr
        return c

    def size(self) -> int:
        node = next(n for n in self.net.nodes_running if n.participant_id == "carrier-1")
        return node.core.ledger.size

    def code(self, number: str) -> str:
        msgs = [m for m in read_outbox(self.net.dir / "carrier-1" / OUTBOX_FILE)
                if m["to"] == number]
        found = re.search(r"\d{6}", msgs[-1]["text"])
        assert found is not None
        return found.group(0)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    net = InProcessNet(tmp_path_factory.mktemp("webappeal") / "c", carriers=1, internet=1,
                       sync_interval=0.2)
    net.start_all()
    tls = TlsConnect()
    try:
        for n in (HAPPY, WRONG, LIMITED, LONG, HTML):
            net.mark("internet-1", n, "fraud", 70, 3)
        net.wait_converged(timeout=30)
        # The front end reads the institute's node: an appeal filed at carrier-1
        # is found there once it has arrived (or at carrier-1 before).
        reader = node_reader(net.dir, net.consortium, "internet-1", "institute", tls)
        app = create_app(net.consortium, reader, rate=RateLimit(per_minute=0))
        install_relay(app, AppealRelay.tls(net.dir, net.consortium, "internet-1", "institute"))
        yield Web(net, app, tls)
    finally:
        tls.close()
        net.stop_all()


def test_the_whole_appeal_through_the_api(web: Web) -> None:
    c = web.client("192.0.2.1")
    r = c.post("/api/v1/codes", json={"number": "138 1235 0001"})
    assert r.status_code == 202, r.get_json()
    assert r.get_json()["number"] == HAPPY and r.get_json()["carrier"] == "carrier-1"
    before = web.size()
    statement = f"我们是快递公司的客服热线 {SCRIPT}"
    r = c.post("/api/v1/appeals", json={"number": HAPPY, "code": web.code(HAPPY),
                                        "statement": statement})
    assert r.status_code == 201, r.get_json()
    aid = r.get_json()["id"]
    assert re.fullmatch(r"[0-9a-f]{64}", aid) and r.headers["Location"] == f"/appeals/{aid}"
    assert web.size() == before + 1
    st = c.get(f"/api/v1/appeals/{aid}").get_json()
    assert {"id", "number", "status", "filed_at", "decided_at", "outcome", "applied"} <= set(st)
    assert (st["id"], st["number"], st["status"]) == (aid, HAPPY, "pending")
    assert st["decided_at"] is None and st["outcome"] is None
    assert set(st["applied"]) == {"institute", "carrier-1", "internet-1"}
    assert not any(st["applied"].values())
    assert st["deadline"] == st["filed_at"] + web.net.consortium.policy.appeal_decision_ms
    assert "快递" not in json.dumps(st, ensure_ascii=False)         # the statement stays private
    page = c.get(f"/appeals/{aid}").get_data(as_text=True)
    assert 'data-status="pending"' in page and 'id="deadline"' in page
    assert "快递" not in page and "<script>" not in page
    # the institute decides by CLI; the page follows it to every node
    web.net.wait_converged(timeout=30)
    _cli("decide", "--as", "institute", aid, "--uphold", "--reason", "R07 delivery line",
         "--consortium", str(web.net.dir))
    n = len(web.net.consortium.witnesses)
    deadline = time.monotonic() + 60
    while True:
        st = c.get(f"/api/v1/appeals/{aid}").get_json()
        if st["status"] == "upheld" and all(st["applied"].values()):
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.3)
    assert st["outcome"] == "uphold" and st["decided_at"] >= st["filed_at"]
    assert st["decided_by"] == "institute" and st["reason"] == "R07 delivery line"
    page = c.get(f"/appeals/{aid}").get_data(as_text=True)
    assert f"applied on {n} of {n} nodes" in page
    assert "R07 delivery line" in page and "快递" not in page
    # the number's page now shows the appeal, linked to its page
    num = c.get(f"/numbers/{HAPPY}").get_data(as_text=True)
    assert f'href="/appeals/{aid}"' in num


def test_every_refusal_has_its_status_and_issues_nothing(web: Web) -> None:
    before = web.size()
    c = web.client("192.0.2.2")
    r = c.post("/api/v1/codes", json={"number": SCRIPT})
    assert r.status_code == 400 and "not a phone number" in r.get_json()["error"]
    assert c.post("/api/v1/codes", data="x", content_type="text/plain").status_code == 400
    r = c.post("/api/v1/codes", json={"number": "+12025550123"})      # no carrier serves it
    assert r.status_code == 400 and "no carrier" in r.get_json()["error"]
    r = c.post("/api/v1/codes", json={"number": UNMARKED})
    assert r.status_code == 409 and "nothing to appeal" in r.get_json()["error"]
    assert c.get("/api/v1/appeals/" + "ab" * 32).status_code == 404
    assert c.get("/api/v1/appeals/nothex").status_code == 404
    assert c.get("/appeals/" + "ab" * 32).status_code == 404
    # wrong code: 403, and no record
    assert c.post("/api/v1/codes", json={"number": WRONG}).status_code == 202
    good = web.code(WRONG)
    bad = f"{(int(good) + 1) % 1_000_000:06d}"
    r = c.post("/api/v1/appeals", json={"number": WRONG, "code": bad, "statement": "ours"})
    assert r.status_code == 403 and "wrong code" in r.get_json()["error"]
    # an oversized statement: 413 (checked before any try is spent)
    r = c.post("/api/v1/appeals", json={"number": WRONG, "code": good,
                                        "statement": "长" * 1001})
    assert r.status_code == 413
    r = c.post("/api/v1/appeals", json={"number": WRONG, "code": good, "statement": " "})
    assert r.status_code == 400
    # too many code requests for one number: 429 with Retry-After
    codes = [web.client(f"192.0.2.{10 + i}").post("/api/v1/codes", json={"number": LIMITED})
             for i in range(4)]
    assert [x.status_code for x in codes] == [202, 202, 202, 429]
    assert int(codes[-1].headers["Retry-After"]) > 0
    assert web.size() == before


def test_the_pages_of_a_holder(web: Web) -> None:
    c = web.client("192.0.2.3")
    num = c.get(f"/numbers/{HTML}").get_data(as_text=True)
    assert f'href="/appeals/new?number=%2B{HTML[1:]}"' in num
    form = c.get(f"/appeals/new?number={SCRIPT}").get_data(as_text=True)
    assert "<script>" not in form and "&lt;script&gt;" in form
    r = c.post("/appeals/new", data={"number": SCRIPT})
    assert r.status_code == 400 and "<script>" not in r.get_data(as_text=True)
    r = c.post("/appeals/new", data={"number": HTML})
    assert r.status_code == 200 and 'id="appeal-form"' in r.get_data(as_text=True)
    before = web.size()
    r = c.post("/appeals/file", data={"number": HTML, "code": "000000x", "statement": "x"})
    assert r.status_code == 403 and web.size() == before
    r = c.post("/appeals/file", data={"number": HTML, "code": web.code(HTML),
                                      "statement": f"{SCRIPT} 送餐电话"})
    assert r.status_code == 303 and web.size() == before + 1
    page = c.get(r.headers["Location"]).get_data(as_text=True)
    aid = re.search(r'id="filed-id">([0-9a-f]{64})<', page)
    assert aid is not None and "申诉已提交" in page
    assert "<script>" not in page and "送餐电话" not in page


def test_a_front_end_without_a_relay_files_nothing(web: Web) -> None:
    reader = node_reader(web.net.dir, web.net.consortium, "internet-1", "institute", web.tls)
    bare = create_app(web.net.consortium, reader, rate=RateLimit(per_minute=0))
    r = bare.test_client().post("/api/v1/codes", json={"number": HAPPY})
    assert r.status_code == 503 and "files no appeals" in r.get_json()["error"]


def test_applied_needs_a_verified_checkpoint(web: Web) -> None:
    cons = web.net.consortium
    pub = AppealRelay.tls(web.net.dir, cons, "internet-1", "institute").public("institute")
    deadline = time.monotonic() + 30
    while True:  # until the institute's newest checkpoint has its cosignatures
        text = pub.GetViewCheckpoint(pb.GetViewCheckpointRequest()).note
        now = int(time.time() * 1000)
        ok, why = applied_at(cons, text, "institute", "internet-1", 1, now)
        if ok:
            break
        assert time.monotonic() < deadline and "cosigned by" in why, why
        time.sleep(0.2)
    ok, why = applied_at(cons, text, "institute", "internet-1", 10**6, now)
    assert not ok and "up to" in why
    ok, why = applied_at(cons, text, "carrier-1", "internet-1", 1, now)     # not its checkpoint
    assert not ok and "signed by institute" in why
    bent = text.replace("vector ", "vector x", 1)
    ok, why = applied_at(cons, bent, "institute", "internet-1", 1, now)
    assert not ok and "not verified" in why
    ok, why = applied_at(cons, text, "institute", "internet-1", 1, now + 3_600_000)
    assert not ok and "not verified" in why                                 # stale


def test_markex_appeals_lists_the_institutes_queue(web: Web) -> None:
    c = web.client("192.0.2.4")
    assert c.post("/api/v1/codes", json={"number": LONG}).status_code == 202
    statement = "此号码是我们的送货专线 our delivery line"
    r = c.post("/api/v1/appeals", json={"number": LONG, "code": web.code(LONG),
                                        "statement": statement})
    aid = r.get_json()["id"]
    d = ["--consortium", str(web.net.dir)]
    deadline = time.monotonic() + 30
    while True:
        pending = _cli("appeals", "--as", "institute", "--pending", *d)["appeals"]
        mine = [a for a in pending if a["id"] == aid]
        if mine:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    a = mine[0]
    assert {"id", "number", "status", "filed_at", "age_s"} <= set(a)
    assert (a["number"], a["status"], a["filed_by"]) == (LONG, "pending", "carrier-1")
    assert a["statement"] == statement and 0 <= a["age_s"] < 120
    assert all(x["status"] == "pending" for x in pending)
    everything = _cli("appeals", "--as", "institute", *d)["appeals"]
    assert aid in {x["id"] for x in everything}
    assert [x["filed_at"] for x in everything] == sorted(x["filed_at"] for x in everything)


def test_the_appeal_page_is_limited_per_address(web: Web) -> None:
    reader = node_reader(web.net.dir, web.net.consortium, "internet-1", "institute", web.tls)
    app = create_app(web.net.consortium, reader, rate=RateLimit(per_minute=1, burst=2))
    install_relay(app, AppealRelay.tls(web.net.dir, web.net.consortium, "internet-1",
                                       "institute"))
    c = app.test_client()
    got = [c.get("/api/v1/appeals/" + "cd" * 32) for _ in range(3)]
    assert [r.status_code for r in got] == [404, 404, 429]
    assert int(got[-1].headers["Retry-After"]) >= 1
    assert c.get("/appeals/" + "cd" * 32).status_code == 429
