"""Crash safety of the store, with real processes and real SIGKILL.

A writer process (tests/crash_writer.py) appends signed records in batches of
random size and acknowledges each batch on stdout once submit() returned. The
test kills it with SIGKILL at a random moment (while it opens the store, signs
a batch or writes one), many times over one data directory, restarting it each
round. After every kill the store is reopened and must show that:

1. nothing acknowledged is lost or rewritten: every acknowledged size is in
   the log and the log's root at that size is the acknowledged root;
2. the tree verifies: the root recomputed from every entry's leaf hash is the
   log's root, every stored Merkle node is the one the entries give, and
   inclusion and consistency proofs lead to the acknowledged roots;
3. nothing is half-written: the stored size, the leaves, records and feedseq
   column families, and the feed heads all agree.

CRASH_ROUNDS raises the number of rounds (30 by default); CRASH_SEED replays
one run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ledger import merkle
from ledger.log import NodeLedger
from ledger.record import Record, record_id
from ledger.store import Store, feedseq_key, read_u64, u64
from tests.conftest import make_consortium
from tests.crash_writer import ISSUERS

REPO = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("CRASH_ROUNDS", "30"))
READY_TIMEOUT_S = 30.0


@dataclass
class Writer:
    """One writer process and the complete lines it printed."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, data_dir: Path, seed: int) -> Writer:
        """The writer's interpreter, started; it opens the store at `go()`."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_writer", str(data_dir), str(seed), "--on-go"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        w = cls(proc)
        w.reader = threading.Thread(target=w._read, daemon=True)
        w.reader.start()
        return w

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            # A line cut short by the kill was never acknowledged.
            if line.endswith("\n"):
                self.lines.append(line)
                if line.startswith("READY"):
                    self.ready.set()

    def kill(self) -> str:
        """SIGKILL (if still running), reap, drain stdout; returns stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        if self.reader is not None:
            self.reader.join(timeout=30)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        return err

    def acks(self) -> list[tuple[int, bytes]]:
        out = []
        for line in self.lines:
            if line.startswith("ACK "):
                _, size, root = line.split()
                out.append((int(size), bytes.fromhex(root)))
        return out


@dataclass
class Checked:
    """What earlier rounds verified: the log up to `size` with `root`, and each
    feed's head there. Records below `size` are not parsed again; the root at
    `size` staying the same shows they did not change."""

    size: int = 0
    root: bytes = merkle.EMPTY_ROOT
    heads: dict[str, bytes] = field(default_factory=dict)


def check_store(
    data_dir: Path, acked: list[tuple[int, bytes]], checked: Checked, rng: random.Random
) -> int:
    """Reopen the store as a restarted node would and check it whole; returns its size."""
    led = NodeLedger(Store(data_dir), make_consortium(), "carrier-1")
    try:
        return _check(led, acked, checked, rng)
    finally:
        led.close()


