"""The bad list on the web (docs/complaints.md): `/badlist`, server-rendered
with Chinese and English labels, and `/api/v1/badlist`, its JSON. Both ask
the node's public port (GetBadList) and show only what verified here: each
listing's Sanction signed by the regulator, proven in the node's log
checkpoint, which carries the cosignature quorum (node/complaintcli.py
`fetch_bad_list`, the same check `markex badlist` makes). `?check=` asks
about one enterprise (its credit code) or one number (through its marketer
line); a check is limited per client address like a lookup."""

from __future__ import annotations

from typing import Any

import grpc
from flask import Blueprint, jsonify, render_template, request

from node.command import NotVerified, UsageError, iso
from node.web.app import error_response, web_context

badlist = Blueprint("badlist", __name__)

MAX_CHECK_CHARS = 64


def _listed(check: str) -> tuple[dict[str, Any] | None, Any]:
    """(the verified bad list as JSON, None) or (None, an error answer)."""
    from node.complaintcli import fetch_bad_list  # gRPC and the checks: only when asked
    from node.web.pages import _limited, _node_down

    ctx = web_context()
    if check and (refused := _limited()) is not None:
        return None, refused
    if len(check) > MAX_CHECK_CHARS:
        return None, error_response(400, "a check is a credit code or a phone number "
                                         "查询内容应为统一社会信用代码或号码", typed=check[:64])
    now = ctx.now_ms()
    try:
        got, trusted = fetch_bad_list(ctx.consortium, ctx.reader.public, now, check)
    except UsageError as e:
        return None, error_response(400, f"{e} 查询内容无效", typed=check)
    except grpc.RpcError as e:
        return None, _node_down(e)
    except NotVerified as e:
        return None, error_response(502, f"node {ctx.reader.node_id}'s bad list does not "
                                         f"verify 未通过验证: {e}")
    out: dict[str, Any] = {"at": iso(now), "listed": [e.to_json() for e in got.listed],
                           "verified": True, "checkpoint": trusted.to_json()}
    if check:
        out["check"] = {"query": check, "listed": bool(got.listed)}
        if got.line is not None:
            rec, index = got.line
            out["check"]["line"] = {"id": rec.id.hex(), "issuer": rec.issuer, "index": index}
    return out, None


@badlist.get("/badlist")
def page() -> Any:
    check = request.args.get("check", "").strip()
    out, answer = _listed(check)
    if out is None:
        return answer
    return render_template("badlist.html", b=out, typed="", check=check)


@badlist.get("/api/v1/badlist")
def api() -> Any:
    out, answer = _listed(request.args.get("check", "").strip())
    return answer if out is None else jsonify(out)
