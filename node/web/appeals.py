"""The holder's appeal on the web (docs/appeals.md): the pages that take a
holder from "this mark is wrong" to a filed appeal, the appeal's page, and
`POST /api/v1/codes`, `POST /api/v1/appeals`, `GET /api/v1/appeals/{id}`.

The front end keeps no state: codes and appeals go to the number's serving
carrier's node over its member port (node/holders.py), with the front end's
own participant certificate (`AppealRelay`). An appeal's status comes from
the node the front end reads; "applied" is checked here node by node: a
node's latest view checkpoint, from its public port, must verify (its
signature and a fresh cosignature quorum, as `markex lookup` checks) and its
vector must reach the decision's seq. The holder's statement never appears
on a public page or in the public API.

HTTP statuses: 400 a number that does not normalize (or no carrier serves),
403 a wrong or expired code, 404 an unknown appeal, 409 nothing to appeal,
413 an oversized statement, 429 (with Retry-After) a limit, 503 a node that
does not answer; none of them issues a record. Without a relay installed
(`install_relay`) every route answers 503."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from flask import (
    Blueprint,
    Flask,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from keys.consortium import Consortium
from ledger import verify
from ledger.errors import InvalidNumber, LedgerError
from ledger.numbers import normalize
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.holders import MAX_STATEMENT_CHARS
from node.web.app import client_of, error_response, web_context

appeals = Blueprint("appeals", __name__)

RELAY = "markex.appeals"
RPC_TIMEOUT_S = 15
MAX_NUMBER_CHARS = 64
MAX_CODE_CHARS = 16
_ID = re.compile(r"[0-9a-f]{64}\Z")


@dataclass
class AppealRelay:
    """How the front end reaches the nodes: `holders(pid)` the Holders
    service of participant `pid`'s node (member port, the front end's own
    certificate), `public(pid)` its Public service, `reader` the node the
    front end reads. Stubs are opened once and kept."""

    reader: str
    open_holders: Callable[[str], Any]
    open_public: Callable[[str], Any]
    _stubs: dict[tuple[str, str], Any] = field(default_factory=dict)

    def holders(self, pid: str) -> Any:
        key = ("holders", pid)
        if key not in self._stubs:
            self._stubs[key] = self.open_holders(pid)
        return self._stubs[key]

    def public(self, pid: str) -> Any:
        key = ("public", pid)
        if key not in self._stubs:
            self._stubs[key] = self.open_public(pid)
        return self._stubs[key]

    @classmethod
    def tls(cls, directory: Path, cons: Consortium, as_id: str, reader: str) -> AppealRelay:
        """The real connections: mutual TLS as `as_id` to each member port,
        TLS to each public port, each accepting only the dialled node."""
        from node import client

        def holders(pid: str) -> Any:
            p = cons.participant(pid)
            assert p is not None
            ch = client.member_channel(directory, as_id, p.member_endpoint, pid)
            return rpc.HoldersStub(ch)

        def public(pid: str) -> Any:
            p = cons.participant(pid)
            assert p is not None
            return rpc.PublicStub(client.public_channel(directory, p.public_endpoint, pid))

        return cls(reader, holders, public)


def install_relay(app: Flask, relay: AppealRelay) -> None:
    """Lets `app` file appeals through `relay` (markex web does this)."""
    app.extensions[RELAY] = relay


def _relay() -> AppealRelay | None:
    return current_app.extensions.get(RELAY)


# ------------------------------------------------------------------ input


class Refusal(Exception):
    """An answer other than success: its HTTP status and sentence."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after

    def response(self, typed: str = "") -> Any:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after else None
        return error_response(self.status, self.message, headers, typed=typed)


