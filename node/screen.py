"""The Screening service on the member port: one decision per call, from
this node's own view and consent state (docs/screen.md), no remote call.

- node/screener.py: the call's facts and its decision (`Screener`), the
  screen rows' templates and the resolution cache;
- node/screenindex.py: the rows, kept off the write path;
- here: requests parsed, decisions encoded, and the servicer (Screen,
  ScreenBatch, ScreenStream), open to carriers, the institute and call
  centres only. ScreenBatch answers with bytes written from templates
  where it can (node/screenwire.py), so it is registered by `add_to_server`
  with no response serializer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from keys import KeysError
from ledger.errors import BadInput, LedgerError, TooLarge
from ledger.numbers import normalize, normalize_each
from ledger.screen import (
    ALLOW,
    BLOCK,
    LABEL,
    SCREENING_ROLES,
    WARN,
    BadCallMode,
    Decision,
    NotAScreener,
    Reason,
)
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.screener import Call, EntrySource, ResolutionCache, RowSource, Screener, row_maker
from node.screenwire import batch_bytes, decision_bytes
from node.services import caller_id, edge
from node.status import code_for, detail_for
from node.viewkeeper import MAX_LOOKUP_BATCH

if TYPE_CHECKING:
    from keys.consortium import Consortium

MAX_SCREEN_BATCH = MAX_LOOKUP_BATCH   # the node's one batch bound (TooLarge beyond it)
MODES = {pb.CALL_MODE_VOICE: "voice", pb.CALL_MODE_SMS: "sms"}
ACTIONS = {ALLOW: pb.SCREEN_ACTION_ALLOW, LABEL: pb.SCREEN_ACTION_LABEL,
           WARN: pb.SCREEN_ACTION_WARN, BLOCK: pb.SCREEN_ACTION_BLOCK}


def parse_call(req: pb.ScreenRequest, now_ms: int) -> Call:
    """The request normalized: E.164 numbers, at_ms 0 the node's clock, the
    mode's name. Raises InvalidNumber or BadCallMode (BadInput)."""
    mode = MODES.get(req.mode)
    if mode is None:
        raise BadCallMode(f"call mode {req.mode} is not voice (0) or sms (1)")
    if req.at_ms < 0:
        raise BadInput(f"at_ms {req.at_ms} is negative (0 means the node's clock)")
    try:
        caller = normalize(req.caller)
    except BadInput as e:
        raise type(e)(f"caller: {e}") from e
    try:
        callee = normalize(req.callee)
    except BadInput as e:
        raise type(e)(f"callee: {e}") from e
    return Call(caller, callee, req.at_ms or now_ms, mode)


_REASONS: dict[Reason, pb.ScreenReason] = {}
MAX_REASONS = 4096  # reasons kept as messages (a line's, the unknown caller's, ...)


def _reason_pb(r: Reason) -> pb.ScreenReason:
    """The message of a reason; the ones that recur (a registration's, the
    fixed sentences) are built once."""
    m = _REASONS.get(r)
    if m is None:
        m = pb.ScreenReason(code=r.code, records=list(r.records), detail=r.detail)
        if len(_REASONS) >= MAX_REASONS:
            _REASONS.clear()
        _REASONS[r] = m
    return m


def decision_fields(d: Decision) -> pb.ScreenDecision:
    """The message of a decision without the call's fields (tag, numbers, time)."""
    return pb.ScreenDecision(
        action=ACTIONS[d.action], category=d.category, redress=d.redress, risk=d.risk,
        reasons=[_reason_pb(r) for r in d.reasons],
    )


def decision_pb(call: Call, d: Decision, tag: int) -> pb.ScreenDecision:
    m = decision_fields(d)
    m.tag, m.caller, m.callee, m.at_ms = tag, call.caller, call.callee, call.at_ms
    return m


def _decision_bytes(call: Call, d: Decision, tag: int) -> bytes:
    """The ScreenDecision bytes of `d` for `call`, written without a message
    (node/screenwire.py; equal to decision_pb's SerializeToString)."""
    return decision_bytes(d, tag, call.caller, call.callee, call.at_ms)


def make_screener(cons: Consortium, view: EntrySource, consent: Any,
                  index: Any = None, clock: Callable[[], int] | None = None) -> Screener:
    """A screener over this node's parts; with `index` (node/screenindex.py)
    and `clock`, the index's rows are made by it."""
    sc = Screener(cons, view, consent, index=index)
    if index is not None:
        assert clock is not None
        index.row_of = row_maker(sc, clock)
        index.version = sc.rows_version
    return sc


def error_pb(req: pb.ScreenRequest, err: Exception) -> pb.ScreenDecision:
    """The answer for a call not screened: `error` says why (the class as a status detail)."""
    return pb.ScreenDecision(tag=req.tag, caller=req.caller, callee=req.callee,
                             at_ms=req.at_ms, error=detail_for(err))


