"""Publishing the view on the web: the latest export for download, and the
statistics page with its figures as JSON (design.md, "Web API").

    GET /stats                       the figures as tables and charts (HTML, no script)
    GET /stats/charts/<name>.svg     one chart (matplotlib, SVG, drawn on the server)
    GET /api/v1/stats                the same figures as JSON
    GET /api/v1/stats/accountability each participant's accuracy, from the log itself
                                     (ledger/stats.py, docs/trail.md), as JSON
    GET /export/latest.csv           the latest export (docs/export.md)
    GET /export/latest.jsonl

The app's contract (node/web/app.py fills it): `current_app.extensions["markex"]`
is either a mapping with the keys

    "consortium"  the pinned Consortium
    "public"      an rpc.PublicStub of the node read (its view checkpoint)
    "audit"       an rpc.AuditStub of that node's member port, with the front
                  end's own participant certificate (Audit.ExportView); None: no export
    "node"        the node's participant id (the export must be signed by it), optional
    "monotonic"   a clock in seconds, optional (default time.monotonic)

or an object with the attributes `consortium`, `monotonic` and `reader`
(whose `public`, `audit` and `node_id` are the above). Set
`app.config["MARKEX_EXPORT_REFRESH_S"]` (default 60) for how long one export
is served before the node's view checkpoint is asked again.

Everything shown comes from one export whose checkpoint has its cosignature
quorum and whose rows recompute its root (node/exportcli.fetch_snapshot); it
is kept per view (origin, vector, count, root) with its charts and files, so
a re-signed checkpoint of the same view costs one GetViewCheckpoint call.
The accuracy figures come from the node's log (node/trailcli.LogFollower:
every entry signed and all of them giving the cosigned log checkpoint's
root), followed entry by entry from one refresh to the next."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from flask import Blueprint, Response, abort, current_app, jsonify, render_template
from werkzeug.exceptions import HTTPException

from keys.consortium import Consortium
from ledger import export as X
from ledger.errors import LedgerError
from ledger.export import open_quorum
from ledger.view import Entry
from markex.v1 import service_pb2 as pb
from node.command import NotVerified
from node.exportcli import Snapshot, fetch_snapshot
from node.trailcli import LogFollower

__all__ = ["CHARTS", "bp"]

bp = Blueprint("publish", __name__, template_folder="templates")

EXTENSION = "markex"
CACHE = "markex.publish"          # this blueprint's own entry in app.extensions
REFRESH_S = 60.0
SNAPSHOT_WAIT_S = 5.0             # a request waits at most this long for a cosigned view
EXPORT_TIMEOUT_S = 60.0           # one ExportView call from a page (the CLI allows longer)
RPC_TIMEOUT_S = 10
CHARTS = ("categories", "risk", "participants", "appeals")
ACCURACY_CHARTS = ("overturn", "decision", "complaints")   # drawn from the log (`_accuracy`)
FOLLOWED = "markex.publish.log"               # the blueprint's LogFollower in app.extensions
_MEDIA = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}


@dataclass(frozen=True)
class _Source:
    cons: Consortium
    public: Any
    audit: Any | None
    node_id: str | None
    monotonic: Callable[[], float]


def _source() -> _Source:
    ext = current_app.extensions[EXTENSION]
    if isinstance(ext, Mapping):
        return _Source(ext["consortium"], ext["public"], ext.get("audit"), ext.get("node"),
                       ext.get("monotonic", time.monotonic))
    r = ext.reader
    return _Source(ext.consortium, r.public, r.audit, r.node_id, ext.monotonic)


@dataclass
class Publication:
    """One export and what is made of it, each made once, when first asked."""

    snapshot: Snapshot
    fetched_at: float
    figures: dict[str, Any]
    _made: dict[str, bytes | str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def made(self, key: str, make: Callable[[], bytes | str]) -> bytes | str:
        with self._lock:
            if key not in self._made:
                self._made[key] = make()
            return self._made[key]

    def view_key(self) -> tuple[Any, ...]:
        cp = self.snapshot.view.checkpoint
        return (cp.origin, cp.vector, cp.count, cp.root)


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: Publication | None = None


def _cache() -> _Cache:
    c = current_app.extensions.get(CACHE)
    if c is None:
        c = current_app.extensions.setdefault(CACHE, _Cache())
    return c  # type: ignore[no-any-return]


def _publication() -> Publication:
    """The latest verified export, fetched again only when the node's view
    moved since the cached one. 503 when the node gives none."""
    src = _source()
    if src.audit is None:
        abort(503, description="this front end has no member credential to export the view")
    cache = _cache()
    refresh = float(current_app.config.get("MARKEX_EXPORT_REFRESH_S", REFRESH_S))
    with cache.lock:  # one fetch at a time; the others wait for its result
        cur = cache.current
        now = src.monotonic()
        if cur is not None and now - cur.fetched_at < refresh:
            return cur
        try:
            if cur is not None and _same_view(src, cur):
                cur.fetched_at = now
                return cur
            snap = fetch_snapshot(src.audit, src.cons, src.node_id, SNAPSHOT_WAIT_S,
                                  monotonic=src.monotonic, timeout_s=EXPORT_TIMEOUT_S)
        except (grpc.RpcError, LedgerError) as e:
            if cur is not None:
                cur.fetched_at = now   # the last verified export stays the latest; ask later
                return cur
            why = e.details() if isinstance(e, grpc.RpcError) else f"{type(e).__name__}: {e}"
            abort(503, description=f"the node gives no verified export now: {why}")
        at = snap.view.checkpoint.signed_at_ms
        figs = X.figures((Entry.decode(r.entry) for r in snap.rows), at)
        cache.current = Publication(snap, src.monotonic(), figs)
        return cache.current


def _same_view(src: _Source, cur: Publication) -> bool:
    text = src.public.GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=RPC_TIMEOUT_S).note
    try:
        view = open_quorum(src.cons, text)
    except LedgerError:
        return False
    cp = view.checkpoint
    return (cp.origin, cp.vector, cp.count, cp.root) == cur.view_key()


class _Followed:
    def __init__(self, cons: Consortium) -> None:
        self.lock = threading.Lock()
        self.follower = LogFollower(cons)
        self.fetched_at: float | None = None
        self.figures: dict[str, Any] | None = None
        self.charts: dict[str, bytes] = {}


def _accuracy() -> _Followed:
    """The accuracy figures of the node's log up to its latest cosigned log
    checkpoint, followed at most once per refresh; the last verified figures
    stay while the node gives none. 503 when there were never any."""
    src = _source()
    if src.audit is None:
        abort(503, description="this front end has no member credential to read the log")
    f = current_app.extensions.get(FOLLOWED)
    if f is None:
        f = current_app.extensions.setdefault(FOLLOWED, _Followed(src.cons))
    refresh = float(current_app.config.get("MARKEX_EXPORT_REFRESH_S", REFRESH_S))
    with f.lock:
        now = src.monotonic()
        if f.figures is not None and f.fetched_at is not None and now - f.fetched_at < refresh:
            return f
        f.fetched_at = now
        try:
            trusted = f.follower.follow(src.public, src.audit)
        except (grpc.RpcError, LedgerError, NotVerified) as e:
            if f.figures is None:
                why = e.details() if isinstance(e, grpc.RpcError) else str(e)
                abort(503, description=f"the node's log gives no verified figures now: {why}")
            return f
        figs = {**f.follower.tally.figures(), "checkpoint": trusted.to_json()}
        if figs != f.figures:
            f.figures, f.charts = figs, {}
        return f


def _checkpoint_json(pub: Publication) -> dict[str, Any]:
    v = pub.snapshot.view
    cp = v.checkpoint
    return {
        "origin": cp.origin,
        "root": cp.root.hex(),
        "entries": cp.count,
        "vector": dict(cp.vector),
        "signed_at_ms": cp.signed_at_ms,
        "signed_by": v.signer,
        "cosigned_by": sorted(v.cosigned_at),
        "quorum": _source().cons.policy.cosign_quorum,
    }


# ------------------------------------------------------------------ routes


@bp.get("/api/v1/stats")
def api_stats() -> Response:
    pub = _publication()
    return jsonify(
        {
            **pub.figures,
            "checkpoint": _checkpoint_json(pub),
            "export": {"csv": "/export/latest.csv", "jsonl": "/export/latest.jsonl"},
        }
    )


@bp.get("/api/v1/stats/accountability")
def api_accountability() -> Response:
    return jsonify(_accuracy().figures)


@bp.get("/stats")
def stats_page() -> str:
    pub = _publication()
    cons = _source().cons
    try:
        acc = _accuracy().figures
    except HTTPException:
        acc = None          # the page shows the view's figures; the log's say why not
    labels = {cid: c.label for cid, c in cons.categories.items()}
    return render_template(
        "stats.html",
        consortium_name=cons.name,
        f=pub.figures,
        cp=_checkpoint_json(pub),
        labels=labels,
        charts=CHARTS,
        version=pub.snapshot.view.checkpoint.root.hex()[:16],
        acc=acc,
        acc_version=acc["checkpoint"]["root"][:16] if acc else "",
    )


@bp.get("/stats/charts/<name>.svg")
def chart(name: str) -> Response:
    svg: bytes | str
    if name in ACCURACY_CHARTS:
        f = _accuracy()
        with f.lock:
            assert f.figures is not None
            if name not in f.charts:
                f.charts[name] = draw_bars(*_accuracy_bars(f.figures, name))
            svg = f.charts[name]
    elif name in CHARTS:
        pub = _publication()
        svg = pub.made(f"chart:{name}", lambda: draw_chart(name, pub.figures))
    else:
        abort(404, description=f"no chart {name!r}: {', '.join(CHARTS + ACCURACY_CHARTS)}")
    resp = Response(svg, mimetype="image/svg+xml")
    resp.headers["Cache-Control"] = "public, max-age=60"
    return resp


@bp.get("/export/latest.<fmt>")
def latest_export(fmt: str) -> Response:
    if fmt not in _MEDIA:
        abort(404, description="the export is offered as latest.csv or latest.jsonl")
    pub = _publication()
    snap = pub.snapshot
    text = pub.made(f"export:{fmt}", lambda: X.rows_text(fmt, snap.note, snap.rows))  # type: ignore[arg-type]
    root = snap.view.checkpoint.root.hex()
    resp = Response(text, content_type=_MEDIA[fmt])
    resp.headers["Content-Disposition"] = f'attachment; filename="markex-view-{root[:16]}.{fmt}"'
    resp.headers["ETag"] = f'"{root}-{snap.view.checkpoint.signed_at_ms}-{fmt}"'
    return resp


# ------------------------------------------------------------------ charts


def _bars(f: dict[str, Any], name: str) -> tuple[str, list[str], list[int]]:
    if name == "categories":
        items = sorted(f["by_category"].items(), key=lambda kv: (-kv[1], kv[0]))
        return "Entries by category", [k for k, _ in items], [v for _, v in items]
    if name == "risk":
        return "Entries by risk", list(X.RISKS), [f["by_risk"][r] for r in X.RISKS]
    if name == "participants":
        items = sorted(f["marks_by_participant"].items())
        return "Counting marks by participant", [k for k, _ in items], [v for _, v in items]
    a = f["appeals"]
    return "Appeals", list(X.APPEAL_STATUSES), [a[s] for s in X.APPEAL_STATUSES]


def _accuracy_bars(f: dict[str, Any], name: str) -> tuple[str, list[str], list[float]]:
    """Per participant that marked: the share of its marks an upheld appeal
    overturned (%), or the median hours from an appeal against it to the
    decision; per carrier: the share of the complaints it received that it
    closed within the SLA (%)."""
    if name == "complaints":
        cs = f["carriers"].items()
        return ("Complaints closed within the SLA (% of received)", [c for c, _ in cs],
                [round(100 * x["closed_in_sla"] / x["received"], 1) if x["received"] else 0
                 for _, x in cs])
    rows = [(pid, p) for pid, p in f["participants"].items() if p["marks_issued"]]
    if name == "overturn":
        return ("Marks overturned on appeal (%)", [pid for pid, _ in rows],
                [round(100 * p["overturn_rate"], 1) for _, p in rows])
    return ("Appeal to decision, median (hours)", [pid for pid, _ in rows],
            [round((p["decision_ms"]["median"] or 0) / 3_600_000, 1) for _, p in rows])


def draw_chart(name: str, figures: dict[str, Any]) -> bytes:
    """One chart of `figures` as SVG bytes (same figures: same bytes)."""
    return draw_bars(*_bars(figures, name))


def draw_bars(title: str, labels: list[str], values: list[int] | list[float]) -> bytes:
    """Horizontal bars as SVG bytes (same bars: same bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"svg.hashsalt": "markex", "svg.fonttype": "none"}):
        fig = Figure(figsize=(6.0, 0.5 + 0.4 * max(3, len(labels))))
        ax = fig.add_subplot()
        ax.barh(labels, values, color="#3b6ea5")
        ax.invert_yaxis()                    # the first label on top
        ax.set_title(title)
        ax.bar_label(ax.containers[0], padding=3)
        ax.set_xlim(0, max([1, *values]) * 1.15)
        ax.xaxis.get_major_locator().set_params(integer=True)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()
