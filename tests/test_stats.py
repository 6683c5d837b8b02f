"""The statistics of one export (ledger/export.py `figures`) against a view
worked out by hand, and the publishing blueprint (node/web/publish.py) on a
bare Flask app reading real nodes in this process: its pages' status,
content type and JSON keys, the downloads verifying as `markex view
verify-export` verifies, one export per view, and 503 when there is none."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import grpc
import pytest
from flask import Flask

from keys.layout import NodeConfig
from ledger import export as X
from ledger import view as V
from ledger.numbers import normalize
from markex.v1 import service_pb2 as pb
from node.cli import main
from node.client import INSTITUTE_KEY_ENV
from node.exportcli import verify_export_file
from node.web import publish
from tests.exportbook import FIGURES, H, small_view
from tests.test_export import InProcessNet

pytestmark = pytest.mark.timeout(240)


# ------------------------------------------------------------------ figures (pure)


def test_figures_of_a_small_view_are_the_hand_computed_ones() -> None:
    sv = small_view()
    at = V.parse_view_checkpoint(sv.note.split("\n\n")[0] + "\n").signed_at_ms
    assert X.figures(sv.entries, at) == FIGURES
    # Just before the first decision (and N4's appeal): two appeals pending, no decision times.
    early = X.figures(sv.entries, at - 8 * H - 1)
    assert early["appeals"] == {"pending": 2, "decided": 0, "upheld": 0, "rejected": 0,
                                "withdrawn": 0}
    assert early["decision_ms"] == {"count": 0, "median": None, "p90": None}
    # N2's mark still counts then: its appeal was not upheld yet.
    assert early["by_category"] == {"fraud": 3, "harassment": 1, "marketing": 1}


def test_figures_of_nothing_and_percentiles() -> None:
    empty = X.figures([], 0)
    assert empty["entries"] == 0 and empty["by_risk"] == {"none": 0, "medium": 0, "high": 0}
    assert empty["decision_ms"]["median"] is None
    # nearest rank: the smallest value with at least p % at or below it
    vals = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6]
    assert X._nearest_rank(vals, 50) == 5 and X._nearest_rank(vals, 90) == 9
    assert X._nearest_rank([7], 90) == 7


def test_statuses_are_the_views() -> None:
    assert set(X.APPEAL_STATUSES) == set(V.APPEAL_STATUSES)
    assert set(X.RISKS) == {V.RISK_NONE, V.RISK_MEDIUM, V.RISK_HIGH}


# ------------------------------------------------------------------ the blueprint


N = [normalize(n) for n in ("13812350001", "13812350002", "13812350003", "13812350004")]


class CountingAudit:
    """The real Audit stub, counting ExportView calls."""

    def __init__(self, stub: Any) -> None:
        self.stub = stub
        self.exports = 0
        self.down = False       # True: the call goes to a port where no node listens

    def ExportView(self, *a: Any, **kw: Any) -> Any:  # noqa: N802
        self.exports += 1
        if self.down:
            return _Down().ExportView(*a, **kw)
        return self.stub.ExportView(*a, **kw)

    def GetEntries(self, *a: Any, **kw: Any) -> Any:  # noqa: N802
        self.entries = getattr(self, "entries", 0) + 1
        if self.down:
            return _Down().GetEntries(*a, **kw)
        return self.stub.GetEntries(*a, **kw)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """N0 fraud by carrier-1 and internet-1; N1 fraud by carrier-1; N2
    marketing by carrier-1, appealed by internet-1 and rejected; N3
    harassment by internet-1, appealed by carrier-1, pending."""
    n = InProcessNet(tmp_path_factory.mktemp("stats") / "c", carriers=1, internet=1,
                     sync_interval=0.2)
    n.start_all()
    with pytest.MonkeyPatch.context() as mp:
        key = NodeConfig.for_participant(n.dir, "institute").institute_key
        mp.setenv(INSTITUTE_KEY_ENV, base64.b64encode(key).decode())
        try:
            ids = {}
            for label, who, num, cat in [("c0", "carrier-1", N[0], "fraud"),
                                         ("i0", "internet-1", N[0], "fraud"),
                                         ("c1", "carrier-1", N[1], "fraud"),
                                         ("c2", "carrier-1", N[2], "marketing"),
                                         ("i3", "internet-1", N[3], "harassment")]:
                ids[label] = _json(["mark", "--as", who, num, cat], n)["id"]
            n.wait_converged(timeout=30)
            a2 = _json(["correct", "--as", "internet-1", ids["c2"], "--withdraw"], n)["id"]
            _json(["correct", "--as", "carrier-1", ids["i3"], "--withdraw"], n)
            n.wait_converged(timeout=30)
            time.sleep(0.01)
            _json(["decide", "--as", "institute", a2, "--reject"], n)
            n.wait_converged(timeout=30)
            yield n
        finally:
            n.stop_all()


def _json(argv: list[str], net: Any) -> dict[str, Any]:
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        assert main([*argv, "--consortium", str(net.dir), "--json"]) == 0
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def _app(net: Any, audit: Any | None = "real", refresh_s: float = 60) -> Flask:
    app = Flask("test-publish")
    app.config["MARKEX_EXPORT_REFRESH_S"] = refresh_s
    app.extensions["markex"] = {
        "consortium": net.consortium,
        "public": net.public("carrier-1"),
        "audit": CountingAudit(net.audit("carrier-1", "carrier-1")) if audit == "real" else audit,
        "node": "carrier-1",
    }
    app.register_blueprint(publish.bp)
    return app


def test_api_stats_gives_the_figures_of_the_nodes_view(net: Any) -> None:
    app = _app(net)
    r = app.test_client().get("/api/v1/stats")
    assert r.status_code == 200 and r.mimetype == "application/json"
    body = r.get_json()
    assert set(body) == {"entries", "by_category", "by_risk", "marks_by_participant",
                         "appeals", "decision_ms", "checkpoint", "export"}
    assert body["entries"] == 4
    assert body["by_category"] == {"fraud": 2, "harassment": 1, "marketing": 1}
    assert body["by_risk"] == {"none": 0, "medium": 3, "high": 1}
    assert body["marks_by_participant"] == {"carrier-1": 3, "internet-1": 2}
    assert body["appeals"] == {"pending": 1, "decided": 1, "upheld": 0, "rejected": 1,
                               "withdrawn": 0}
    d = body["decision_ms"]
    assert d["count"] == 1 and d["median"] == d["p90"] and d["median"] > 0
    cp = body["checkpoint"]
    node_cp = net.public("carrier-1").GetViewCheckpoint(pb.GetViewCheckpointRequest()).note
    assert cp["root"] == V.parse_view_checkpoint(node_cp.split("\n\n")[0] + "\n").root.hex()
    assert cp["signed_by"] == "carrier-1" and len(cp["cosigned_by"]) >= cp["quorum"] == 2
    assert body["export"] == {"csv": "/export/latest.csv", "jsonl": "/export/latest.jsonl"}


def test_stats_page_and_charts(net: Any) -> None:
    c = _app(net).test_client()
    r = c.get("/stats")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert "诈骗 fraud" in page and "广告推销 marketing" in page and "中风险 medium" in page
    assert "<script" not in page
    for name in publish.CHARTS:
        assert f'src="/stats/charts/{name}.svg?v=' in page
        svg = c.get(f"/stats/charts/{name}.svg")
        assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
        text = svg.get_data(as_text=True)
        assert "<svg" in text and "<script" not in text
        assert svg.get_data() == c.get(f"/stats/charts/{name}.svg").get_data()
    assert "carrier-1" in c.get("/stats/charts/participants.svg").get_data(as_text=True)
    assert c.get("/stats/charts/nope.svg").status_code == 404


@pytest.mark.parametrize("fmt,mimetype", [("csv", "text/csv"), ("jsonl", "application/jsonl")])
def test_latest_export_downloads_and_verifies(net: Any, fmt: str, mimetype: str) -> None:
    app = _app(net)
    c = app.test_client()
    r = c.get(f"/export/latest.{fmt}")
    assert r.status_code == 200 and r.mimetype == mimetype
    assert r.headers["Content-Disposition"].startswith("attachment; filename=\"markex-view-")
    obj = verify_export_file(net.consortium, io.StringIO(r.get_data(as_text=True), newline=""))
    assert obj["ok"] and obj["entries"] == 4 and obj["signed_by"] == "carrier-1"
    assert obj["root"] == c.get("/api/v1/stats").get_json()["checkpoint"]["root"]
    assert c.get("/export/latest.xml").status_code == 404


def test_one_export_per_view(net: Any) -> None:
    app = _app(net, refresh_s=0)
    audit = app.extensions["markex"]["audit"]
    c = app.test_client()
    first = c.get("/api/v1/stats").get_json()
    c.get("/export/latest.csv")
    c.get("/stats")
    assert audit.exports == 1            # the view did not move: one export serves all three
    _json(["mark", "--as", "carrier-1", "13812350005", "taxi"], net)
    net.wait_converged(timeout=30)
    deadline = time.monotonic() + 30
    while (now := c.get("/api/v1/stats").get_json())["entries"] == first["entries"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert now["entries"] == 5 and now["by_category"]["taxi"] == 1
    assert now["checkpoint"]["root"] != first["checkpoint"]["root"]
    assert audit.exports >= 2


class _Down:
    def ExportView(self, *a: Any, **kw: Any) -> Any:  # noqa: N802
        ch = grpc.insecure_channel("127.0.0.1:1")
        from markex.v1 import service_pb2_grpc as rpc

        return rpc.AuditStub(ch).ExportView(*a, **{**kw, "timeout": 1})

    def GetEntries(self, *a: Any, **kw: Any) -> Any:  # noqa: N802
        ch = grpc.insecure_channel("127.0.0.1:1")
        from markex.v1 import service_pb2_grpc as rpc

        return rpc.AuditStub(ch).GetEntries(*a, **{**kw, "timeout": 1})


@pytest.mark.parametrize("audit", [None, _Down()], ids=["no member credential", "node down"])
def test_no_export_is_503(net: Any, audit: Any) -> None:
    c = _app(net, audit=audit).test_client()
    for path in ("/api/v1/stats", "/stats", "/export/latest.csv", "/stats/charts/risk.svg"):
        assert c.get(path).status_code == 503, path


def test_the_app_may_keep_its_context_as_an_object(net: Any) -> None:
    """node/web/app.py's WebContext: `consortium`, `monotonic` and a `reader`
    holding `public`, `audit` and `node_id`: the blueprint reads that shape too."""
    from types import SimpleNamespace

    app = Flask("test-publish-object")
    reader = SimpleNamespace(node_id="carrier-1", public=net.public("carrier-1"),
                             audit=net.audit("carrier-1", "carrier-1"))
    app.extensions["markex"] = SimpleNamespace(consortium=net.consortium, reader=reader,
                                               monotonic=time.monotonic)
    app.register_blueprint(publish.bp)
    r = app.test_client().get("/api/v1/stats")
    assert r.status_code == 200 and r.get_json()["checkpoint"]["signed_by"] == "carrier-1"


def test_the_last_verified_export_stays_while_the_node_gives_none(net: Any) -> None:
    app = _app(net, refresh_s=0)
    audit = app.extensions["markex"]["audit"]
    c = app.test_client()
    first = c.get("/api/v1/stats").get_json()
    audit.down = True
    _json(["mark", "--as", "carrier-1", "13812350006", "delivery"], net)   # the view moves
    again = c.get("/api/v1/stats")
    assert again.status_code == 200 and audit.exports == 2     # asked, refused, kept the last
    assert again.get_json()["checkpoint"] == first["checkpoint"]
    assert c.get("/export/latest.jsonl").status_code == 200


# ------------------------------------------------------------------ accountability (issue 16)
# ledger/stats.py on signed records (pure), then `markex stats` on real nodes and offline.

from ledger.errors import BadInput  # noqa: E402
from ledger.record import Correction, Mark, Record  # noqa: E402
from ledger.stats import Tally, accountability  # noqa: E402
from tests.conftest import KEYS, NAME, NOW, make_consortium  # noqa: E402
from tests.test_trail import NODES, chain, run_cli  # noqa: E402, F401

HOUR = 3_600_000


class Feeds:
    """Signed records, each participant's seq counted."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}

    def __call__(self, pid: str, at: int, payload: Any) -> Record:
        self.seq[pid] = self.seq.get(pid, 0) + 1
        prev = b"" if self.seq[pid] == 1 else b"\x00" * 32
        return Record.issue(KEYS[pid], pid, self.seq[pid], prev, at, payload, consortium=NAME)


