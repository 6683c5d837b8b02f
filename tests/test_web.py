"""`markex web` at the HTTP level against real in-process nodes (the TLS
connections are the ones `markex web` opens): the number page and
`GET /api/v1/numbers/{number}` (docs/web.md), re-verified here from the
bytes the API returns; bad input, escaping, security headers and the
per-address lookup limit, through Flask's test client and through waitress
on 127.0.0.1. tests/test_web_browser.py runs the same pages in Chromium."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ledger import merkle
from ledger import view as V
from ledger.names import log_origin
from ledger.note import Note, Verifier, open_checkpoint
from markex.v1 import record_pb2 as rpb
from node.cli import main
from node.connect import TlsConnect
from node.localnet import free_port_block
from node.lookup import open_view
from node.web.app import SECURITY_HEADERS, create_app
from node.web.ratelimit import AddressLimiter, RateLimit, client_address, parse_proxies
from node.web.report import NodeReader
from node.webcli import WebServer, node_reader
from tests.test_cli import InProcessNet

pytestmark = pytest.mark.timeout(240)

MARKED = "+8613812345001"      # carrier-1 fraud, internet-1 harassment
APPEALED = "+8613812345002"    # internet-1 fraud; carrier-1's appeal upheld by the institute
WITHDRAWN = "+8613812345003"   # carrier-1's own mark, withdrawn
REASSIGNED = "+8613812345004"  # internet-1 harassment, then the number given to a new holder
UNMARKED = "+8613812345999"
SCRIPT = "<script>alert(1)</script>"
EVIDENCE = hashlib.sha256(b"call recordings behind carrier-1's mark").digest()


@dataclass
class WebNet:
    net: InProcessNet
    reader: NodeReader
    tls: TlsConnect
    ids: dict[str, str]        # what the scenario issued: name -> record id (hex)

    @property
    def cons(self) -> Any:
        return self.net.consortium

    def app(self, **kw: Any) -> Any:
        kw.setdefault("rate", RateLimit(per_minute=0))
        return create_app(self.cons, self.reader, **kw)


def _cli(*argv: str) -> dict[str, Any]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--json"])
    assert code == 0, argv
    return json.loads(out.getvalue())


def _settled(w: WebNet, numbers: list[str], timeout: float = 40) -> None:
    """Until every number's answer verifies and each of its records is proven in the log."""
    app = w.app()
    deadline = time.monotonic() + timeout
    while True:
        c = app.test_client()
        reps = [c.get(f"/api/v1/numbers/{n}").get_json() for n in numbers]
        if all(
            r["verified"]["ok"] and all(x.get("verified") for x in r["records"]) for r in reps
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(json.dumps(reps)[:2000])
        time.sleep(0.3)


@pytest.fixture(scope="module")
def web_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNet]:
    net = InProcessNet(
        tmp_path_factory.mktemp("web") / "c", carriers=1, internet=1, sync_interval=0.2
    )
    net.start_all()
    tls = TlsConnect()
    try:
        d = str(net.dir)
        ids: dict[str, str] = {}
        mark = rpb.Mark(number=MARKED, category="fraud", score=80, reports=3,
                        evidence_digest=EVIDENCE)
        ids["c1"] = net.admin("carrier-1").IssueMark(mark, timeout=30).id.hex()
        ids["i1"] = net.mark("internet-1", MARKED, "harassment", 70, 9).id.hex()
        ids["i2"] = net.mark("internet-1", APPEALED, "fraud", 60, 2).id.hex()
        ids["c3"] = net.mark("carrier-1", WITHDRAWN, "marketing", 50, 1).id.hex()
        ids["i4"] = net.mark("internet-1", REASSIGNED, "harassment", 50, 1).id.hex()
        net.wait_converged(timeout=30)
        time.sleep(1.2)  # the new tenure starts (to the second) after the mark was observed
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        c = ["--consortium", d]
        ids["appeal"] = _cli("correct", "--as", "carrier-1", ids["i2"], "--withdraw", *c)["id"]
        ids["withdraw"] = _cli("correct", "--as", "carrier-1", ids["c3"], "--withdraw", *c)["id"]
        ids["reassign"] = _cli("reassign", "--as", "carrier-1", REASSIGNED, "--at", at, *c)["id"]
        net.wait_converged(timeout=30)
        ids["decision"] = _cli("decide", "--as", "institute", ids["appeal"], "--uphold", *c)["id"]
        net.wait_converged(timeout=30)
        reader = node_reader(net.dir, net.consortium, "carrier-1", "carrier-1", tls)
        w = WebNet(net, reader, tls, ids)
        _settled(w, [MARKED, APPEALED, WITHDRAWN, REASSIGNED, UNMARKED])
        yield w
    finally:
        tls.close()
        net.stop_all()