def _number(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise Refusal(400, "the number is missing 请输入号码")
    if len(raw) > MAX_NUMBER_CHARS:
        raise Refusal(400, f"not a phone number 号码无效: {raw[:MAX_NUMBER_CHARS]!r}… (too long)")
    try:
        return normalize(raw.strip())
    except InvalidNumber as e:
        raise Refusal(400, f"not a phone number 号码无效: {e}") from e


def _carrier(number: str) -> str:
    carrier = web_context().consortium.carrier_for(number)
    if carrier is None:
        raise Refusal(400, f"no carrier of the consortium serves {number}; "
                           "an appeal goes through the number's serving carrier")
    return carrier


def _from_rpc(e: grpc.RpcError, node: str) -> Refusal:
    """A node's refusal as the HTTP answer (see the module doc)."""
    code, detail = e.code(), e.details() or ""
    name, _, msg = detail.partition(": ")
    msg = msg or detail
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        trailers = dict(e.trailing_metadata() or ())
        wait = str(trailers.get("retry-after", "60"))
        return Refusal(429, f"{msg} 请求过于频繁", int(wait) if wait.isdigit() else 60)
    if code == grpc.StatusCode.PERMISSION_DENIED and name == "WrongCode":
        return Refusal(403, f"{msg} 验证码错误或已过期")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return Refusal(413 if name == "StatementTooLong" else 400, msg)
    if code == grpc.StatusCode.FAILED_PRECONDITION and name == "NothingToAppeal":
        return Refusal(409, f"{msg} 该号码没有可申诉的标记")
    if code == grpc.StatusCode.NOT_FOUND:
        return Refusal(404, msg)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Refusal(503, f"node {node} did not answer ({msg}); try again later")
    return Refusal(502, f"node {node} refused: {code.name}: {detail}")


def _need_relay() -> AppealRelay:
    relay = _relay()
    if relay is None:
        raise Refusal(503, "this front end files no appeals (it has no member connection)")
    return relay


def request_code(raw: object) -> pb.CodeSent:
    relay = _need_relay()
    number = _number(raw)
    carrier = _carrier(number)
    try:
        req = pb.CodeRequest(number=number, client_address=client_of())
        return relay.holders(carrier).RequestCode(req, timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as e:
        raise _from_rpc(e, carrier) from e


def file_appeal(raw: object, code: object, statement: object) -> pb.Issued:
    relay = _need_relay()
    if not isinstance(statement, str) or not statement.strip():
        raise Refusal(400, "say why the mark is wrong 请说明标记错误的原因")
    if len(statement) > MAX_STATEMENT_CHARS:
        raise Refusal(413, f"the statement has {len(statement):,} characters; "
                           f"at most {MAX_STATEMENT_CHARS:,} 陈述过长")
    number = _number(raw)
    if not isinstance(code, str) or not code.strip() or len(code) > MAX_CODE_CHARS:
        raise Refusal(400, "the code is the 6 digits sent to the number 请输入6位验证码")
    carrier = _carrier(number)
    try:
        req = pb.HolderAppeal(number=number, code=code.strip(), statement=statement,
                              client_address=client_of())
        return relay.holders(carrier).FileAppeal(req, timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as e:
        raise _from_rpc(e, carrier) from e


# ------------------------------------------------------------------ the appeal's state


def _find(relay: AppealRelay, rid: bytes) -> pb.AppealSummary:
    """The appeal from the node the front end reads; one filed a moment ago
    may be only at its carrier's node yet, so the carriers are asked next."""
    cons = web_context().consortium
    asked = [relay.reader] + [p.id for p in cons.participants
                              if p.role == "carrier" and p.id != relay.reader]
    for pid in asked:
        try:
            return relay.holders(pid).GetAppeal(pb.GetAppealRequest(id=rid),
                                                timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise _from_rpc(e, pid) from e
    raise Refusal(404, f"no appeal {rid.hex()} 未找到该申诉")


def applied_at(cons: Consortium, note_text: str, node: str, issuer: str, seq: int,
               now_ms: int) -> tuple[bool, str]:
    """Whether `node`'s view checkpoint `note_text` (verified: its signature,
    a fresh cosignature quorum) covers record `seq` of `issuer`; and why not."""
    try:
        view = verify.open_view(cons, note_text)
        if view.signer != node:
            return False, f"the checkpoint is signed by {view.signer}, not {node}"
        fresh = verify.check_fresh(view, cons.policy, now_ms)
    except LedgerError as e:
        return False, f"checkpoint not verified: {type(e).__name__}: {e}"
    if len(fresh) < cons.policy.cosign_quorum:
        return False, (f"cosigned by {len(fresh)} member(s); "
                       f"the policy needs {cons.policy.cosign_quorum}")
    have = view.checkpoint.vector_dict.get(issuer, 0)
    if have < seq:
        return False, f"its view has {issuer}'s records up to {have}, the decision is {seq}"
    return True, f"its view (cosigned by {len(fresh)}) covers {issuer} {seq}"


def appeal_state(rid: bytes) -> dict[str, Any]:
    """GET /api/v1/appeals/{id}'s object (design.md's fields, then the
    page's: deadline, decided_by, reason, why per node). Never the statement."""
    relay = _need_relay()
    ctx = web_context()
    cons = ctx.consortium
    a = _find(relay, rid)
    decided = a.status in ("upheld", "rejected")
    now = ctx.now_ms()
    nodes = [p.id for p in cons.witnesses]
    applied = dict.fromkeys(nodes, False)
    why = dict.fromkeys(nodes, "not decided yet")
    if decided:
        def one(pid: str) -> tuple[bool, str]:
            try:
                text = relay.public(pid).GetViewCheckpoint(pb.GetViewCheckpointRequest(),
                                                          timeout=RPC_TIMEOUT_S).note
            except grpc.RpcError as e:
                return False, f"did not answer: {e.code().name}"
            return applied_at(cons, text, pid, a.closed_by_issuer, a.closed_by_seq, now)

        with ThreadPoolExecutor(max(1, len(nodes))) as ex:
            for pid, (ok, reason) in zip(nodes, ex.map(one, nodes), strict=True):
                applied[pid], why[pid] = ok, reason
    return {
        "id": a.id.hex(),
        "number": a.number,
        "status": a.status,
        "filed_at": a.filed_at_ms,
        "decided_at": a.closed_at_ms if decided else None,
        "outcome": {"upheld": "uphold", "rejected": "reject"}.get(a.status),
        "applied": applied,
        "applied_count": sum(applied.values()),
        "nodes": len(nodes),
        "why": why,
        "deadline": a.filed_at_ms + cons.policy.appeal_decision_ms,
        "filed_by": a.appellant,
        "decided_by": a.closed_by_issuer if decided else None,
        "decision": a.closed_by.hex() if decided else None,
        "reason": a.reason if decided else None,
    }


def _appeal_id(raw: str) -> bytes:
    if not _ID.match(raw):
        raise Refusal(404, "an appeal id is 64 hexadecimal digits 未找到该申诉")
    return bytes.fromhex(raw)


# ------------------------------------------------------------------ routes


@appeals.post("/api/v1/codes")
def api_codes() -> Any:
    body = request.get_json(silent=True)
    try:
        if not isinstance(body, dict):
            raise Refusal(400, 'the body is {"number": "NUMBER"}')
        sent = request_code(body.get("number"))
    except Refusal as r:
        return r.response()
    resp = jsonify({"number": sent.number, "carrier": sent.carrier,
                    "expires_at": sent.expires_at_ms})
    resp.status_code = 202
    return resp


@appeals.post("/api/v1/appeals")
def api_appeals() -> Any:
    body = request.get_json(silent=True)
    try:
        if not isinstance(body, dict):
            raise Refusal(400, 'the body is {"number", "code", "statement"}')
        issued = file_appeal(body.get("number"), body.get("code"), body.get("statement"))
    except Refusal as r:
        return r.response()
    resp = jsonify({"id": issued.id.hex()})
    resp.status_code = 201
    resp.headers["Location"] = url_for("appeals.appeal_page", rid=issued.id.hex())
    return resp


def _limited() -> None:
    """The front end's per-address lookup limit (an appeal's state asks every node)."""
    ctx = web_context()
    wait = ctx.limiter.take(client_of(), ctx.monotonic(), 1)
    if wait is not None:
        raise Refusal(429, "too many requests from your address; try again later 请求过于频繁",
                      max(1, math.ceil(wait)))


@appeals.get("/api/v1/appeals/<rid>")
def api_appeal(rid: str) -> Any:
    try:
        _limited()
        return jsonify(appeal_state(_appeal_id(rid)))
    except Refusal as r:
        return r.response()


@appeals.get("/appeals/new")
def new_appeal() -> Any:
    raw = request.args.get("number", "")
    return render_template("appeal_request.html", number=raw[:MAX_NUMBER_CHARS], typed="")


@appeals.post("/appeals/new")
def send_code() -> Any:
    raw = request.form.get("number", "")
    try:
        sent = request_code(raw)
    except Refusal as r:
        return r.response(typed=raw)
    return render_template("appeal_code.html", number=sent.number, carrier=sent.carrier,
                           expires_at=sent.expires_at_ms, max_chars=MAX_STATEMENT_CHARS,
                           typed=sent.number)


@appeals.post("/appeals/file")
def file_page() -> Any:
    f = request.form
    try:
        issued = file_appeal(f.get("number", ""), f.get("code", ""), f.get("statement", ""))
    except Refusal as r:
        return r.response(typed=f.get("number", ""))
    return redirect(url_for("appeals.appeal_page", rid=issued.id.hex(), filed=1), 303)


@appeals.get("/appeals/<rid>")
def appeal_page(rid: str) -> Any:
    try:
        _limited()
        state = appeal_state(_appeal_id(rid))
    except Refusal as r:
        return r.response()
    return render_template("appeal.html", a=state, filed=request.args.get("filed") == "1",
                           typed=state["number"],
                           api=url_for("appeals.api_appeal", rid=state["id"]))