def _overturned_marker() -> tuple[list[Record], Record]:
    """internet-1 marks four numbers: two appeals of them upheld (after 2 h and
    10 h), one rejected (after 1 h), one withdrawn by its appellant; carrier-1
    withdraws its own mark (no appeal), a carrier's "decision" (the view
    ignores it) and a second decision (the first counts) change nothing.
    Returns the records and the last decision."""
    rec = Feeds()
    m = [rec("internet-1", NOW + i, Mark(f"+861381234010{i}", "fraud")) for i in range(4)]
    own = rec("carrier-1", NOW, Mark("+8613812340200", "fraud"))
    a1 = rec("carrier-1", NOW + HOUR, Correction(targets=(m[0].id,), action="withdraw"))
    a2 = rec("carrier-2", NOW + HOUR, Correction(targets=(m[1].id, m[2].id),
                                                 action="recategorize", category="marketing"))
    a3 = rec("carrier-1", NOW + HOUR, Correction(targets=(m[3].id,), action="withdraw"))
    a4 = rec("internet-2", NOW + HOUR, Correction(targets=(m[3].id,), action="withdraw"))
    out = [*m, own, a1, a2, a3, a4,
           rec("carrier-1", NOW + 2 * HOUR, Correction(targets=(own.id,), action="withdraw")),
           rec("carrier-2", NOW + 2 * HOUR, Correction(appeal_id=a3.id, outcome="uphold")),
           rec("institute", NOW + 3 * HOUR, Correction(appeal_id=a1.id, outcome="uphold")),
           rec("institute", NOW + 2 * HOUR, Correction(appeal_id=a3.id, outcome="reject")),
           rec("institute", NOW + 11 * HOUR, Correction(appeal_id=a2.id, outcome="uphold")),
           rec("internet-2", NOW + 12 * HOUR, Correction(targets=(a4.id,), action="withdraw"))]
    last = rec("institute", NOW + 20 * HOUR, Correction(appeal_id=a1.id, outcome="reject"))
    return [*out, last], last