class ScreeningService(rpc.ScreeningServicer):
    """Screen, ScreenBatch and ScreenStream for carriers, the institute and
    call centres (the participant the client certificate names)."""

    def __init__(self, cons: Consortium, screener: Screener, clock: Callable[[], int]) -> None:
        self.cons = cons
        self.screener = screener
        self.clock = clock

    def _check_screener(self, context: grpc.ServicerContext) -> None:
        pid = caller_id(context)
        p = self.cons.participant(pid)
        role = p.role if p is not None else "none"
        if role not in SCREENING_ROLES:
            raise NotAScreener(
                f"{pid} is a {role}: only carriers, the institute and call centres screen calls")

    @edge
    def Screen(self, request, context):  # noqa: N802
        self._check_screener(context)
        call = parse_call(request, self.clock())
        return decision_pb(call, self.screener.decide_many([call])[0], request.tag)

    @edge
    def ScreenBatch(self, request, context):  # noqa: N802
        self._check_screener(context)
        if len(request.calls) > MAX_SCREEN_BATCH:
            raise TooLarge(f"at most {MAX_SCREEN_BATCH} calls per batch, got "
                           f"{len(request.calls)}")
        return batch_bytes(self._answers(list(request.calls)))

    def _answers(self, reqs: list[pb.ScreenRequest]) -> list[bytes]:
        """Each request's ScreenDecision bytes in order; a bad request's has
        `error` set."""
        now = self.clock()
        # parse_call of every request, a field at a time (a batch's calls are
        # almost all well formed); a call it would refuse goes through it for
        # its very error
        callers = normalize_each([r.caller for r in reqs])
        callees = normalize_each([r.callee for r in reqs])
        ats = [r.at_ms for r in reqs]
        modes = [MODES.get(r.mode) for r in reqs]
        bad = [i for i, (a, b, m, t) in enumerate(zip(callers, callees, modes, ats, strict=True))
               if m is None or t < 0 or type(a) is not str or type(b) is not str]
        tags = [r.tag for r in reqs]
        ats = [t or now for t in ats]
        if not bad:
            return self.screener.answer_columns(
                callers, callees, ats, modes, tags, _decision_bytes)  # type: ignore[arg-type]
        out: list[bytes | None] = [None] * len(reqs)
        for i in bad:
            try:
                parse_call(reqs[i], now)
            except BadInput as e:
                out[i] = error_pb(reqs[i], e).SerializeToString()
            else:   # pragma: no cover - the checks above are parse_call's
                raise AssertionError("a request refused inline that parse_call accepts")
        good = [i for i in range(len(reqs)) if out[i] is None]
        if good:
            answers = self.screener.answer_columns(
                [callers[i] for i in good], [callees[i] for i in good],  # type: ignore[misc]
                [ats[i] for i in good], [modes[i] for i in good], [tags[i] for i in good],
                _decision_bytes)
            for i, b in zip(good, answers, strict=True):
                out[i] = b
        return out  # type: ignore[return-value]

    def ScreenStream(self, request_iterator, context):  # noqa: N802
        try:
            self._check_screener(context)
        except LedgerError as e:
            context.abort(code_for(e), detail_for(e))
        yield from self._stream(request_iterator, context)

    def _stream(self, requests: Iterator[pb.ScreenRequest], context: Any
                ) -> Iterator[pb.ScreenDecision]:
        for req in requests:
            try:
                call = parse_call(req, self.clock())
                yield decision_pb(call, self.screener.decide_many([call])[0], req.tag)
            except BadInput as e:
                yield error_pb(req, e)
            except (LedgerError, KeysError) as e:   # the node cannot screen: end the stream
                context.abort(code_for(e), detail_for(e))


def add_to_server(service: ScreeningService, server: grpc.Server) -> None:
    """Register the Screening service: as the generated code does, but
    ScreenBatch returns its response's bytes (written from templates), so it
    has no response serializer."""
    handlers = {
        "Screen": grpc.unary_unary_rpc_method_handler(
            service.Screen, request_deserializer=pb.ScreenRequest.FromString,
            response_serializer=pb.ScreenDecision.SerializeToString),
        "ScreenBatch": grpc.unary_unary_rpc_method_handler(
            service.ScreenBatch, request_deserializer=pb.ScreenBatchRequest.FromString,
            response_serializer=None),
        "ScreenStream": grpc.stream_stream_rpc_method_handler(
            service.ScreenStream, request_deserializer=pb.ScreenRequest.FromString,
            response_serializer=pb.ScreenDecision.SerializeToString),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("markex.v1.Screening", handlers),))


__all__ = ["MAX_SCREEN_BATCH", "Call", "ResolutionCache", "RowSource", "Screener",
           "ScreeningService", "add_to_server", "decision_fields", "decision_pb",
           "make_screener", "parse_call"]
