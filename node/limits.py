"""What anonymous callers of the public port may hold: a bounded share of
the port, so no one client stalls it for the others.

- gRPC's own `maximum_concurrent_rpcs` bounds the calls that hold or wait for
  one of the port's threads (a unary call, a blocking stream); beyond it gRPC
  answers RESOURCE_EXHAUSTED itself. A non-blocking health Watch holds no
  thread and is not counted there (grpcio counts a call until its handler
  returns), so watches get a bound of their own here.
- Blocking streams (server reflection) hold a thread while open: at most
  `max_streams` at once, so they never take every thread from lookups.
- Each client holds at most `client_calls` unary calls and `client_streams`
  streams at once, and spends request units from a token bucket (a call is one
  unit, a LookupBatch also one per `numbers_per_unit` numbers).

A client is one IP address; on loopback, where every local process shares the
address, one connection (IP and port). Every refusal is RESOURCE_EXHAUSTED
with a message naming the limit. `ClientTable` is pure (time is an argument);
`PublicGate` is its gRPC interceptor and keeps handlers' non-blocking mark.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

UNARY = "unary"
WATCH = "watch"  # non-blocking server streams (health Watch)
STREAM = "stream"  # streams that hold a thread while open (reflection)


@dataclass(frozen=True)
class PublicLimits:
    """The public port's bounds (Node(public_limits=...); tests pass small
    ones). The defaults leave a call-path client at thousands of lookups a
    second (the benchmarks' paced 500/s and batched 50,000 numbers/s from one
    connection stay well inside) while no one client holds every thread."""

    threads: int = 24
    max_calls: int = 256  # calls holding or waiting for a thread, port-wide (gRPC's own)
    max_streams: int = 4  # blocking streams open at once, port-wide
    max_watches: int = 1024  # non-blocking watches open at once, port-wide
    # Unary calls of one client at once: with max_streams, at most 16 of the 24
    # threads, so others always find 8; enough for an open-loop caller's bursts.
    client_calls: int = 12
    client_streams: int = 4  # streams (watches included) of one client at once
    rate: float = 5000.0  # request units per second per client, sustained
    burst: float = 10_000.0  # request units a client may spend at once
    numbers_per_unit: int = 100  # a LookupBatch costs one more unit per this many numbers
    max_clients: int = 10_000  # clients tracked at once; idle ones are forgotten first

    def __post_init__(self) -> None:
        if self.max_streams + self.client_calls >= self.threads:
            raise ValueError("one client and the blocking streams must leave threads for others")


@dataclass
class _Client:
    tokens: float
    seen: float
    active: dict[str, int] = field(default_factory=dict)


class ClientTable:
    """Per-client counts and token buckets. Thread-safe; `now` in seconds."""

    def __init__(self, limits: PublicLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._open = {UNARY: 0, WATCH: 0, STREAM: 0}

    def admit(self, client: str, kind: str, now: float, cost: float = 1.0) -> str | None:
        """Count one call of `kind` for `client` and spend `cost` units: None
        when admitted (call `release` when it ends), else why it is refused."""
        lim = self.limits
        with self._lock:
            c = self._client(client, now)
            if c is None:
                return f"this port serves at most {lim.max_clients} clients at once; try later"
            if kind == STREAM and self._open[STREAM] >= lim.max_streams:
                return f"at most {lim.max_streams} streaming calls at once on this port; try later"
            if kind == WATCH and self._open[WATCH] >= lim.max_watches:
                return f"at most {lim.max_watches} health watches at once on this port"
            streams = c.active.get(WATCH, 0) + c.active.get(STREAM, 0)
            if kind != UNARY and streams >= lim.client_streams:
                return f"at most {lim.client_streams} open streams per client; close one"
            if kind == UNARY and c.active.get(UNARY, 0) >= lim.client_calls:
                return f"at most {lim.client_calls} calls at once per client"
            refusal = self._spend(c, cost, now)
            if refusal is not None:
                return refusal
            c.active[kind] = c.active.get(kind, 0) + 1
            self._open[kind] += 1
            return None

    def charge(self, client: str, cost: float, now: float) -> str | None:
        """Spend `cost` more units for an admitted call: None, or why not."""
        with self._lock:
            c = self._client(client, now)
            if c is None:
                return f"this port serves at most {self.limits.max_clients} clients at once"
            return self._spend(c, cost, now)

    def release(self, client: str, kind: str) -> None:
        with self._lock:
            c = self._clients.get(client)
            if c is not None and c.active.get(kind, 0) > 0:
                c.active[kind] -= 1
                self._open[kind] -= 1

    def open_calls(self, kind: str) -> int:
        with self._lock:
            return self._open[kind]

    def _spend(self, c: _Client, cost: float, now: float) -> str | None:
        lim = self.limits
        c.tokens = min(lim.burst, c.tokens + (now - c.seen) * lim.rate)
        c.seen = now
        if cost > c.tokens:
            return (
                f"rate limit: at most {lim.rate:g} request units per second per client "
                f"(bursts of {lim.burst:g}); slow down"
            )
        c.tokens -= cost
        return None

    def _client(self, client: str, now: float) -> _Client | None:
        c = self._clients.get(client)
        if c is not None:
            return c
        if len(self._clients) >= self.limits.max_clients:
            self._forget_idle(now)
            if len(self._clients) >= self.limits.max_clients:
                return None
        c = _Client(tokens=self.limits.burst, seen=now)
        self._clients[client] = c
        return c

    def _forget_idle(self, now: float) -> None:
        """Drop clients with nothing open whose bucket has refilled: forgetting
        them gives them nothing they would not have had anyway."""
        lim = self.limits
        full = lim.burst / lim.rate if lim.rate > 0 else float("inf")
        for key in [
            k
            for k, c in self._clients.items()
            if not any(c.active.values()) and now - c.seen >= full
        ]:
            del self._clients[key]


def client_of(peer: str) -> str:
    """The client a gRPC peer string ("ipv4:1.2.3.4:5678", "ipv6:[::1]:5678")
    counts as: its IP, or on loopback the whole connection."""
    kind, _, rest = peer.partition(":")
    host, _, _port = rest.rpartition(":")
    host = host.strip("[]")
    if kind not in ("ipv4", "ipv6") or not host:
        return peer
    loopback = host == "::1" or host.startswith("127.") or host.startswith("::ffff:127.")
    return peer if loopback else host


class PublicGate(grpc.ServerInterceptor):
    """Admits every call of the public port through a ClientTable; keeps a
    handler's experimental_non_blocking mark (health Watch) as it wraps it."""

    def __init__(self, table: ClientTable, clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self.clock = clock

    def charge(self, context: grpc.ServicerContext, cost: float) -> None:
        """Spend `cost` more units for the caller of an admitted call, or abort it."""
        why = self.table.charge(client_of(context.peer()), cost, self.clock())
        if why is not None:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, why)

    def _admit(self, context: grpc.ServicerContext, kind: str) -> Callable[[], None]:
        client = client_of(context.peer())
        why = self.table.admit(client, kind, self.clock())
        if why is not None:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, why)
        done = threading.Event()

        def release() -> None:
            if not done.is_set():  # once, whichever of the paths below comes first
                done.set()
                self.table.release(client, kind)

        return release

    def _at_end(self, context: grpc.ServicerContext, release: Callable[[], None]) -> None:
        if not context.add_callback(release):
            release()  # the call already ended

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return handler
        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            uu = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                release = self._admit(context, UNARY)
                try:
                    return uu(request, context)
                finally:
                    release()

            return grpc.unary_unary_rpc_method_handler(unary, des, ser)
        if handler.unary_stream is not None:
            us = handler.unary_stream
            if getattr(us, "experimental_non_blocking", False):

                def watch(
                    request: Any, context: grpc.ServicerContext, send_response_callback: Any = None
                ) -> Any:
                    self._at_end(context, self._admit(context, WATCH))
                    return us(request, context, send_response_callback=send_response_callback)

                watch.experimental_non_blocking = True  # type: ignore[attr-defined]
                watch.experimental_thread_pool = getattr(  # type: ignore[attr-defined]
                    us, "experimental_thread_pool", None
                )
                return grpc.unary_stream_rpc_method_handler(watch, des, ser)

            def server_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                release = self._admit(context, STREAM)
                self._at_end(context, release)
                try:
                    yield from us(request, context)
                finally:
                    release()

            return grpc.unary_stream_rpc_method_handler(server_stream, des, ser)
        if handler.stream_unary is not None:
            su = handler.stream_unary

            def client_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                release = self._admit(context, STREAM)
                self._at_end(context, release)
                try:
                    return su(requests, context)
                finally:
                    release()

            return grpc.stream_unary_rpc_method_handler(client_stream, des, ser)
        ss = handler.stream_stream

        def bidi(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            release = self._admit(context, STREAM)
            self._at_end(context, release)
            try:
                yield from ss(requests, context)
            finally:
                release()

        return grpc.stream_stream_rpc_method_handler(bidi, des, ser)