def test_the_stats_of_a_marker_whose_appeals_are_upheld() -> None:
    cons = make_consortium()
    records, _ = _overturned_marker()
    got = accountability(records, cons)
    assert got["participants"]["internet-1"] == {
        "marks_issued": 4, "marks_appealed": 4, "appeals_against": 4, "appeals_upheld": 2,
        "appeals_rejected": 1, "marks_overturned": 3, "overturn_rate": 0.75,
        "decision_ms": {"count": 3, "median": 2 * HOUR, "p90": 10 * HOUR},
    }
    assert got["participants"]["carrier-1"] == {
        "marks_issued": 1, "marks_appealed": 0, "appeals_against": 0, "appeals_upheld": 0,
        "appeals_rejected": 0, "marks_overturned": 0, "overturn_rate": 0.0,
        "decision_ms": {"count": 0, "median": None, "p90": None},
    }
    assert got["participants"]["internet-2"]["overturn_rate"] is None  # it marked nothing
    assert got["appeals"] == {"filed": 4, "pending": 0, "upheld": 2, "rejected": 1,
                              "withdrawn": 1}
    assert got["vector"] == {"carrier-1": 4, "carrier-2": 2, "institute": 4,
                             "internet-1": 4, "internet-2": 2}
    assert got["records"] == len(records)
    # A set is a set: any order, any repetition gives the same figures.
    assert accountability([*reversed(records), *records[:5]], cons) == got


