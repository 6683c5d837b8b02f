"""`watch_lag_p99`: from a record accepted at the node (its IssueMark
acknowledged) until a WatchView consumer holds a verified checkpoint that
covers it (the checkpoint's vector reaches the record's seq in its issuer's
feed). Three in-process nodes on loopback with TLS, one consumer verifying
every delta with ledger/watch.py; marks paced at `rate` per second.
Target under 1 s (limit = the target, ratio = 1 s / p99)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import report
from keys.layout import NodeConfig
from ledger.watch import Change, WatchCopy
from markex.v1 import service_pb2 as pb
from node.localnet import LocalNet
from node.server import Node

TARGET_S = 1.0


def _p99(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(len(s) * 0.99 + 0.999999) - 1))]


def bench_watch_lag(n: int = 200, rate: float = 20.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        net = LocalNet(Path(d) / "c", carriers=1, internet=1, sync_interval=0.2)
        nodes = [Node(NodeConfig.for_participant(net.dir, pid), sync_interval=0.2)
                 for pid in net.ids]
        for node in nodes:
            node.start()
        covered: dict[int, float] = {}          # carrier-1 seq -> when first covered
        stop = threading.Event()
        cond = threading.Condition()

        def consume() -> None:
            copy = WatchCopy(net.consortium, "carrier-1")
            call = net.public("carrier-1").WatchView(pb.WatchViewRequest())
            pending: list[Change] = []
            snap = False
            try:
                for msg in call:
                    snap = snap or msg.snapshot
                    pending.extend(Change(e.number, e.entry or None) for e in msg.entries)
                    if not msg.checkpoint:
                        continue
                    cp = copy.apply(pending, msg.checkpoint, time.time_ns() // 10**6, snap)
                    pending, snap = [], False
                    with cond:
                        covered[cp.vector_dict.get("carrier-1", 0)] = time.monotonic()
                        cond.notify_all()
                    if stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - the call is cancelled at the end
                if not stop.is_set():
                    raise

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        try:
            lags: list[float] = []
            for i in range(n):
                t0 = time.monotonic()
                seq = net.mark("carrier-1", f"1383000{i:04d}", "fraud").seq
                with cond:
                    ok = cond.wait_for(
                        lambda s=seq: any(k >= s for k in covered), timeout=30)
                if not ok:
                    raise RuntimeError(f"no verified checkpoint covered seq {seq} in 30 s")
                at = min(v for k, v in covered.items() if k >= seq)
                lags.append(max(0.0, at - t0))
                time.sleep(max(0.0, 1 / rate - (time.monotonic() - t0)))
        finally:
            stop.set()
            net.stop_all()
            for node in nodes:
                node.stop(grace=0.1)
        p99 = _p99(lags)
        return report.latency(
            p99, "s", TARGET_S,
            f"p99 over {n} marks paced at {rate:g}/s of the time from IssueMark's acknowledgement "
            "at carrier-1 until a WatchView consumer verified (ledger/watch.py: signer, fresh "
            "quorum, root) a checkpoint whose vector covers the mark; 3 in-process nodes, TLS "
            "on loopback",
        )