# ------------------------------------------------------------------ the answer


def _reverify(w: WebNet, rep: dict[str, Any]) -> V.Entry | None:
    """What a client does with the API's bytes alone: the view checkpoint's
    signatures, the view proof against its root, each record's inclusion
    proof against the node's signed log checkpoint."""
    view = open_view(w.cons, rep["view_checkpoint"])
    assert len(view.cosigned_at) >= w.cons.policy.cosign_quorum
    entry_bytes = base64.b64decode(rep["entry"]) if rep["entry"] else None
    entry = V.verify_lookup(
        rep["number"], entry_bytes, base64.b64decode(rep["proof"]), view.checkpoint.root
    )
    if entry is None:
        return None
    log = rep["log_checkpoint"]
    origin = log_origin(w.cons.name, "carrier-1")
    key = w.cons.participant("carrier-1").public_key
    cp = open_checkpoint(log["note"], Verifier.for_key(origin, key), origin)
    assert len(log["cosigned_by"]) >= w.cons.policy.cosign_quorum
    for x in rep["records"]:
        merkle.verify_inclusion(
            bytes.fromhex(x["leaf_hash"]),
            x["index"],
            cp.size,
            [bytes.fromhex(h) for h in x["inclusion"]["path"]],
            cp.root,
        )
    return entry


def test_api_answer_carries_bytes_a_client_reverifies(web_net: WebNet) -> None:
    r = web_net.app().test_client().get(f"/api/v1/numbers/{MARKED}")
    assert r.status_code == 200 and r.mimetype == "application/json"
    rep = r.get_json()
    assert {"v", "number", "at_ms", "entry", "proof", "view_checkpoint", "answer", "view",
            "verified", "records", "log_checkpoint"} <= set(rep)
    assert rep["number"] == MARKED and rep["verified"] == {"ok": True, "error": None}
    entry = _reverify(web_net, rep)
    assert entry is not None and entry.number == MARKED
    # the evaluated answer is the proven entry's, evaluated at the answer's time
    assert rep["answer"]["category"] == "fraud" and rep["answer"]["risk"] == "high"
    ours = entry.evaluate(rep["at_ms"]).to_json()
    assert rep["answer"]["markers"] == ours["markers"]
    assert {m["participant"] for m in rep["answer"]["markers"]} == {"carrier-1", "internet-1"}
    # every record the entry names has its index in the node's log
    by_id = {x["id"]: x for x in rep["records"]}
    assert by_id[web_net.ids["c1"]]["issuer"] == "carrier-1"
    assert by_id[web_net.ids["c1"]]["kind"] == "mark"
    assert by_id[web_net.ids["c1"]]["evidence_digest"] == EVIDENCE.hex()
    assert isinstance(by_id[web_net.ids["i1"]]["index"], int)


def test_api_unmarked_number_proves_absence(web_net: WebNet) -> None:
    rep = web_net.app().test_client().get(f"/api/v1/numbers/{UNMARKED}").get_json()
    assert rep["entry"] is None and rep["verified"]["ok"] is True
    assert rep["answer"]["category"] is None and rep["answer"]["markers"] == []
    assert _reverify(web_net, rep) is None  # the proof of absence verifies


def test_number_page_shows_markers_with_their_log_proofs(web_net: WebNet) -> None:
    r = web_net.app().test_client().get(f"/numbers/{MARKED}")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert "诈骗 fraud" in html and "高风险 high" in html
    assert html.count('class="marker"') == 2
    assert 'data-participant="carrier-1"' in html and 'data-participant="internet-1"' in html
    assert "✓ 已证明 in the log" in html
    assert EVIDENCE.hex() in html  # the evidence digest, from the mark record itself
    rep = web_net.app().test_client().get(f"/api/v1/numbers/{MARKED}").get_json()
    assert rep["view"]["root"] in html  # the view checkpoint the answer is proven against
    assert f"{len(rep['view']['cosigned_by']) + 1} of 3 members" in html
    for x in rep["records"]:
        assert f"#{x['index']}" in html
    # the page itself runs no inline script: only the module file
    assert '<script type="module" src="/static/number.js"></script>' in html
    assert html.count("<script") == 1