def test_the_stats_at_a_vector_count_only_the_records_up_to_it() -> None:
    cons = make_consortium()
    records, _ = _overturned_marker()
    full = accountability(records, cons)
    # Before the institute's first decision: nothing decided yet.
    early = accountability(records, cons, {**full["vector"], "institute": 0})
    assert early["vector"] == {k: v for k, v in full["vector"].items() if k != "institute"}
    assert early["participants"]["internet-1"]["appeals_upheld"] == 0
    assert early["appeals"] == {"filed": 4, "pending": 3, "upheld": 0, "rejected": 0,
                                "withdrawn": 1}
    # A vector past the records is refused: the figures would not be its.
    with pytest.raises(BadInput, match="institute's seq 4, not 9"):
        Tally(cons, {"institute": 9}).add_all(records).figures()


def _same_but(figs: dict[str, Any], *drop: str) -> dict[str, Any]:
    return {k: v for k, v in figs.items() if k not in drop}


def test_markex_stats_gives_the_same_figures_on_every_node_and_offline(
    chain: Any,  # noqa: F811 (tests/test_trail.py's nodes)
) -> None:
    net, ids = chain
    outs = {}
    for node in NODES:
        code, out, err = run_cli(net, "stats", "--node", node)
        assert code == 0, err
        outs[node] = out
    first = outs["institute"]
    f = first["participants"]["internet-1"]
    assert (f["marks_issued"], f["marks_appealed"], f["appeals_upheld"],
            f["marks_overturned"], f["overturn_rate"]) == (2, 1, 1, 1, 0.5)
    assert f["decision_ms"]["count"] == 1 and f["decision_ms"]["median"] >= 0
    assert first["participants"]["carrier-1"]["marks_issued"] == 1
    assert first["vector"] == {"carrier-1": 3, "institute": 1, "internet-1": 2}
    for node, out in outs.items():
        assert out["source"] == node and out["checkpoint"]["node"] == node
        assert _same_but(out, "source", "checkpoint") == _same_but(first, "source", "checkpoint")
    # Offline, from one node's files alone: the same figures at the same vector.
    data = NodeConfig.for_participant(net.dir, "internet-1").data_dir
    code, off, err = run_cli(net, "stats", "--data-dir", str(data))
    assert code == 0, err
    assert off["source"] == str(data)
    assert _same_but(off, "source") == _same_but(first, "source", "checkpoint")
    # At an earlier vector (before the decision), online and offline agree too.
    code, a, err = run_cli(net, "stats", "--node", "carrier-1", "--vector",
                           "carrier-1=3,internet-1=2")
    assert code == 0, err
    code, b, err = run_cli(net, "stats", "--data-dir", str(data), "--vector",
                           "carrier-1=3,internet-1=2")
    assert code == 0, err
    assert a["participants"]["internet-1"]["appeals_upheld"] == 0
    assert _same_but(a, "source", "checkpoint") == _same_but(b, "source")


