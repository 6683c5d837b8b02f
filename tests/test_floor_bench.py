"""bench/floor_bench.py, the stack's floor for the propagation load: at a
tiny size it carries every record to every other process and checks what it
writes. Nothing here asserts a speed."""

from __future__ import annotations

import struct

import grpc
import pytest

from bench import __main__ as bench_main
from bench import floor_bench
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb


def test_the_floor_carries_every_record_to_every_other_process() -> None:
    entry = bench_main.BENCHMARKS["propagation_floor_12"]
    assert entry.load() is floor_bench.bench_propagation_floor and not entry.opt_in
    got = floor_bench.run_floor(1.0, 30.0, 4)
    assert got["records"] == 30 and got["refused"] == 0
    assert 0 < got["p50"] <= got["p99"] <= got["max"] < floor_bench.HELD_TIMEOUT_S
    assert got["cpu_s"] > 0 and got["wall_s"] > 0


def test_the_result_is_a_latency_in_the_fixed_format() -> None:
    got = floor_bench.bench_propagation_floor(1.0, 20.0, 4)
    assert set(got) == {"value", "unit", "limit", "ratio", "target", "how"}
    assert got["unit"] == "s" and got["limit"] == got["target"] == floor_bench.TARGET_S
    assert "last of 3 other processes" in got["how"] and "mutual TLS" in got["how"]


def test_a_bent_or_unreadable_envelope_is_refused_and_not_written(tmp_path) -> None:
    mesh = floor_bench.Mesh(tmp_path, 4)
    try:
        push = mesh.channels[3].stream_unary(
            "/floor/Push", pb.RecordBatch.SerializeToString, pb.PushAck.FromString
        )
        key = floor_bench.Ed25519PrivateKey.from_private_bytes(floor_bench._seed(0))
        body = rpb.Record(issuer=floor_bench._pid(0), seq=1, prev_id=b"").SerializeToString()
        ctx = floor_bench.record_context(floor_bench.CONSORTIUM)
        good = rpb.SignedRecord(body=body, signature=key.sign(ctx + body)).SerializeToString()
        bent = good[:-1] + bytes([good[-1] ^ 1])  # the signature's last byte
        ack = push(iter([pb.RecordBatch(envelopes=[bent, b"\xff\x00 not protobuf"])]), timeout=10)
        assert ack.accepted == 2
        push(iter([pb.RecordBatch(envelopes=[good])]), timeout=10)
        for _ in range(100):
            if mesh.counts(3) == (1, 2):
                break
            floor_bench.time.sleep(0.05)
        assert mesh.counts(3) == (1, 2)  # the good one held; both bad ones refused
        times = mesh.times[3](pb.RecordBatch(), timeout=10).envelopes
        assert [t[:32] for t in times] == [floor_bench.hashlib.sha256(good).digest()]
        assert struct.unpack(">d", times[0][32:])[0] > 0
        with pytest.raises(grpc.RpcError) as e:   # a receiver issues nothing
            mesh.issue[3](pb.RecordBatch(), timeout=10)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        mesh.close()


def test_a_mesh_without_a_receiver_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="more than its 3 origins"):
        floor_bench.Mesh(tmp_path, 3)