def test_number_page_shows_set_aside_marks_and_the_appeal_steps(web_net: WebNet) -> None:
    c = web_net.app().test_client()
    html = c.get(f"/numbers/{APPEALED}").get_data(as_text=True)
    assert 'id="appeals"' in html and "申诉成立 upheld" in html
    assert "申诉成立 appeal upheld" in html  # the mark set aside, and why
    assert web_net.ids["appeal"][:16] in html and "by the institute" in html
    assert "carrier-1" in html  # who filed it
    rep = c.get(f"/api/v1/numbers/{APPEALED}").get_json()
    (ap,) = rep["entry_detail"]["appeals"]
    assert ap["by"] == "carrier-1" and ap["status"] == "upheld"
    assert ap["closed_by"] == web_net.ids["decision"]
    assert rep["answer"]["markers"] == [] and rep["answer"]["set_aside"][0]["reason"] == (
        "appeal upheld"
    )
    ids = {x["id"] for x in rep["records"]}
    assert {web_net.ids["i2"], web_net.ids["appeal"], web_net.ids["decision"]} <= ids
    html = c.get(f"/numbers/{WITHDRAWN}").get_data(as_text=True)
    assert "已撤回 withdrawn" in html
    html = c.get(f"/numbers/{REASSIGNED}").get_data(as_text=True)
    assert "号码已转让 reassigned" in html and "当前号主自 Holder since" in html
    rep = c.get(f"/api/v1/numbers/{REASSIGNED}").get_json()
    assert rep["answer"]["tenure_since"] is not None
    assert web_net.ids["reassign"] in {x["id"] for x in rep["records"]}


def test_unmarked_page_says_so(web_net: WebNet) -> None:
    html = web_net.app().test_client().get(f"/numbers/{UNMARKED}").get_data(as_text=True)
    assert 'id="unmarked"' in html and "not marked" in html
    rep = web_net.app().test_client().get(f"/api/v1/numbers/{UNMARKED}").get_json()
    assert f'<code id="proof">{rep["proof"]}</code>' in html and "proof of absence" in html
    assert 'class="marker"' not in html


def test_search_form_and_national_forms_redirect_to_the_normalized_page(web_net: WebNet) -> None:
    c = web_net.app().test_client()
    assert "<form" in c.get("/").get_data(as_text=True)
    r = c.get("/?number=138-1234-5001")
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/numbers/{MARKED}")
    r = c.get("/numbers/13812345001")
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/numbers/{MARKED}")


# ------------------------------------------------------------------ abuse


@pytest.mark.parametrize(
    "path",
    [
        "/numbers/call-me",
        "/api/v1/numbers/call-me",
        "/?number=call-me",
        "/numbers/" + "1" * 200,
        "/api/v1/numbers/" + "1" * 200,
    ],
)
def test_a_number_that_does_not_normalize_is_400_with_the_reason(
    web_net: WebNet, path: str
) -> None:
    before = web_net.net.heads("carrier-1")
    r = web_net.app().test_client().get(path)
    assert r.status_code == 400
    text = r.get_data(as_text=True)
    if path.startswith("/api/"):
        assert r.get_json()["status"] == 400 and "not a phone number" in r.get_json()["error"]
    else:
        assert "not a phone number" in text and "号码无效" in text
    assert web_net.net.heads("carrier-1") == before  # and nothing was issued


@pytest.mark.parametrize(
    "path",
    [
        "/numbers/" + SCRIPT,
        "/?number=" + SCRIPT,
        "/numbers/%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
        "/?number=%27%3E%3Csvg%20onload%3Dalert(1)%3E",
    ],
)
def test_what_a_person_typed_is_escaped(web_net: WebNet, path: str) -> None:
    r = web_net.app().test_client().get(path)
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    assert "<script>alert" not in html and "<img" not in html and "<svg" not in html
    assert "&lt;" in html  # quoted back, escaped
    # typed back into the search box, and still one attribute of it
    box = html[html.index('<input id="q"'):].split(">", 1)[0]
    value = box.split('value="', 1)[1].split('"', 1)[0]
    assert value and "<" not in value and "&" in value
    assert box.endswith('" maxlength="64" autocomplete="off"')
    assert html.count("<script") == 0  # an error page runs nothing