def test_markex_stats_as_text(chain: Any) -> None:  # noqa: F811
    import contextlib

    from tests.test_trail import _pinned

    net, _ = chain
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["stats", "--node", "internet-1", *_pinned(net)]) == 0
    text = buf.getvalue()
    assert "at the vector carrier-1=3, institute=1, internet-1=2" in text
    assert "50.0%" in text and "appeals: 1 filed" in text and "carrier-1" in text


def test_markex_stats_refuses_what_it_cannot_count(
    chain: Any, tmp_path: Any  # noqa: F811
) -> None:
    net, _ = chain
    code, _, err = run_cli(net, "stats")
    assert code == 2 and "exactly one of --node" in err
    code, _, err = run_cli(net, "stats", "--node", "carrier-1", "--vector", "carrier-1=9")
    assert code == 2 and "not 9" in err
    code, _, err = run_cli(net, "stats", "--node", "carrier-1", "--vector", "carrier-1")
    assert code == 2 and "ISSUER=SEQ" in err
    code, _, err = run_cli(net, "stats", "--data-dir", str(tmp_path))
    assert code == 2 and "no node database" in err


def _all_counted(net: Any, c: Any) -> dict[str, Any]:
    """The page's accuracy figures once carrier-1's cosigned log checkpoint
    covers every record it holds (the fixture waits for the feeds only)."""
    deadline = time.monotonic() + 30
    while True:
        heads = net.public("carrier-1").GetFeedHeads(pb.FeedHeadsRequest()).heads
        acc = c.get("/api/v1/stats/accountability").get_json()
        if acc["records"] == sum(h.seq for h in heads):
            return acc  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, acc["records"]
        time.sleep(0.2)


