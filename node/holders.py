"""The holder's appeal, at the number's serving carrier (docs/appeals.md).

`HolderDesk` is the serving carrier's side: it sends a one-time code to the
number through the node's SMS gateway (node/sms.py), checks it, and issues
the holder's appeal itself (a withdraw correction of the other participants'
marks that count on the number, its reason the holder's statement). The
party that checks the code is the one that signs the record, so the web
front end that relays the holder's requests keeps no state.

Codes: 6 digits from `secrets`, valid `CODE_TTL_MS`, at most `MAX_TRIES`
tries, one live code per number (a new one replaces it), kept only as an
HMAC under a key of this process (never stored, never in the log). Code
requests and filing attempts are limited per number and per client address.
Time is the clock passed in (ms).

`HoldersService` is the `Holders` gRPC service on the member port: any
consortium member's certificate; RequestCode and FileAppeal only for the
numbers this node's participant serves; ListAppeals and GetAppeal (with the
statement: members only) on every node. Each refusal is a `HolderError`
with its own status code (`HolderError.code`); the detail is
"ClassName: sentence", and a RESOURCE_EXHAUSTED carries the seconds to wait
in the trailing metadata `retry-after`."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from keys import KeysError
from keys.consortium import Consortium
from ledger import view as V
from ledger.errors import LedgerError, NotAllowed, NotFound
from ledger.numbers import normalize
from ledger.record import WITHDRAW, Correction, Mark, Record
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.services import caller_id
from node.sms import SmsError, SmsGateway, gateway_from_config
from node.status import code_for, detail_for

if TYPE_CHECKING:
    from keys.layout import NodeConfig
    from node.core import NodeCore
    from node.services import AdminService
    from node.viewkeeper import ViewKeeper

CODE_DIGITS = 6
CODE_TTL_MS = 5 * 60 * 1000
MAX_TRIES = 5
MAX_STATEMENT_CHARS = 1000
MINUTE_MS = 60 * 1000


@dataclass(frozen=True)
class Limits:
    """How often one number and one client address may ask: `count` in a
    sliding window of `window_ms`."""

    codes_per_number: int = 3
    codes_per_client: int = 10
    appeals_per_client: int = 20   # filing attempts, right code or wrong
    window_ms: int = 60 * MINUTE_MS


# ------------------------------------------------------------------ errors


class HolderError(Exception):
    """A refused holder request; `code` is its gRPC status."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class StatementTooLong(HolderError):
    """The statement is over MAX_STATEMENT_CHARS (HTTP 413)."""


class NotServed(HolderError):
    """This node's participant does not serve the number; the text names who does."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class NothingToAppeal(HolderError):
    """No other participant's mark counts on the number now: nothing to appeal."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class WrongCode(HolderError):
    """The code is wrong, expired, used or never sent (HTTP 403)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class TooManyRequests(HolderError):
    """A limit is reached; `retry_after_s` says when to ask again (HTTP 429)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(f"{message}; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class GatewayDown(HolderError):
    """The SMS gateway did not take the message: no code is live."""

    code = grpc.StatusCode.UNAVAILABLE


class NotIssuing(HolderError):
    """The node may not sign its next record yet (its issue gate is shut)."""

    code = grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------------ limits


class Window:
    """At most `count` events per key in any `span_ms`; at most `max_keys`
    keys are remembered (the oldest dropped), so no caller grows it unbounded."""

    def __init__(self, count: int, span_ms: int, max_keys: int = 100_000) -> None:
        self.count, self.span_ms, self.max_keys = count, span_ms, max_keys
        self._events: OrderedDict[str, deque[int]] = OrderedDict()

    def wait_ms(self, key: str, now: int) -> int:
        """0 when `key` may act now, else how long until it may."""
        ev = self._events.get(key)
        if ev is None:
            return 0
        while ev and ev[0] <= now - self.span_ms:
            ev.popleft()
        return 0 if len(ev) < self.count else ev[0] + self.span_ms - now

    def take(self, key: str, now: int) -> None:
        ev = self._events.setdefault(key, deque())
        ev.append(now)
        self._events.move_to_end(key)
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)