def test_extra_blueprints_get_the_context_and_the_headers(web_net: WebNet) -> None:
    from flask import Blueprint

    from node.web.app import error_response, web_context

    bp = Blueprint("extra", __name__)

    @bp.get("/extra")
    def extra() -> Any:
        return {"node": web_context().reader.node_id, "name": web_context().consortium.name}

    @bp.get("/api/v1/extra-error")
    def extra_error() -> Any:
        return error_response(404, "no such appeal")

    c = web_net.app(blueprints=[bp]).test_client()
    r = c.get("/extra")
    assert r.get_json() == {"node": "carrier-1", "name": web_net.cons.name}
    assert r.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    r = c.get("/api/v1/extra-error")
    assert r.status_code == 404 and r.get_json() == {"error": "no such appeal", "status": 404}


def test_api_error_quoting_a_script_is_json_not_html(web_net: WebNet) -> None:
    r = web_net.app().test_client().get("/api/v1/numbers/" + SCRIPT)
    assert r.status_code == 400 and r.mimetype == "application/json"
    assert r.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path", ["/", f"/numbers/{MARKED}", f"/api/v1/numbers/{MARKED}", "/numbers/x",
             "/static/verify.js", "/nowhere", "/api/v1/consortium"]
)
def test_security_headers_on_every_response(web_net: WebNet, path: str) -> None:
    r = web_net.app().test_client().get(path)
    for k, v in SECURITY_HEADERS.items():
        assert r.headers.get(k) == v, (path, k)
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp


def test_unknown_path_is_404_and_post_is_405(web_net: WebNet) -> None:
    c = web_net.app().test_client()
    assert c.get("/api/v1/nothing").status_code == 404
    assert c.get("/api/v1/nothing").get_json()["status"] == 404
    assert c.post(f"/api/v1/numbers/{MARKED}").status_code == 405


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lookups_are_limited_per_client_address(web_net: WebNet) -> None:
    clock = _Clock()
    app = web_net.app(rate=RateLimit(per_minute=60, burst=2), monotonic=clock)
    c = app.test_client()
    a = {"REMOTE_ADDR": "192.0.2.1"}
    b = {"REMOTE_ADDR": "192.0.2.2"}
    assert c.get(f"/numbers/{MARKED}", environ_base=a).status_code == 200
    assert c.get(f"/api/v1/numbers/{MARKED}", environ_base=a).status_code == 200
    r = c.get(f"/api/v1/numbers/{MARKED}", environ_base=a)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert r.get_json()["status"] == 429
    r = c.get(f"/numbers/{MARKED}", environ_base=a)
    assert r.status_code == 429 and "too many lookups" in r.get_data(as_text=True)
    # another address is not held back; the first one is again once a token is back
    assert c.get(f"/numbers/{MARKED}", environ_base=b).status_code == 200
    clock.t += 1.0
    assert c.get(f"/numbers/{MARKED}", environ_base=a).status_code == 200
    # bad input costs a token too (no free probing)
    clock.t += 2.0
    c.get("/numbers/call-me", environ_base=a)
    c.get("/numbers/call-me", environ_base=a)
    assert c.get("/numbers/call-me", environ_base=a).status_code == 429


def test_address_limiter_refills_and_forgets_beyond_its_bound() -> None:
    lim = AddressLimiter(RateLimit(per_minute=6, burst=1), max_addresses=2)
    assert lim.take("a", 0.0) is None
    assert lim.take("a", 1.0) == pytest.approx(9.0)  # one token every 10 s
    assert lim.take("a", 10.0) is None
    lim.take("b", 10.0)
    lim.take("c", 10.0)  # "a" is forgotten: it starts again with a full bucket
    assert lim.take("a", 10.5) is None
    for bad in ({"per_minute": -1}, {"per_minute": float("nan")}, {"burst": 0}):
        with pytest.raises(ValueError):
            RateLimit(**bad)
    assert AddressLimiter(RateLimit(per_minute=0)).take("a", 0.0) is None