def test_the_stats_page_draws_each_participant_s_accuracy_from_the_log(net: Any) -> None:
    """internet-1's appeal of carrier-1's N2 mark was rejected; carrier-1's of
    internet-1's N3 mark is pending: nothing overturned, one decision."""
    app = _app(net, refresh_s=0)
    c = app.test_client()
    acc = _all_counted(net, c)
    _, cli, err = run_cli(net, "stats", "--node", "carrier-1")
    assert cli is not None, err
    # The page's figures are `markex stats`'s, at the same vector (the view did not move).
    assert {k: v for k, v in acc.items() if k != "checkpoint"} == \
        {k: v for k, v in cli.items() if k not in ("source", "checkpoint")}
    p = acc["participants"]
    # (Other tests of this module mark more numbers: at least the fixture's three.)
    assert p["carrier-1"]["marks_issued"] >= 3 and p["carrier-1"]["overturn_rate"] == 0.0
    assert (p["carrier-1"]["marks_appealed"], p["carrier-1"]["appeals_rejected"]) == (1, 1)
    assert p["internet-1"]["appeals_against"] == 1 and p["internet-1"]["appeals_upheld"] == 0
    assert acc["checkpoint"]["node"] == "carrier-1"
    page = c.get("/stats").get_data(as_text=True)
    assert 'id="accuracy"' in page and "markex stats --node carrier-1" in page
    assert 'id="carriers"' in page and acc["carriers"]["carrier-1"]["received"] == 0
    for name in publish.ACCURACY_CHARTS:
        assert f'src="/stats/charts/{name}.svg?v=' in page
        svg = c.get(f"/stats/charts/{name}.svg")
        assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
        text = svg.get_data(as_text=True)
        assert "<svg" in text and "<script" not in text
        assert ("carrier-1" if name == "complaints" else "internet-1") in text
    assert c.get("/stats/charts/nothing.svg").status_code == 404


