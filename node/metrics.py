"""Prometheus metrics of one node (its own registry, served on metrics_listen)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer

# How often the metrics server's loop looks for a stop: prometheus_client's own
# start_http_server polls every 0.5 s, which every node's stop then waited out.
STOP_POLL_S = 0.05


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Scrapes are not the node's log."""


class NodeMetrics:
    """`participants`: the only values a peer or issuer label may take; what a
    peer sends is checked against them, so it cannot add label values (and
    time series) without end."""

    def __init__(self, participants: Iterable[str] = ()) -> None:
        self.participants = frozenset(participants)
        # No `*_created` series: each would be one more metric per family, saying only
        # when the process started (docs/operations.md lists what is exported).
        disable_created_metrics()
        self.registry = CollectorRegistry()
        r = self.registry
        self.records = Counter("markex_records_total", "Records by outcome", ["status"], registry=r)
        self.rejected = Counter(
            "markex_records_rejected_total", "Rejected records by reason", ["reason"], registry=r
        )
        self.log_size = Gauge("markex_log_size", "Entries in the node's log", registry=r)
        self.feed_lag = Gauge(
            "markex_feed_lag_records",
            "Records a peer has that we lack",
            ["peer", "issuer"],
            registry=r,
        )
        self.propagation = Histogram(
            "markex_propagation_seconds",
            "Time from a record's issued-at to its acceptance here (others' records)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.request = Histogram(
            "markex_request_seconds",
            "gRPC request latency",
            ["method"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
        )
        self.peer_up = Gauge(
            "markex_peer_up", "1 while the last exchange with the peer succeeded, else 0",
            ["peer"], registry=r,
        )
        self.checkpoint_age = Gauge(
            "markex_checkpoint_age_seconds",
            "Seconds since the latest log checkpoint was signed", registry=r,
        )
        self.checkpoint_cosignatures = Gauge(
            "markex_checkpoint_cosignatures",
            "Cosignatures collected on the latest log checkpoint", registry=r,
        )
        self.equivocations = Gauge(
            "markex_equivocations", "Equivocation proofs the node holds", registry=r
        )
        self.view_lag = Gauge(
            "markex_view_lag_records",
            "Records the log holds beyond the view's vector", registry=r,
        )
        self.view_age = Gauge(
            "markex_view_age_seconds", "Seconds since the view checkpoint was signed", registry=r
        )
        self.port = 0
        # The counters' children by label, looked up once: outcome() runs for
        # every record at the writer, and labels() takes a lock and builds a key.
        self._by_status: dict[str, Any] = {}
        self._by_reason: dict[str, Any] = {}

    def read_from(self, **sources: Callable[[], float]) -> None:
        """Gauges read at each scrape from the node's parts, so they are right
        from the start (after a restart too): `sources` maps a gauge attribute
        (log_size, checkpoint_age, ...) to a function returning its value; one
        that raises reads NaN, and the scrape still answers."""
        for name, fn in sources.items():
            gauge = getattr(self, name)
            if not isinstance(gauge, Gauge):
                raise TypeError(f"{name} is not a gauge of NodeMetrics")
            gauge.set_function(_safe(fn))

    def peer(self, peer: str, up: bool) -> None:
        """The link to `peer` came up or went down (a member's id only)."""
        if peer in self.participants:
            self.peer_up.labels(peer).set(1 if up else 0)

    def serve(self, listen: str) -> int:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        server = make_server(host, int(port), make_wsgi_app(self.registry), Server,
                             handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, args=(STOP_POLL_S,),
                         name="metrics", daemon=True).start()
        self.port = server.server_port
        self._server = server
        return self.port

    def stop(self) -> None:
        srv = getattr(self, "_server", None)
        if srv is not None:
            srv.shutdown()
            srv.server_close()

    def outcome(self, status: str, reason: str | None, n: int = 1) -> None:
        """The outcome of `n` records at the writer (NodeCore.observer)."""
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status.setdefault(status, self.records.labels(status))
        child.inc(n)
        if reason is not None:
            child = self._by_reason.get(reason)
            if child is None:
                child = self._by_reason.setdefault(reason, self.rejected.labels(reason))
            child.inc(n)

    def accepted(self, issued_at_ms: Iterable[int], now_ms: int) -> None:
        """Others' records accepted at `now_ms` (their issue times)."""
        for t in issued_at_ms:
            self.propagation.observe(max(0, now_ms - t) / 1000)

    def lag(self, peer: str, issuer: str, n: int) -> None:
        """Set the lag gauge; ids that are not participants are not recorded."""
        if peer in self.participants and issuer in self.participants:
            self.feed_lag.labels(peer, issuer).set(n)


def _safe(fn: Callable[[], float]) -> Callable[[], float]:
    def read() -> float:
        try:
            return float(fn())
        except Exception:  # a scrape must answer even while a part is closing
            return float("nan")

    return read


class LatencyInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        hist = self.metrics.request.labels(details.method.rsplit("/", 1)[-1])
        inner = handler.unary_unary

        def timed(request: Any, context: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(request, context)
            finally:
                hist.observe(time.perf_counter() - t)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