# ------------------------------------------------------------------ through waitress


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_through_waitress_on_loopback(web_net: WebNet) -> None:
    app = web_net.app(rate=RateLimit(per_minute=60, burst=3))
    with WebServer(app) as srv:
        status, headers, body = _get(f"{srv.url}/numbers/{MARKED}")
        assert status == 200 and "诈骗 fraud" in body.decode()
        assert headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"
        status, _, body = _get(f"{srv.url}/api/v1/numbers/{UNMARKED}")
        assert status == 200 and json.loads(body)["entry"] is None
        status, _, body = _get(f"{srv.url}/numbers/%3Cscript%3E")
        assert status == 400 and b"<script>" not in body and b"&lt;script&gt;" in body
        status, headers, _ = _get(f"{srv.url}/numbers/{MARKED}")
        assert status == 429 and int(headers["Retry-After"]) >= 1
        status, headers, body = _get(f"{srv.url}/static/vendor/noble-ed25519/LICENSE")
        assert status == 200 and b"MIT License" in body


def test_node_down_is_503(web_net: WebNet, tmp_path: Path) -> None:
    # a reader whose node does not answer: port 9 on loopback (nothing listens)
    from node import client

    ch = client.public_channel(web_net.net.dir, "127.0.0.1:9", "carrier-1")
    from markex.v1 import service_pb2_grpc as rpc

    app = create_app(web_net.cons, NodeReader("carrier-1", rpc.PublicStub(ch)),
                     rate=RateLimit(per_minute=0))
    try:
        r = app.test_client().get(f"/numbers/{MARKED}")
        assert r.status_code == 503 and "did not answer" in r.get_data(as_text=True)
    finally:
        ch.close()


# ------------------------------------------------------------------ the command


def test_markex_web_command_serves_the_pages(web_net: WebNet) -> None:
    port = free_port_block(1, start=33000)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "web", "--consortium", str(web_net.net.dir),
         "--as", "carrier-1", "--node", "carrier-1", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line
        status, _, body = _get(f"http://127.0.0.1:{port}/numbers/{MARKED}")
        assert status == 200 and 'data-participant="internet-1"' in body.decode()
        # the publishing pages (node/web/publish.py) are served beside the number pages
        status, headers, body = _get(f"http://127.0.0.1:{port}/api/v1/stats")
        assert status == 200 and headers["X-Frame-Options"] == "DENY", body[:300]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_markex_web_refuses_a_bad_listen_address(
    web_net: WebNet, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["web", "--consortium", str(web_net.net.dir), "--as", "carrier-1",
                 "--listen", "everywhere"])
    assert code == 2 and "HOST:PORT" in capsys.readouterr().err
    code = main(["web", "--consortium", str(web_net.net.dir), "--as", "carrier-1",
                 "--burst", "0"])
    assert code == 2 and "--burst" in capsys.readouterr().err
    code = main(["web", "--consortium", str(web_net.net.dir), "--lookups-per-minute", "nan"])
    assert code == 2 and "not a finite number" in capsys.readouterr().err
    code = main(["web", "--consortium", str(web_net.net.dir), "--listen", "127.0.0.1:0"])
    # without --as there is neither a pinned key nor a member credential
    assert code == 2 and "--as ID" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["everywhere", "[::1", "::1:80", "[nothost]:80", ":80",
                                 "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:-1"])
def test_listen_addresses_that_are_not_host_port(bad: str) -> None:
    from node.command import UsageError
    from node.webcli import parse_listen

    with pytest.raises(UsageError, match="is not HOST:PORT"):
        parse_listen(bad)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("localhost:8080") == ("localhost", 8080)