def _check(
    led: NodeLedger, acked: list[tuple[int, bytes]], checked: Checked, rng: random.Random
) -> int:
    store = led.store
    size = led.size
    root = led.root()

    # (1) Every acknowledged (size, root) is still a prefix of the log, and so
    # is what the last check saw (acknowledged or not: it was durable then).
    for n, r in [*acked, (checked.size, checked.root)]:
        assert n <= size, f"acknowledged size {n} lost: the store reopened at {size}"
        assert led.root_at(n) == r, f"the root at acknowledged size {n} changed"

    # (3) One size everywhere: nothing half-written.
    meta = store.get("meta", b"size")
    assert (read_u64(meta) if meta else 0) == size
    assert store.count("leaves") == size
    assert store.count("records") == size
    assert store.count("feedseq") == size
    assert store.count("equivocations") == 0
    feeds = led.feeds()
    assert set(feeds) <= set(ISSUERS)
    assert sum(f.seq for f in feeds.values()) == size
    for issuer, f in feeds.items():
        assert f.frozen_at is None
        held = list(store.items("feedseq", feedseq_key(issuer, 0), feedseq_key(issuer, f.seq + 1)))
        assert [k for k, _ in held] == [feedseq_key(issuer, s) for s in range(1, f.seq + 1)]
        assert held[-1][1] == f.head_id, f"feed head of {issuer} is not its last record"

    # (2) The tree verifies from the entries themselves.
    entries = led.entries(0, size)
    leaves = [rid for _, rid in store.items("leaves")]
    assert [k for k, _ in store.items("leaves")] == [u64(i) for i in range(size)]
    nodes = merkle.MemoryNodes()
    for i, env in enumerate(entries):
        rid = record_id(env)
        assert leaves[i] == rid
        stored = store.get("records", rid)
        assert stored is not None and read_u64(stored[:8]) == i
        nodes.append(merkle.leaf_hash(env))
    heads = dict(checked.heads)
    for i in range(checked.size, size):
        rec = Record.from_envelope(entries[i])
        assert rec.prev_id == heads.get(rec.issuer, b""), f"feed {rec.issuer} broken at {i}"
        heads[rec.issuer] = rec.id
        assert store.get("feedseq", feedseq_key(rec.issuer, rec.seq)) == rec.id
    assert heads == {i: f.head_id for i, f in feeds.items()}
    leaf_hashes = [nodes.get_node(0, i) for i in range(size)]
    assert merkle.root_from_leaf_hashes(leaf_hashes) == root
    assert nodes.root() == root
    # Exactly the complete subtrees of `size` leaves are stored, each with its right hash.
    stored_nodes = list(store.items("merkle"))
    assert len(stored_nodes) == sum(size >> lv for lv in range(size.bit_length()))
    for key, h in stored_nodes:
        assert h == nodes.get_node(key[0], read_u64(key[1:])), f"Merkle node {key.hex()} wrong"

    # Proofs from the reopened store lead to the acknowledged roots.
    for n, r in rng.sample(acked, min(4, len(acked))):
        for i in {0, n - 1, rng.randrange(n)}:
            proof = led.inclusion_proof(i, n)
            merkle.verify_inclusion(leaf_hashes[i], i, n, proof, r)
        merkle.verify_consistency(n, size, r, root, led.consistency_proof(n, size))
    checked.size, checked.root, checked.heads = size, root, heads
    return size


def test_sigkill_never_loses_acknowledged_or_leaves_half_a_batch(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", str(random.randrange(1 << 32))))
    rng = random.Random(seed)
    data_dir = tmp_path / "node"
    acked: list[tuple[int, bytes]] = []
    checked = Checked()
    size = 0
    beyond_ack = 0  # rounds whose kill came after a synced write but before its ACK line
    started = time.monotonic()
    # Each round's writer starts its interpreter while the store of the round
    # before is checked, and opens the store only at go(): the kill windows
    # below count from the store's opening, never from the imports.
    upcoming: Writer | None = Writer.start(data_dir, rng.randrange(1 << 32))
    try:
        for rnd in range(ROUNDS):
            where = f"round {rnd} (CRASH_SEED={seed})"
            assert upcoming is not None
            w, upcoming = upcoming, None
            w.go()
            try:
                if rng.random() < 0.15:
                    # Anywhere from the store's opening to the first batches, recovery included.
                    time.sleep(rng.uniform(0.0, 0.5))
                else:
                    if not w.ready.wait(READY_TIMEOUT_S):
                        raise AssertionError(f"{where}: the writer never opened the store")
                    time.sleep(rng.uniform(0.0, 0.25))
            finally:
                err = w.kill()
            assert w.proc.returncode == -signal.SIGKILL, (
                f"{where}: the writer exited by itself ({w.proc.returncode}): {err}"
            )
            if rnd + 1 < ROUNDS:
                upcoming = Writer.start(data_dir, rng.randrange(1 << 32))
            ready = [line for line in w.lines if line.startswith("READY")]
            if ready:
                # The writer opened the store where the last check left it.
                assert int(ready[0].split()[1]) == size, f"{where}: reopened at another size"
            round_acks = w.acks()
            assert [n for n, _ in round_acks] == sorted({n for n, _ in round_acks})
            acked.extend(round_acks)
            new_size = check_store(data_dir, acked, checked, rng)
            if round_acks and new_size > round_acks[-1][0]:
                beyond_ack += 1
            size = new_size
    finally:
        if upcoming is not None:
            upcoming.kill()
    elapsed = time.monotonic() - started
    assert acked, f"no batch was ever acknowledged (CRASH_SEED={seed})"
    print(
        f"\ncrash test: {ROUNDS} rounds, {len(acked)} acknowledged batches, {size} records, "
        f"{beyond_ack} kills between a synced write and its ACK, {elapsed:.1f}s, "
        f"CRASH_SEED={seed}"
    )
