"""The search page, a number's page and `GET /api/v1/numbers/{number}`
(docs/web.md), a number's trail (`/numbers/{number}/trail` and its JSON,
docs/trail.md): every lookup is limited per client address, the number is
normalized first (400 with the reason when it does not), and what is shown
is what node/web/report.py (the trail: ledger/trail.py) verified."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import grpc
from flask import Blueprint, jsonify, redirect, render_template, request, url_for

from ledger.errors import InvalidNumber
from ledger.numbers import normalize
from node.command import NotVerified
from node.web import labels
from node.web.app import client_of, error_response, web_context
from node.web.report import batch_report, number_report, trust_anchor

pages = Blueprint("pages", __name__)

MAX_NUMBER_CHARS = 64  # longer than any phone number in any form
MAX_BATCH = 1000  # the node's own LookupBatch maximum
WITHHELD = "complainant"  # a trail's fields starting so stay off the web (docs/trail.md)


@pages.app_template_filter("when")
def _when(ms: int | None) -> str:
    """A time in ms as ISO 8601 UTC to the second ('' for none)."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@pages.app_context_processor
def _words() -> dict[str, Any]:
    cons = web_context().consortium
    return {
        "category": lambda cid: labels.category_label(cons, cid),
        "risk_label": lambda r: labels.both(labels.RISK_ZH, r),
        "reason_label": lambda r: labels.both(labels.REASON_ZH, r),
        "appeal_label": lambda s: labels.both(labels.APPEAL_ZH, s),
        "role_label": lambda r: labels.both(labels.ROLE_ZH, r),
        "consortium_name": cons.name,
    }


def _normalized(raw: str) -> str:
    """The E.164 form of what the person typed; raises InvalidNumber."""
    if len(raw) > MAX_NUMBER_CHARS:
        raise InvalidNumber(f"{raw[:MAX_NUMBER_CHARS]!r}… is not a phone number (too long)")
    return normalize(raw)


def _limited(cost: int = 1) -> Any | None:
    """The 429 answer when this client address has used up its lookups, else None."""
    ctx = web_context()
    wait = ctx.limiter.take(client_of(), ctx.monotonic(), cost)
    if wait is None:
        return None
    return error_response(
        429,
        "too many lookups from your address; try again later 查询过于频繁，请稍后再试",
        {"Retry-After": str(max(1, math.ceil(wait)))},
    )


def _node_down(e: grpc.RpcError) -> Any:
    node = web_context().reader.node_id
    if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return error_response(503, f"node {node} did not answer; try again later")
    return error_response(502, f"node {node} refused the lookup: {e.code().name}: {e.details()}")


def _report(number: str) -> dict[str, Any]:
    ctx = web_context()
    now = ctx.now_ms()
    return number_report(ctx.consortium, ctx.reader, number, now, now)


@pages.get("/")
def index() -> Any:
    raw = request.args.get("number")
    if raw is None:
        return render_template("index.html", typed="")
    try:
        asked = _normalized(raw.strip())
    except InvalidNumber as e:
        return error_response(400, f"not a phone number 号码无效: {e}", typed=raw)
    return redirect(url_for("pages.number", number=asked), 303)


@pages.get("/numbers/<path:number>")
def number(number: str) -> Any:
    if (refused := _limited()) is not None:
        return refused
    try:
        asked = _normalized(number)
    except InvalidNumber as e:
        return error_response(400, f"not a phone number 号码无效: {e}", typed=number)
    if asked != number:
        # The address bar then names the number the browser checks the answer against.
        return redirect(url_for("pages.number", number=asked), 303)
    try:
        rep = _report(asked)
    except grpc.RpcError as e:
        return _node_down(e)
    detail = rep.get("entry_detail") or {}
    return render_template(
        "number.html",
        r=rep,
        typed=asked,
        marks={m["id"]: m for m in detail.get("marks", [])},
        recs={x["id"]: x for x in rep.get("records", [])},
        api=url_for("pages.api_number", number=asked),
    )


@pages.get("/api/v1/numbers/<path:number>")
def api_number(number: str) -> Any:
    if (refused := _limited()) is not None:
        return refused
    try:
        asked = _normalized(number)
    except InvalidNumber as e:
        return error_response(400, f"{e}")
    try:
        return jsonify(_report(asked))
    except grpc.RpcError as e:
        return _node_down(e)


@pages.post("/api/v1/numbers")
def api_numbers() -> Any:
    body = request.get_json(silent=True)
    raw = body.get("numbers") if isinstance(body, dict) else None
    if not isinstance(raw, list) or not raw or not all(isinstance(n, str) for n in raw):
        return error_response(400, 'the body is {"numbers": ["NUMBER", ...]}')
    limit = web_context().limiter.limit
    most = MAX_BATCH if limit.per_minute == 0 else min(MAX_BATCH, limit.burst)
    if len(raw) > most:
        return error_response(413, f"at most {most} numbers per request, got {len(raw)}")
    if (refused := _limited(len(raw))) is not None:
        return refused
    try:
        asked = [_normalized(n) for n in raw]
    except InvalidNumber as e:
        return error_response(400, f"{e}")
    try:
        return jsonify(batch_report(web_context().reader, asked, web_context().now_ms()))
    except grpc.RpcError as e:
        return _node_down(e)


@pages.get("/api/v1/consortium")
def api_consortium() -> Any:
    return jsonify(trust_anchor(web_context().consortium))


# ------------------------------------------------------------------ the trail


def _trail(asked: str) -> tuple[dict[str, Any] | None, Any]:
    """(the verified trail as JSON without complainants, None) or (None, an error answer)."""
    from node.trailcli import fetch_trail  # gRPC and the ledger's checks: only when asked

    ctx = web_context()
    if ctx.reader.audit is None:
        return None, error_response(503, "this front end has no member credential to read "
                                         "the records of a trail")
    try:
        trail, trusted = fetch_trail(ctx.consortium, ctx.reader.public, ctx.reader.audit,
                                     asked, ctx.now_ms())
    except grpc.RpcError as e:
        return None, _node_down(e)
    except NotVerified as e:
        return None, error_response(502, f"node {ctx.reader.node_id}'s trail of {asked} does "
                                         f"not verify 未通过验证: {e}")
    out = trail.to_json()
    out["records"] = [{k: v for k, v in r.items() if not k.startswith(WITHHELD)}
                      for r in out["records"]]
    out["checkpoint"] = trusted.to_json()
    return out, None


def _trail_number(number: str, endpoint: str) -> tuple[str | None, Any]:
    if (refused := _limited()) is not None:
        return None, refused
    try:
        asked = _normalized(number)
    except InvalidNumber as e:
        return None, error_response(400, f"not a phone number 号码无效: {e}", typed=number)
    if asked != number:
        return None, redirect(url_for(endpoint, number=asked), 303)
    return asked, None


@pages.get("/numbers/<path:number>/trail")
def trail(number: str) -> Any:
    asked, answer = _trail_number(number, "pages.trail")
    if asked is None:
        return answer
    out, answer = _trail(asked)
    if out is None:
        return answer
    return render_template("trail.html", t=out, typed=asked,
                           api=url_for("pages.api_trail", number=asked))


@pages.get("/api/v1/numbers/<path:number>/trail")
def api_trail(number: str) -> Any:
    asked, answer = _trail_number(number, "pages.api_trail")
    if asked is None:
        return answer
    out, answer = _trail(asked)
    return answer if out is None else jsonify(out)