def test_markex_web_on_a_taken_port_says_so(
    web_net: WebNet, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["web", "--consortium", str(web_net.net.dir), "--as", "carrier-1",
                     "--listen", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "in use" in err


def test_the_command_line_defaults_are_the_front_end_s() -> None:
    from node.cli import build_parser
    from node.webcli import DEFAULT_LISTEN

    args = build_parser().parse_args(["web"])
    assert args.listen == DEFAULT_LISTEN
    assert RateLimit(args.lookups_per_minute, args.burst) == RateLimit()


def test_the_page_reads_without_javascript_and_names_what_it_verified(web_net: WebNet) -> None:
    html = web_net.app().test_client().get(f"/numbers/{MARKED}").get_data(as_text=True)
    assert 'id="server-verdict"' in html and 'data-verified="yes"' in html
    assert "your browser has not checked this answer" in html
    Note.parse(web_net.app().test_client().get(f"/api/v1/numbers/{MARKED}")
               .get_json()["view_checkpoint"])


# ------------------------------------------------------------------ the batch form


def test_api_batch_answers_verify_under_one_checkpoint(web_net: WebNet) -> None:
    c = web_net.app().test_client()
    r = c.post("/api/v1/numbers", json={"numbers": ["13812345001", UNMARKED, APPEALED]})
    assert r.status_code == 200
    rep = r.get_json()
    assert [x["number"] for x in rep["results"]] == [MARKED, UNMARKED, APPEALED]
    view = open_view(web_net.cons, rep["view_checkpoint"])
    got = [
        V.verify_lookup(
            x["number"],
            base64.b64decode(x["entry"]) if x["entry"] else None,
            base64.b64decode(x["proof"]),
            view.checkpoint.root,
        )
        for x in rep["results"]
    ]
    assert got[0] is not None and got[0].number == MARKED and got[1] is None


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({"numbers": []}, 400, "the body is"),
        ({"numbers": "13812345001"}, 400, "the body is"),
        ({"numbers": [1380]}, 400, "the body is"),
        ([MARKED], 400, "the body is"),
        ({"numbers": [MARKED, SCRIPT]}, 400, "not a phone number"),
        ({"numbers": [MARKED] * 1001}, 413, "at most 1000"),
    ],
)
def test_api_batch_refuses_bad_bodies(
    web_net: WebNet, body: Any, status: int, needle: str
) -> None:
    r = web_net.app().test_client().post("/api/v1/numbers", json=body)
    assert r.status_code == status and needle in r.get_json()["error"]


def test_api_batch_costs_one_lookup_per_number(web_net: WebNet) -> None:
    clock = _Clock()
    app = web_net.app(rate=RateLimit(per_minute=60, burst=5), monotonic=clock)
    c = app.test_client()
    r = c.post("/api/v1/numbers", json={"numbers": [MARKED] * 6})
    assert r.status_code == 413 and "at most 5" in r.get_json()["error"]
    assert c.post("/api/v1/numbers", json={"numbers": [MARKED] * 4}).status_code == 200
    r = c.post("/api/v1/numbers", json={"numbers": [MARKED] * 2})
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    r = c.post("/api/v1/numbers", data="x" * 70_000, content_type="application/json")
    assert r.status_code == 413


# ------------------------------------------------------------------ make bench


def test_web_benchmarks_report_in_the_fixed_format() -> None:
    from bench import report
    from bench.__main__ import BENCHMARKS
    from bench.web_bench import web_suite

    out = web_suite(marked=5, seconds=1.0)
    for name in ("web_lookup_p99", "web_api_lookup_batch"):
        assert BENCHMARKS[name].module == "bench.web_bench"
        report.check_result(name, out[name])
    p99 = out["web_lookup_p99"]
    assert p99["unit"] == "ms" and p99["ratio"] == pytest.approx(50.0 / p99["value"])
    api = out["web_api_lookup_batch"]
    assert api["target"] == 0.5 and api["ratio"] == pytest.approx(api["value"] / api["limit"])


# ------------------------------------------------------------------ what the node may bend


class _ThinLog(NodeReader):
    """The node's log checkpoint with only its own signature (no member cosigned it)."""

    def log_checkpoint(self) -> str:
        parsed = Note.parse(super().log_checkpoint())
        return Note(parsed.text, parsed.signatures[:1]).to_text()


def test_records_are_proven_only_against_a_cosigned_log_checkpoint(web_net: WebNet) -> None:
    r = web_net.reader
    app = create_app(web_net.cons, _ThinLog(r.node_id, r.public, r.audit),
                     rate=RateLimit(per_minute=0))
    rep = app.test_client().get(f"/api/v1/numbers/{MARKED}").get_json()
    assert rep["verified"]["ok"] is True  # the view answer itself is fine
    assert "cosigned by 0 member(s)" in rep["log_error"]
    assert rep["records"] and not any(x["verified"] for x in rep["records"])
    assert all(x["why"] == "not yet in a cosigned log checkpoint" for x in rep["records"])