def _check(window: Window, key: str, now: int, what: str) -> None:
    wait = window.wait_ms(key, now)
    if wait > 0:
        raise TooManyRequests(what, max(1, -(-wait // 1000)))


# ------------------------------------------------------------------ the desk


@dataclass
class _Live:
    digest: bytes
    expires_at: int
    tries_left: int


class HolderDesk:
    """A carrier node's one-time codes and the appeals they let holders file.
    `issue(payload)` signs and appends one own record (NodeCore.issue),
    `entry(number)` is the view's entry of a number (or None), `clock` ms."""

    def __init__(
        self,
        consortium: Consortium,
        participant_id: str,
        gateway: SmsGateway | None,
        issue: Callable[[Correction], Any],
        entry: Callable[[str], V.Entry | None],
        clock: Callable[[], int],
        limits: Limits | None = None,
    ) -> None:
        self.consortium = consortium
        self.participant_id = participant_id
        self.gateway = gateway
        self._issue = issue
        self._entry = entry
        self.clock = clock
        self._key = secrets.token_bytes(32)  # per process: a restart voids every live code
        self._codes: dict[str, _Live] = {}
        self._lock = threading.Lock()
        lim = limits or Limits()
        w = lim.window_ms
        self._per_number = Window(lim.codes_per_number, w)
        self._per_client = Window(lim.codes_per_client, w)
        self._filings = Window(lim.appeals_per_client, w)

    def _digest(self, number: str, code: str) -> bytes:
        return hmac.new(self._key, f"{number}:{code}".encode(), hashlib.sha256).digest()

    def served(self, raw: str) -> str:
        """The E.164 form of a number this node serves. Raises InvalidNumber,
        NotServed (naming the serving carrier)."""
        number = normalize(raw)
        carrier = self.consortium.carrier_for(number)
        if carrier != self.participant_id or self.gateway is None:
            who = f"its serving carrier is {carrier}" if carrier else "no carrier serves it"
            raise NotServed(f"{self.participant_id} does not serve {number}: {who}")
        return number

    def targets(self, number: str, now: int) -> tuple[bytes, ...]:
        """The other participants' marks that count on `number` at `now`.
        Raises NothingToAppeal."""
        entry = self._entry(number)
        markers = entry.evaluate(now).markers if entry is not None else ()
        theirs = tuple(m.record_id for m in markers if m.participant != self.participant_id)
        if not theirs:
            own = " but this carrier's own (its operator withdraws them)" if markers else ""
            raise NothingToAppeal(f"no mark{own} counts on {number}: there is nothing to appeal")
        assert entry is not None
        # One pending appeal of a mark is enough: a second would only queue twice.
        pending = [a for a in entry.appeals
                   if a.appellant == self.participant_id and a.status == V.PENDING]
        covered = {t for a in pending for t in a.targets}
        left = tuple(t for t in theirs if t not in covered)
        if not left:
            raise NothingToAppeal(f"the marks that count on {number} are already appealed "
                                  f"(appeal {pending[-1].id.hex()}, pending): follow it")
        return left

    def request_code(self, raw: str, client: str) -> pb.CodeSent:
        """Send a fresh code to the number (replacing a live one). Raises
        InvalidNumber, NotServed, NothingToAppeal (no SMS then),
        TooManyRequests, GatewayDown."""
        number = self.served(raw)
        now = self.clock()
        with self._lock:
            _check(self._per_client, client, now, "too many code requests from your address")
            _check(self._per_number, number, now, f"too many codes sent to {number}")
            self._per_client.take(client, now)
            self.targets(number, now)
            self._per_number.take(number, now)
            code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
            self._codes.pop(number, None)  # the old code dies even if this send fails
        minutes = CODE_TTL_MS // MINUTE_MS
        text = (f"【markex】您的申诉验证码：{code}，{minutes}分钟内有效。"
                f"Your markex appeal code: {code} (valid {minutes} minutes).")
        assert self.gateway is not None  # served() refused a node without one
        try:
            self.gateway.send(number, text)
        except SmsError as e:
            raise GatewayDown(f"the SMS gateway did not take the code: {e}") from e
        with self._lock:
            self._codes[number] = _Live(self._digest(number, code), now + CODE_TTL_MS, MAX_TRIES)
        return pb.CodeSent(number=number, carrier=self.participant_id,
                           expires_at_ms=now + CODE_TTL_MS)

    def _spend(self, number: str, code: str, now: int) -> None:
        """Check the code (a try is spent either way). Raises WrongCode,
        TooManyRequests once the tries are used up."""
        live = self._codes.get(number)
        if live is None:
            raise WrongCode(f"no live code for {number}: ask for a code first")
        if now >= live.expires_at:
            del self._codes[number]
            raise WrongCode(f"the code for {number} has expired: ask for a new one")
        live.tries_left -= 1
        if hmac.compare_digest(live.digest, self._digest(number, code)):
            del self._codes[number]
            return
        if live.tries_left <= 0:
            del self._codes[number]
            wait = max(1, -(-self._per_number.wait_ms(number, now) // 1000))
            raise TooManyRequests(f"{MAX_TRIES} wrong codes for {number}: ask for a new one",
                                  wait)
        raise WrongCode(f"wrong code; {live.tries_left} tries left")

    def file_appeal(self, raw: str, code: str, statement: str, client: str) -> Any:
        """Issue the holder's appeal; returns the Outcome (NodeCore.issue).
        Raises StatementTooLong, InvalidNumber, NotServed, TooManyRequests,
        WrongCode, NothingToAppeal (the code is spent then), LedgerError."""
        if len(statement) > MAX_STATEMENT_CHARS:
            raise StatementTooLong(
                f"the statement has {len(statement):,} characters; at most {MAX_STATEMENT_CHARS:,}"
            )
        if not statement.strip():
            raise HolderError("say why the mark is wrong: the statement is empty")
        number = self.served(raw)
        now = self.clock()
        with self._lock:
            _check(self._filings, client, now, "too many appeal attempts from your address")
            self._filings.take(client, now)
            self._spend(number, code.strip(), now)
        targets = self.targets(number, now)
        return self._issue(Correction(targets=targets, action=WITHDRAW, reason=statement))


# ------------------------------------------------------------------ reading appeals


def appeal_summaries(
    entries: Iterator[V.Entry], record: Callable[[bytes], Record | None], pending_only: bool
) -> list[pb.AppealSummary]:
    """Every appeal the entries hold, oldest first (`record(id)`: a held record)."""
    out = [
        summary(e.number, a, record)
        for e in entries
        for a in e.appeals
        if not pending_only or a.status == V.PENDING
    ]
    return sorted(out, key=lambda s: (s.filed_at_ms, s.id))


def summary(number: str, a: Any, record: Callable[[bytes], Record | None]) -> pb.AppealSummary:
    s = pb.AppealSummary(id=a.id, number=number, appellant=a.appellant, status=a.status,
                         filed_at_ms=a.filed_at, closed_at_ms=a.closed_at or 0,
                         closed_by=a.closed_by)
    filed = record(a.id)
    if filed is not None and isinstance(filed.payload, Correction):
        s.statement = filed.payload.reason
    closed = record(a.closed_by) if a.closed_by else None
    if closed is not None:
        s.closed_by_issuer, s.closed_by_seq = closed.issuer, closed.seq
        if isinstance(closed.payload, Correction):
            s.reason = closed.payload.reason
    return s


def _holder_edge(fn: Callable[..., Any]) -> Callable[..., Any]:
    """HolderError -> its own code (retry-after in the trailers); ledger
    and keys errors -> node/status.py's codes."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except HolderError as e:
            if isinstance(e, TooManyRequests):
                context.set_trailing_metadata((("retry-after", str(e.retry_after_s)),))
            context.abort(e.code, f"{type(e).__name__}: {e}")
        except (LedgerError, KeysError) as e:
            context.abort(code_for(e), detail_for(e))

    return wrapper


class HoldersService(rpc.HoldersServicer):
    """The Holders service; `view` is the node's ViewKeeper (its `view`,
    a NationalView), `ledger` its NodeLedger."""

    def __init__(self, desk: HolderDesk, ledger: Any, view: Any) -> None:
        self.desk = desk
        self.ledger = ledger
        self.view = view

    def _member(self, context: grpc.ServicerContext) -> str:
        pid = caller_id(context)
        why = self.desk.consortium.why_not_reader(pid)
        if why is not None:
            raise NotAllowed(why)
        return pid

    def _record(self, rid: bytes) -> Record | None:
        found = self.ledger.record_by_id(rid) if len(rid) == 32 else None
        return None if found is None else Record.from_envelope(found[1])

    @_holder_edge
    def RequestCode(self, request, context):  # noqa: N802
        self._member(context)
        return self.desk.request_code(request.number, request.client_address)

    @_holder_edge
    def FileAppeal(self, request, context):  # noqa: N802
        self._member(context)
        out = self.desk.file_appeal(request.number, request.code, request.statement,
                                    request.client_address)
        r = out.record
        return pb.Issued(id=r.id, issuer=r.issuer, seq=r.seq, appeal=True, index=out.index or 0)

    @_holder_edge
    def ListAppeals(self, request, context):  # noqa: N802
        self._member(context)
        nv = self.view.view
        entries = (nv.entry(n) for n in list(nv.numbers()))
        found = appeal_summaries((e for e in entries if e is not None), self._record,
                                 request.pending_only)
        return pb.AppealList(appeals=found)

    @_holder_edge
    def GetAppeal(self, request, context):  # noqa: N802
        self._member(context)
        rec = self._record(request.id)
        if rec is None or not isinstance(rec.payload, Correction) or rec.payload.is_decision:
            raise NotFound(f"no appeal {request.id.hex()[:16]} on this node")
        for t in rec.payload.targets:
            target = self._record(t)
            if target is None or not isinstance(target.payload, Mark):
                continue
            entry = self.view.view.entry(target.payload.number)
            for a in entry.appeals if entry is not None else ():
                if a.id == rec.id:
                    return summary(entry.number, a, self._record)
        raise NotFound(f"{request.id.hex()[:16]} is no appeal this node's view holds")


def holders_service(
    cfg: NodeConfig, core: NodeCore, view: ViewKeeper, admin: AdminService, clock: Any
) -> HoldersService:
    """The Holders service of a node, given its parts (the writer, the view
    keeper, the Admin servicer whose issue gate it shares, the clock): a
    carrier's node sends codes through the gateway its node.toml names
    (`sms_gateway`; default the outbox file in the node's folder); other
    nodes only read appeals."""
    cons, pid = core.ledger.consortium, core.ledger.participant_id
    me = cons.participant(pid)
    gateway = None
    if me is not None and me.role == "carrier":
        folder = cfg.source.parent if cfg.source is not None else cfg.data_dir.parent
        gateway = gateway_from_config(cfg.sms_gateway, folder)

    def entry(number: str) -> V.Entry | None:
        nv = view.view
        return None if nv is None else nv.entry(number)

    def issue(payload: Correction) -> Any:
        why = admin.issue_refusal()  # the issue gate (node/feedgate.py), as Admin waits on
        if why is not None:
            raise NotIssuing(f"not issuing yet: {why}")
        return core.issue(payload)

    desk = HolderDesk(cons, pid, gateway, issue, entry, clock)
    return HoldersService(desk, core.ledger, view)
