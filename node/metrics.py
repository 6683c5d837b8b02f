"""Prometheus metrics of one node (its own registry, served on metrics_listen)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class NodeMetrics:
    """`participants`: the only values a peer or issuer label may take; what a
    peer sends is checked against them, so it cannot add label values (and
    time series) without end."""

    def __init__(self, participants: Iterable[str] = ()) -> None:
        self.participants = frozenset(participants)
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
        self.port = 0

    def serve(self, listen: str) -> int:
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        self.port = server.server_port
        self._server = server
        return self.port

    def stop(self) -> None:
        srv = getattr(self, "_server", None)
        if srv is not None:
            srv.shutdown()
            srv.server_close()

    def outcome(self, status: str, reason: str | None) -> None:
        """One record's outcome at the writer (NodeCore.observer)."""
        self.records.labels(status).inc()
        if reason is not None:
            self.rejected.labels(reason).inc()

    def accepted(self, issued_at_ms: Iterable[int], now_ms: int, log_size: int) -> None:
        """Others' records accepted at `now_ms` (their issue times), the log's new size."""
        for t in issued_at_ms:
            self.propagation.observe(max(0, now_ms - t) / 1000)
        self.log_size.set(log_size)

    def lag(self, peer: str, issuer: str, n: int) -> None:
        """Set the lag gauge; ids that are not participants are not recorded."""
        if peer in self.participants and issuer in self.participants:
            self.feed_lag.labels(peer, issuer).set(n)


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
