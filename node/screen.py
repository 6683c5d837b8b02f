"""The Screening service on the member port: one decision per call, from
this node's own view and consent state (docs/screen.md), no remote call.

- `ResolutionCache`: a caller's entry evaluated once per interval of its
  `instants` (ledger/view/resolution.py), keyed by the entry bytes' digest.
  The same bytes are the same entry everywhere, so the cache is valid in any
  process reading any copy of the store and is never invalidated: a changed
  entry has other bytes, hence another key.
- `Screener`: gathers `decide`'s inputs for many calls at once (one
  multi-get of the callers' entries; the callee's preference by its sealed
  number; the caller's line) and decides each.
- `ScreeningService`: the gRPC servicer (Screen, ScreenBatch, ScreenStream),
  open to carriers, the institute and call centres only.
"""

from __future__ import annotations

import hashlib
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import grpc

from keys import KeysError
from ledger.consent.facts import ConsentReader
from ledger.errors import BadInput, LedgerError, TooLarge
from ledger.numbers import normalize
from ledger.screen import (
    ALLOW,
    BLOCK,
    LABEL,
    SCREENING_ROLES,
    WARN,
    BadCallMode,
    Decision,
    NoMembersKey,
    NotAScreener,
    Reason,
    decide,
    is_marketing,
)
from ledger.view.entries import Entry
from ledger.view.resolution import Resolution, evaluate, instants
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.services import caller_id, edge
from node.status import code_for, detail_for
from node.viewkeeper import MAX_LOOKUP_BATCH

if TYPE_CHECKING:
    from keys.consortium import Consortium

MAX_SCREEN_BATCH = MAX_LOOKUP_BATCH   # the node's one batch bound (TooLarge beyond it)
CACHE_ENTRIES = 100_000               # distinct callers' entries kept: about 200 MB at most
MODES = {pb.CALL_MODE_VOICE: "voice", pb.CALL_MODE_SMS: "sms"}
ACTIONS = {ALLOW: pb.SCREEN_ACTION_ALLOW, LABEL: pb.SCREEN_ACTION_LABEL,
           WARN: pb.SCREEN_ACTION_WARN, BLOCK: pb.SCREEN_ACTION_BLOCK}


class EntrySource(Protocol):
    """The consistent read of the view the lookups use (ViewKeeper.entries_bytes)."""

    def entries_bytes(self, e164s: list[str]) -> list[bytes | None]: ...


@dataclass
class _Cached:
    instants: tuple[int, ...]
    by_interval: dict[int, Resolution]  # index of the interval (bisect_right) -> resolution


class ResolutionCache:
    """At most `size` entries, the oldest inserted dropped first; each keeps
    its instants and the resolutions computed so far (about 2 KB), not the
    decoded entry: a new interval, rare, decodes the given bytes again.
    Reads take no lock; a race computes one resolution twice, which is
    harmless since both are equal (and makes `hits` and `misses`, counters
    for tests and metrics, approximate)."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self.size = size
        self._items: dict[bytes, _Cached] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def resolve(self, raw: bytes, at_ms: int) -> Resolution:
        """`Entry.decode(raw).evaluate(at_ms)`, but for `at_ms`: the returned
        resolution's `at_ms` is the first time of its interval evaluated.
        Raises BadInput for bytes that are no entry."""
        key = hashlib.blake2b(raw, digest_size=16).digest()
        got = self._items.get(key)
        entry = None
        if got is None:
            self.misses += 1
            entry = Entry.decode(raw)
            got = _Cached(instants(entry), {})
            with self._lock:
                while len(self._items) >= self.size:
                    self._items.pop(next(iter(self._items)))
                self._items[key] = got
        else:
            self.hits += 1
        i = bisect_right(got.instants, at_ms)
        res = got.by_interval.get(i)
        if res is None:
            res = got.by_interval[i] = evaluate(entry or Entry.decode(raw), at_ms)
        return res


class Call(NamedTuple):
    """One call to screen, normalized (a NamedTuple: one is built per call)."""

    caller: str
    callee: str
    at_ms: int
    mode: str


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


class Screener:
    """Decides calls from this node's state: the view's entries (`view`), the
    consent state (`consent`), the consortium's policy and members' key."""

    def __init__(self, cons: Consortium, view: EntrySource, consent: ConsentReader,
                 cache: ResolutionCache | None = None) -> None:
        self.cons = cons
        self.view = view
        self.consent = consent
        self.cache = cache if cache is not None else ResolutionCache()

    def decide_many(self, calls: list[Call]) -> list[Decision]:
        """One decision per call, in order; the callers' entries in one read.
        Raises NoMembersKey when this node cannot read preferences."""
        consent, key = self.consent, self.cons.members_key
        if key is None:
            raise NoMembersKey(
                "this node holds no members' key (node.toml members_key): it cannot read "
                "subscribers' preferences, so it does not screen")
        cons, resolve = self.cons, self.cache.resolve
        raws = self.view.entries_bytes([c.caller for c in calls])
        out = []
        for c, raw in zip(calls, raws, strict=True):
            at = c.at_ms
            res = None if raw is None else resolve(raw, at)
            line = consent.line_at(c.caller, at)
            # Only a marketer's decision reads the callee's preference (rule 3):
            # the seal and the read are skipped for every other caller.
            pref = (consent.preference_at(key.seal(c.callee), at)
                    if is_marketing(cons, res, line, at) else None)
            out.append(decide(cons, c.caller, c.callee, at, c.mode, res, line, pref))
        return out


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


def decision_pb(call: Call, d: Decision, tag: int) -> pb.ScreenDecision:
    return pb.ScreenDecision(
        action=ACTIONS[d.action], category=d.category, redress=d.redress, tag=tag,
        caller=call.caller, callee=call.callee, at_ms=call.at_ms, risk=d.risk,
        reasons=[_reason_pb(r) for r in d.reasons],
    )


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
        return pb.ScreenBatchResponse(decisions=self._answers(list(request.calls)))

    def _answers(self, reqs: list[pb.ScreenRequest]) -> list[pb.ScreenDecision]:
        """A decision per request in order; a bad request's has `error` set."""
        now = self.clock()
        out: list[pb.ScreenDecision | None] = [None] * len(reqs)
        good: list[tuple[int, Call]] = []
        for i, req in enumerate(reqs):
            try:
                good.append((i, parse_call(req, now)))
            except BadInput as e:
                out[i] = error_pb(req, e)
        decisions = self.screener.decide_many([c for _, c in good]) if good else []
        for (i, call), d in zip(good, decisions, strict=True):
            out[i] = decision_pb(call, d, reqs[i].tag)
        return [d for d in out if d is not None]

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
