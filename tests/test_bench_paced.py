"""The open-loop sender of the p99 benchmarks (bench.exchange_bench.paced_calls):
every call counted from its scheduled send, and the sender's cyclic collector
off only while it sends and waits, restored afterwards, also on an error.
Nothing here asserts a speed."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bench.exchange_bench import CollectorCount, collector_off, paced_calls

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def collector_on() -> Iterator[None]:
    """Each test starts with the collector on and nothing frozen, and leaves it so."""
    was = gc.isenabled()
    gc.enable()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()


@pytest.fixture
def health_stub() -> Iterator[health_pb2_grpc.HealthStub]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield health_pb2_grpc.HealthStub(channel)
    finally:
        channel.close()
        server.stop(None)


def test_collector_off_freezes_then_restores(collector_on: None) -> None:
    kept = [[i] for i in range(1000)]  # tracked objects the freeze must take
    with collector_off():
        assert not gc.isenabled()
        assert gc.get_freeze_count() >= len(kept)
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_collector_off_restores_after_an_error(collector_on: None) -> None:
    with pytest.raises(RuntimeError), collector_off():
        raise RuntimeError("a call failed")
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_collector_off_leaves_a_disabled_collector_disabled(collector_on: None) -> None:
    gc.disable()
    with collector_off():
        pass
    assert not gc.isenabled() and gc.get_freeze_count() == 0


def test_collector_count_sees_a_collection() -> None:
    with CollectorCount() as seen:
        gc.collect()
    assert seen.count >= 1 and seen.pause_s >= 0
    assert seen not in gc.callbacks


class _FailsOnThird:
    """A stub method whose third call raises (a client-side error mid-send)."""

    def __init__(self, method: Any) -> None:
        self.method, self.calls = method, 0

    def __call__(self, request: Any, timeout: float) -> Any:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("the sender broke")
        return self.method(request, timeout=timeout)


def test_paced_calls_turn_the_collector_back_on_after_an_error(
    collector_on: None, health_stub: health_pb2_grpc.HealthStub
) -> None:
    method = _FailsOnThird(health_stub.Check)
    with pytest.raises(RuntimeError, match="the sender broke"):
        paced_calls(method, [health_pb2.HealthCheckRequest()] * 5, 200.0, lambda i, r: True,
                    timeout=5, senders=2)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert not any(isinstance(cb, CollectorCount) for cb in gc.callbacks)


def test_paced_calls_count_every_call_from_its_schedule(
    collector_on: None, health_stub: health_pb2_grpc.HealthStub
) -> None:
    n = 40
    paced = paced_calls(health_stub.Check, [health_pb2.HealthCheckRequest()] * n, 200.0,
                        lambda i, r: i % 2 == 0, timeout=5, senders=4)
    assert gc.isenabled()
    assert not paced.failed and len(paced.latency) == n and None not in paced.latency
    assert sorted(paced.kept) == list(range(0, n, 2))
    assert all(r.status == health_pb2.HealthCheckResponse.SERVING for r in paced.kept.values())
    # From the scheduled send: a call is never faster than the sender was late with it.
    assert all(lat is not None and lat >= late for lat, late in zip(paced.latency, paced.late,
                                                                    strict=True))
    assert paced.sent_s >= (n - 1) / 200.0
    assert paced.collections == 0 and "0 collections" in paced.sender()
    assert paced.senders == 4 and "by 4 threads" in paced.sender()


def test_paced_calls_count_failed_calls_and_send_the_rest(
    collector_on: None, health_stub: health_pb2_grpc.HealthStub
) -> None:
    # An unknown service: NOT_FOUND for every call, and every call still sent.
    reqs = [health_pb2.HealthCheckRequest(service="none")] * 10
    paced = paced_calls(health_stub.Check, reqs, 200.0, lambda i, r: True, timeout=5,
                        senders=3)
    assert len(paced.failed) == 10 and all(f.startswith("NOT_FOUND") for f in paced.failed)
    assert paced.latency == [None] * 10 and not paced.kept