def test_the_accuracy_figures_follow_the_log_and_keep_the_last_verified(net: Any) -> None:
    app = _app(net, refresh_s=0)
    audit = app.extensions["markex"]["audit"]
    c = app.test_client()
    first = _all_counted(net, c)
    asked = audit.entries
    _json(["mark", "--as", "internet-1", "13812350007", "fraud"], net)
    net.wait_converged(timeout=30)
    deadline = time.monotonic() + 30
    while (now := c.get("/api/v1/stats/accountability").get_json())["records"] == \
            first["records"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert now["participants"]["internet-1"]["marks_issued"] == \
        first["participants"]["internet-1"]["marks_issued"] + 1
    assert audit.entries - asked <= 3        # only the new entries were fetched
    audit.down = True
    again = c.get("/api/v1/stats/accountability")
    assert again.status_code == 200 and again.get_json()["records"] == now["records"]
    audit.down = False


def test_the_carriers_complaint_figures_from_the_records_alone() -> None:
    """Filed to carrier-1: one confirmed after 2 h (in the SLA), one not
    confirmed after 6 days (acknowledged late, closed late), one forwarded
    after 1 h to carrier-2, which closes it after 30 h (its close in the
    SLA), one never answered; filed to carrier-2: one left open."""
    from ledger.payloads import Handling
    from tests import test_complaints as TC

    cons = TC.CONS
    f = TC.Feeds()
    day = 24 * HOUR

    def filed(number: str = TC.C1_NUMBER, who: str = "+8613900000009") -> Record:
        return f.issue("complaints-1", TC.complaint(number, who, call_at=NOW - HOUR), NOW)

    a, b, c, d = (filed(who=f"+861390000001{i}") for i in range(4))
    e = filed(TC.C2_NUMBER)
    f.issue("carrier-1", Handling((a.id,), "confirmed", action="warning"), NOW + 2 * HOUR)
    f.issue("carrier-1", TC.forward(c.id, to="carrier-2"), NOW + HOUR)
    f.issue("carrier-2", Handling((c.id,), "not-confirmed"), NOW + 30 * HOUR)
    f.issue("carrier-1", Handling((b.id,), "not-confirmed"), NOW + 6 * day)
    got = accountability(f.records, cons)["carriers"]
    assert got["carrier-1"] == {
        "received": 4, "forwarded": 1, "acknowledged_in_sla": 2, "closed": 2,
        "closed_in_sla": 1, "open": 1,
        "handling_ms": {"count": 2, "median": 2 * HOUR, "p90": 6 * day},
    }
    assert got["carrier-2"] == {
        "received": 2, "forwarded": 0, "acknowledged_in_sla": 0, "closed": 1,
        "closed_in_sla": 1, "open": 1,
        "handling_ms": {"count": 1, "median": 30 * HOUR, "p90": 30 * HOUR},
    }
    assert d.id and e.id   # d never answered (carrier-1's open one), e carrier-2's
    # The same figures from any order of the records.
    assert accountability(list(reversed(f.records)), cons)["carriers"] == got


def test_markex_stats_refuses_entries_that_do_not_give_the_checkpoint(
    chain: Any,  # noqa: F811
) -> None:
    """A node answering GetEntries with one envelope changed, or one left out
    (the next one in its place): exit 1, nothing counted."""
    from node.connect import TlsConnect

    net, _ = chain

    class Tampering:
        def __init__(self, how: str) -> None:
            self.real, self.how = TlsConnect(), how

        def __call__(self, need: Any, dial: Any) -> Any:
            stub = self.real(need, dial)
            if need != "audit":
                return stub
            how = self.how

            class Audit:
                def GetEntries(self, request: Any, **kw: Any) -> Any:  # noqa: N802
                    got = stub.GetEntries(request, **kw)
                    if how == "changed":
                        env = bytearray(got.envelopes[-1])
                        env[-1] ^= 1
                        got.envelopes[-1] = bytes(env)
                    else:
                        del got.envelopes[0]
                    return got

            return Audit()

    for how in ("changed", "left out"):
        c = Tampering(how)
        code, out, err = run_cli(net, "stats", "--node", "carrier-1", connect=c)
        c.real.close()
        assert code == 1 and out is None, how
        assert "do not give the root" in err or "the node gave" in err, err


def test_markex_stats_offline_pins_with_the_node_toml_beside_the_files(
    chain: Any, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """Like `markex audit --data-dir`: no pin given, the node.toml whose data
    folder this is pins consortium.json; the consortium folder is found above it."""
    import contextlib

    net, _ = chain
    monkeypatch.delenv(INSTITUTE_KEY_ENV, raising=False)
    monkeypatch.delenv("MARKEX_CONSORTIUM", raising=False)
    data = NodeConfig.for_participant(net.dir, "carrier-1").data_dir
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["stats", "--data-dir", str(data), "--json"]) == 0
    assert json.loads(buf.getvalue())["participants"]["internet-1"]["marks_issued"] == 2