def test_without_a_member_credential_records_have_no_index(web_net: WebNet) -> None:
    app = create_app(web_net.cons, NodeReader("carrier-1", web_net.reader.public, None),
                     rate=RateLimit(per_minute=0))
    rep = app.test_client().get(f"/api/v1/numbers/{MARKED}").get_json()
    assert rep["verified"]["ok"] is True
    assert {x["why"] for x in rep["records"]} == {"no member credential"}
    assert all(x["index"] is None for x in rep["records"])


def test_behind_a_trusted_proxy_each_visitor_has_its_own_limit(web_net: WebNet) -> None:
    """X-Forwarded-For names the client only when the connection comes from
    a proxy named with --trusted-proxy, and only the hops it appended: a
    visitor writing the header himself stays in his own bucket."""
    clock = _Clock()
    proxies = parse_proxies(["10.0.0.0/8", "2001:db8::1"])
    app = web_net.app(rate=RateLimit(per_minute=60, burst=1), monotonic=clock, proxies=proxies)
    c = app.test_client()
    proxy = {"REMOTE_ADDR": "10.1.2.3"}

    def via(forwarded: str) -> int:
        return c.get(f"/api/v1/numbers/{MARKED}", environ_base=proxy,
                     headers={"X-Forwarded-For": forwarded}).status_code

    assert via("198.51.100.1") == 200
    assert via("198.51.100.2") == 200           # another visitor, same proxy
    assert via("198.51.100.1") == 429           # the first one's bucket is empty
    # a forged left-most hop is not read: the proxy appended the real one
    assert via("198.51.100.9, 198.51.100.1") == 429
    # two trusted proxies in a row: the visitor is the hop before them
    assert via("198.51.100.3, 10.9.9.9") == 200
    assert via("198.51.100.3") == 429
    # from an address that is not a trusted proxy the header is ignored
    direct = {"REMOTE_ADDR": "203.0.113.7"}
    hdr = {"X-Forwarded-For": "198.51.100.4"}
    assert c.get(f"/api/v1/numbers/{MARKED}", environ_base=direct, headers=hdr).status_code == 200
    assert c.get(f"/api/v1/numbers/{MARKED}", environ_base=direct,
                 headers={"X-Forwarded-For": "198.51.100.5"}).status_code == 429


def test_waitress_hands_the_forwarded_header_to_the_limit(web_net: WebNet) -> None:
    """The same through waitress on a real socket (it drops X-Forwarded-For
    by default): two visitors behind the trusted proxy 127.0.0.1 have a
    bucket each."""
    import http.client

    from node.webcli import WebServer

    app = web_net.app(rate=RateLimit(per_minute=60, burst=1), proxies=parse_proxies(["127.0.0.1"]))
    with WebServer(app) as server:
        def via(forwarded: str) -> int:
            c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            try:
                c.request("GET", f"/api/v1/numbers/{MARKED}",
                          headers={"X-Forwarded-For": forwarded})
                return c.getresponse().status
            finally:
                c.close()

        assert via("198.51.100.1") == 200
        assert via("198.51.100.2") == 200
        assert via("198.51.100.1") == 429


def test_client_address_reads_only_the_trusted_hops() -> None:
    proxies = parse_proxies(["10.0.0.0/8"])
    assert client_address("203.0.113.7", "198.51.100.1", proxies) == "203.0.113.7"
    assert client_address("10.0.0.1", "198.51.100.1", proxies) == "198.51.100.1"
    assert client_address("10.0.0.1", " 198.51.100.1 , 10.0.0.2", proxies) == "198.51.100.1"
    assert client_address("10.0.0.1", "10.0.0.3, 10.0.0.2", proxies) == "10.0.0.3"
    assert client_address("10.0.0.1", "198.51.100.1, junk", proxies) == "10.0.0.1"
    assert client_address("10.0.0.1", None, proxies) == "10.0.0.1"
    assert client_address("10.0.0.1", "198.51.100.1", ()) == "10.0.0.1"
    with pytest.raises(ValueError, match="not an IP address"):
        parse_proxies(["proxy.example"])
