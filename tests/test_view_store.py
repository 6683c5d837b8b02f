"""The store-backed national view (ledger/view/ with a Store): the same
entries, bytes, proofs and root as the in-memory view for the same records;
its state survives a reopen; catch_up heals a view that a crash left behind
the ledger; memory stays flat as the view grows."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import ProofMismatch, StorageFailure
from ledger.log import NodeLedger
from ledger.record import Mark, Record
from ledger.store import COLUMN_FAMILIES, VIEW_FAMILIES, Store
from ledger.view import (
    NationalView,
    bucket_of,
    catch_up,
    rebuild_from_ledger,
    resolve,
    verify_lookup,
    view_key,
)
from tests.test_view import (
    CAPPED,
    CONS,
    KEYS,
    N1,
    N2,
    N3,
    N4,
    NUMBERS,
    RICH,
    RICH_VIEW,
    SCENARIOS,
    Book,
    consortium,
    crowded_books,
    expect,
    generated_books,
    snapshot,
)

REPO = Path(__file__).resolve().parent.parent
ABSENT = ("+8613812349999", "+8613912349998")


def _example_dir() -> str | None:
    """Where the property tests open their stores, one new store per example:
    a RAM-backed /dev/shm with room to spare, else the default temp folder.
    RocksDB's semantics are the same on either; what the disk adds is the
    fsyncs of creating and reopening a store (on the shared disk here ~0.1 s
    of wall time an open against ~15 ms of CPU), which these tests do not check."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= 1 << 30:
            return str(shm)
    except OSError:
        pass
    return None


EXAMPLE_DIR = _example_dir()


def state(view: NationalView) -> dict[str, Any]:
    """Everything a caller can observe of a view."""
    numbers = sorted({*view.entries, *NUMBERS, N4, *ABSENT})
    return {
        "root": view.root(),
        "count": view.count,
        "entries": {n: e.encode() for n, e in view.entries.items()},
        "numbers": list(view.numbers()),
        "vector": view.vector,
        "ignored": view.ignored,
        "waiting": view.waiting,
        "proofs": {n: view.proof(n).encode() for n in numbers},
        "bytes": {n: view.entry_bytes(n) for n in numbers},
    }


def stored_view(path: Path, cons: Any = CONS) -> tuple[Store, NationalView]:
    store = Store(path)
    return store, NationalView.open(store, cons)


def apply_in_batches(view: NationalView, records: list[Record], cuts: list[int]) -> set[str]:
    bounds = sorted({0, len(records), *(c for c in cuts if c <= len(records))})
    changed: set[str] = set()
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        changed |= view.apply(records[lo:hi])
    return changed


# ====================================================================== same view as in memory


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(book=generated_books(), data=st.data())
def test_stored_view_equals_the_memory_view(book: Book, data: st.DataObject) -> None:
    n = len(book.records)
    order = data.draw(st.permutations(range(n)))
    repeat = data.draw(st.lists(st.integers(0, n - 1), max_size=3))
    cuts = data.draw(st.lists(st.integers(0, n + len(repeat)), max_size=5))
    recs = [book.records[i] for i in order] + [book.records[i] for i in repeat]
    memory = NationalView(CONS)
    want_changed = apply_in_batches(memory, recs, cuts)
    with tempfile.TemporaryDirectory(dir=EXAMPLE_DIR) as d:
        store, view = stored_view(Path(d) / "db")
        try:
            assert apply_in_batches(view, recs, cuts) == want_changed
            assert state(view) == state(memory) == state(resolve(book.records, CONS))
        finally:
            store.close()
        store, reopened = stored_view(Path(d) / "db")
        try:
            assert state(reopened) == state(memory)
        finally:
            store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(range(len(RICH.records))),
    cuts=st.lists(st.integers(0, len(RICH.records)), max_size=6),
    reopen_at=st.integers(0, len(RICH.records)),
)
def test_shuffled_batches_and_a_reopen_give_the_rich_view(
    order: list[int], cuts: list[int], reopen_at: int
) -> None:
    """Delivery order, batching and a restart in the middle change nothing."""
    recs = [RICH.records[i] for i in order]
    with tempfile.TemporaryDirectory(dir=EXAMPLE_DIR) as d:
        store, view = stored_view(Path(d) / "db")
        apply_in_batches(view, recs[:reopen_at], cuts)
        store.close()
        store, view = stored_view(Path(d) / "db")
        try:
            apply_in_batches(view, recs[reopen_at:], [c - reopen_at for c in cuts])
            assert snapshot(view) == snapshot(RICH_VIEW)
            assert state(view) == state(RICH_VIEW)
        finally:
            store.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(book=crowded_books(), data=st.data())
def test_capped_stored_view_equals_the_memory_view(book: Book, data: st.DataObject) -> None:
    """Under a cap of one mark per participant, with referrers forgotten in viewref,
    the store-backed view still equals the in-memory one, across a reopen."""
    n = len(book.records)
    order = data.draw(st.permutations(range(n)))
    cuts = data.draw(st.lists(st.integers(0, n), max_size=5))
    recs = [book.records[i] for i in order]
    memory = NationalView(CAPPED)
    want_changed = apply_in_batches(memory, recs, cuts)
    with tempfile.TemporaryDirectory(dir=EXAMPLE_DIR) as d:
        store, view = stored_view(Path(d) / "db", CAPPED)
        try:
            half = len(recs) // 2
            changed = apply_in_batches(view, recs[:half], cuts)
        finally:
            store.close()
        store, view = stored_view(Path(d) / "db", CAPPED)
        try:
            changed |= apply_in_batches(view, recs[half:], [c - half for c in cuts])
            assert changed == want_changed
            assert state(view) == state(memory) == state(resolve(book.records, CAPPED))
        finally:
            store.close()


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_backwards_one_record_at_a_time(name: str, tmp_path: Path) -> None:
    book, checks = SCENARIOS[name]()
    store, view = stored_view(tmp_path / "db")
    try:
        for rec in reversed(book.records):
            view.apply([rec])
        assert state(view) == state(resolve(book.records, CONS))
        for number, at, want in checks:
            expect(view, book, number, at, want)
    finally:
        store.close()


def test_waiting_corrections_survive_a_restart(tmp_path: Path) -> None:
    b = Book()
    b.mark("i1", "internet-1", N1, "fraud", 1_700_000_000_000)
    b.appeal("a", "carrier-1", ["i1"], 1_700_086_400_000)
    b.decide("d", "a", "uphold", 1_700_172_800_000)
    b.mark("c1", "carrier-1", N3, "harassment", 1_700_000_000_000)
    b.recat("r", "carrier-1", ["c1"], "marketing", 1_700_086_400_000)
    store, view = stored_view(tmp_path / "db")
    assert view.apply([b.by_label["d"], b.by_label["r"]]) == set()
    assert set(view.waiting) == {b.id("a"), b.id("c1")}
    store.close()
    store, view = stored_view(tmp_path / "db")
    try:
        assert set(view.waiting) == {b.id("a"), b.id("c1")}
        assert view.apply([b.by_label["a"]]) == set()
        assert view.apply([b.by_label["c1"], b.by_label["i1"]]) == {N1, N3}
        assert view.waiting == {}
        assert state(view) == state(resolve(b.records, CONS))
        assert view.apply(b.records) == set()
    finally:
        store.close()


@pytest.mark.parametrize("bits", [0, 1, 3, 16])
def test_stored_proofs_verify(bits: int, tmp_path: Path) -> None:
    cons = consortium(view_bucket_bits=bits)
    b = Book()
    present = [f"+86138{i:08d}" for i in range(1, 40, 2)]
    for i, n in enumerate(present):
        b.mark(f"m{i}", "carrier-1", n, "fraud", 1_700_000_000_000 + i)
    store, view = stored_view(tmp_path / "db", cons)
    try:
        view.apply(b.records)
        root = view.root()
        assert root == resolve(b.records, cons).root()
        for n in present:
            raw = view.entry_bytes(n)
            assert raw is not None
            assert verify_lookup(n, raw, view.proof(n).encode(), root) == view.entry(n)
            with pytest.raises(ProofMismatch):
                verify_lookup(n, None, view.proof(n), root)
        for n in ABSENT:
            assert verify_lookup(n, None, view.proof(n).encode(), root) is None
    finally:
        store.close()


POOL = [f"+86138{i:08d}" for i in range(0, 400, 7)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chosen=st.lists(st.sampled_from(POOL), min_size=1, max_size=40, unique=True),
    again=st.lists(st.sampled_from(POOL), max_size=10),
    bits=st.sampled_from([0, 2, 8, 16]),
    data=st.data(),
)
def test_stored_tree_equals_the_memory_tree_for_any_order_and_top(
    chosen: list[str], again: list[str], bits: int, data: st.DataObject
) -> None:
    """Root and proof bytes are a function of the entries alone: a stored view
    with any top height, fed in any order and batching (entries that change
    move the stored chain caches), equals an in-memory view with another."""
    b = Book()
    for i, n in enumerate(chosen):
        b.mark(f"m{i}", "carrier-1", n, "fraud", 1_700_000_000_000 + i)
    for i, n in enumerate(again):                    # second marks change entries in place
        b.mark(f"a{i}", "internet-1", n, "harassment", 1_700_000_100_000 + i)
    recs = data.draw(st.permutations(b.records))
    cuts = data.draw(st.lists(st.integers(0, len(recs)), max_size=4))
    memory = resolve(b.records, CONS)
    cons = consortium(view_bucket_bits=bits)
    with tempfile.TemporaryDirectory(dir=EXAMPLE_DIR) as d:
        store, view = stored_view(Path(d) / "db", cons)
        try:
            apply_in_batches(view, recs, cuts)
            root = view.root()
            assert root == memory.root()
            for n in POOL:
                enc = view.proof(n).encode()
                assert enc == memory.proof(n).encode()
                assert verify_lookup(n, view.entry_bytes(n), enc, root) == memory.entry(n)
        finally:
            store.close()
        store, view = stored_view(Path(d) / "db", cons)
        try:
            assert view.root() == memory.root()
            assert view.proof(POOL[0]).encode() == memory.proof(POOL[0]).encode()
        finally:
            store.close()


def _v1_config_digest(view: NationalView) -> bytes:
    """viewmeta/config as proof version 1 (the bucket listings) wrote it."""
    import hashlib

    c, p = view.consortium, view.consortium.policy
    return hashlib.sha256(json.dumps({
        "v": 1, "bits": p.view_bucket_bits,
        "policy": [p.default_expiry_ms, p.protection_ms, p.high_risk_min_participants,
                   p.identity_min_participants, p.institute_mark_is_high_risk],
        "participants": sorted([x.id, x.role, x.weight] for x in c.participants),
        "taxonomy": sorted([x.id, x.rank, x.risk] for x in c.taxonomy),
        "ranges": sorted([k, sorted(v)] for k, v in c.number_ranges.items()),
    }, sort_keys=True, separators=(",", ":")).encode()).digest()


def test_a_view_of_the_bucket_layout_is_recomputed_on_open(tmp_path: Path) -> None:
    """A store holding a view under proof version 1 (bucket || number rows)
    opens empty, and catch_up-style replay gives the memory view."""
    store, view = stored_view(tmp_path / "db")
    view.apply(RICH.records)
    batch = store.batch()
    batch.put("viewmeta", b"config", _v1_config_digest(view))
    batch.put("viewbucket", bytes(4) + N1.encode(), bytes(32))        # a v1 row
    store.write(batch)
    store.close()
    store, view = stored_view(tmp_path / "db")
    try:
        assert (view.count, view.vector, list(view.numbers())) == (0, {}, [])
        assert list(store.items("viewbucket")) == []
        view.apply(RICH.records)
        assert state(view) == state(RICH_VIEW)
    finally:
        store.close()


def test_a_stored_leaf_cached_between_nodes_is_a_storage_failure(tmp_path: Path) -> None:
    """Proof version 3 caches a slot's chain only at node depths (0..24, then
    every fourth): a row cached at depth 26 (inside a sixteen-way node) is
    refused, never read as a subtree hash."""
    store, view = stored_view(tmp_path / "db")
    try:
        view.apply(RICH.records)
        key = view_key(N1)
        bucket = struct.pack(">I", bucket_of(N1, view.bucket_bits))
        value = store.get("viewbucket", bucket)
        assert value is not None and len(value) % 130 == 0
        at = next(i for i in range(0, len(value), 130) if value[i : i + 32] == key)
        row = value[at + 32 : at + 130]         # the row after its view key
        assert row[32] <= row[65] < 26
        assert view.proof(N1) is not None
        batch = store.batch()
        bent = row[:65] + bytes([26]) + row[66:]
        batch.put("viewbucket", bucket, value[: at + 32] + bent + value[at + 130 :])
        store.write(batch)
        with pytest.raises(StorageFailure):
            view.proof(N1)
    finally:
        store.close()


@pytest.mark.parametrize("bend", ["truncated", "unsorted", "elsewhere"])
def test_a_bent_bucket_value_is_a_storage_failure(tmp_path: Path, bend: str) -> None:
    """A viewbucket value that is not whole rows, whose rows are not strictly in
    key order, or that holds another bucket's leaves is refused when read,
    never taken as the bucket's subtree."""
    store, view = stored_view(tmp_path / "db")
    try:
        view.apply(RICH.records)
        bits = view.bucket_bits
        own = bucket_of(N1, bits)
        value = store.get("viewbucket", struct.pack(">I", own))
        assert value is not None and len(value) % 130 == 0
        number, at, bent = N1, own, value
        if bend == "truncated":
            bent = value[:-1]
        elif bend == "unsorted":
            bent = value + value[:130]
        else:       # N1's leaves stored under a number of another bucket
            number = next(n for n in view.numbers() if bucket_of(n, bits) != own)
            at = bucket_of(number, bits)
        assert view.proof(number) is not None
        batch = store.batch()
        batch.put("viewbucket", struct.pack(">I", at), bent)
        store.write(batch)
        with pytest.raises(StorageFailure):
            view.proof(number)
    finally:
        store.close()


def test_an_apply_reads_the_buckets_it_changes_with_one_multi_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The buckets an apply changes are read together: one multi-get of
    viewbucket, one key per changed bucket that is not empty, and no range
    scan of the family (a scan per changed bucket before); the view stays the
    memory view's."""
    t0 = 1_700_000_000_000
    b = Book()
    held = [f"+86138{i:08d}" for i in range(300)]
    for i, number in enumerate(held):
        b.mark(f"m{i}", "carrier-1", number, "fraud", t0 + i)
    # Half on numbers in the view (from another participant), half new.
    numbers = [held[(i * 7) % 300] if i % 2 else f"+86138{300 + i:08d}" for i in range(200)]
    for i, number in enumerate(numbers):
        b.mark(f"n{i}", "internet-1", number, "harassment", t0 + 1000 + i)
    store, view = stored_view(tmp_path / "db", consortium(view_bucket_bits=10))
    try:
        view.apply(b.records[:300])
        bits = view.bucket_bits
        changed = {bucket_of(n, bits) for n in numbers}
        occupied = changed & {bucket_of(n, bits) for n in held}
        assert 0 < len(occupied) < len(changed)
        multi_gets: list[list[bytes]] = []
        scans: list[str] = []
        get_many, items = store.get_many, store.items

        def counted_get_many(cf: str, keys: list[bytes]) -> list[bytes | None]:
            if cf == "viewbucket":
                multi_gets.append(keys)
            return get_many(cf, keys)

        def counted_items(cf: str, *a: Any) -> Any:
            scans.append(cf)
            return items(cf, *a)

        monkeypatch.setattr(store, "get_many", counted_get_many)
        monkeypatch.setattr(store, "items", counted_items)
        view.apply(b.records[300:])
        assert "viewbucket" not in scans
        assert len(multi_gets) == 1
        assert sorted(multi_gets[0]) == sorted(struct.pack(">I", c) for c in occupied)
        assert state(view) == state(resolve(b.records, CONS))
    finally:
        store.close()


class Reads:
    """Counts what a store hands out: keys (one per get, per multi-get key, per
    scanned row) and value bytes."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys = self.bytes = 0
        get, get_many, items = store.get, store.get_many, store.items

        def count(v: bytes | None) -> None:
            self.keys += 1
            self.bytes += len(v or b"")

        def counted_get(cf: str, key: bytes) -> bytes | None:
            v = get(cf, key)
            count(v)
            return v

        def counted_get_many(cf: str, keys: list[bytes]) -> list[bytes | None]:
            vs = get_many(cf, keys)
            for v in vs:
                count(v)
            return vs

        def counted_items(*a: Any, **k: Any) -> Any:
            for kv in items(*a, **k):
                count(kv[1])
                yield kv

        monkeypatch.setattr(store, "get", counted_get)
        monkeypatch.setattr(store, "get_many", counted_get_many)
        monkeypatch.setattr(store, "items", counted_items)

    def of(self, view: NationalView, records: list[Record]) -> tuple[int, int]:
        """(keys, bytes) read while `view` applies `records`."""
        k, b = self.keys, self.bytes
        view.apply(records)
        return self.keys - k, self.bytes - b


def test_a_flood_of_marks_keeps_the_entry_and_its_update_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 marks by one participant on one number: the entry keeps its latest
    max_marks_per_participant, its bytes stop growing, and one more mark, one
    more correction, read as much at 10,000 marks as at 20 (main kept every mark
    in the entry, so each update read and rewrote all of them)."""
    cap = CONS.policy.max_marks_per_participant
    t0 = 1_700_000_000_000
    b = Book()
    b.mark("other", "internet-1", N1, "fraud", t0)
    for i in range(10_000):
        b.mark(f"m{i}", "carrier-1", N1, ("fraud", "harassment")[i % 2], t0 + 1000 + i)
    b.mark("late-a", "carrier-1", N1, "fraud", t0 + 20_000)
    b.mark("late-b", "carrier-1", N1, "fraud", t0 + 20_001)
    store, view = stored_view(tmp_path / "db")
    memory = NationalView(CONS)
    try:
        reads = Reads(store, monkeypatch)
        early, rest = b.records[:21], b.records[21:-2]
        view.apply(early)
        memory.apply(early)
        small = view.entry_bytes(N1)
        assert small is not None
        mark_cost = reads.of(view, [b.by_label["m20"]])
        w = b.withdraw("w", "carrier-1", ["m20"], t0 + 30_000)    # the view takes any order
        withdraw_cost = reads.of(view, [w])
        for lo in range(0, len(rest), 1000):
            view.apply(rest[lo:lo + 1000])
            memory.apply(rest[lo:lo + 1000])
        # the same keys; the bytes differ only by longer seqs in the entry read back
        (keys, size), (keys0, size0) = reads.of(view, [b.by_label["late-a"]]), mark_cost
        assert keys == keys0 and size <= size0 + 100
        w2 = b.withdraw("w2", "carrier-1", ["late-a"], t0 + 30_001)
        (keys, size), (keys0, size0) = reads.of(view, [w2]), withdraw_cost
        assert keys == keys0 and size <= size0 + 100
        view.apply([b.by_label["late-b"]])
        memory.apply([b.by_label["late-b"], b.by_label["late-a"], w, w2])
        big = view.entry_bytes(N1)
        assert big is not None and big == memory.entry_bytes(N1)
        entry = view.entry(N1)
        assert entry is not None
        assert [m.id for m in entry.marks if m.participant == "carrier-1"] == [
            b.id(x) for x in [f"m{i}" for i in range(10_000 - cap + 2, 10_000)] + ["late-a",
                                                                                 "late-b"]
        ]
        assert len(entry.marks) == cap + 1
        assert len(big) <= len(small) + 500      # 10,000 kept marks would be ~3 MB
        # the withdrawal of a kept mark counts; the first marks never come back
        res = entry.evaluate(t0 + 40_000)
        assert {m.record_id for m in res.markers} == {b.id("other"), b.id("late-b")}
        assert b.id("m0") not in {s.record_id for s in res.set_aside}
    finally:
        store.close()


def test_a_flood_of_appeals_keeps_the_entry_and_its_update_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,000 appeals by one appellant on one mark (and 2,000 recategorizations by
    its marker): the entry keeps the latest max_marks_per_participant of each
    (with a decided appeal, and the first recategorization to each category),
    and one more appeal reads as much at the end as near the start (main kept
    and read every one)."""
    cap = CONS.policy.max_marks_per_participant
    t0 = 1_700_000_000_000
    b = Book()
    b.mark("m", "internet-1", N1, "fraud", t0)
    b.appeal("first", "carrier-1", ["m"], t0 + 1)
    b.decide("d", "first", "reject", t0 + 2)
    for i in range(2_000):
        b.appeal(f"a{i}", "carrier-1", ["m"], t0 + 10 + i)
        b.recat(f"r{i}", "internet-1", ["m"], ("harassment", "marketing")[i % 2], t0 + 10 + i)
    b.appeal("late", "carrier-1", ["m"], t0 + 5_000)
    store, view = stored_view(tmp_path / "db")
    memory = NationalView(CONS)
    try:
        reads = Reads(store, monkeypatch)
        early = b.records[:3 + 2 * 20]
        view.apply(early)
        (keys0, size0) = reads.of(view, [b.by_label["a20"]])
        for lo in range(0, len(b.records) - 1, 500):
            part = b.records[lo:min(lo + 500, len(b.records) - 1)]
            view.apply(part)
            memory.apply(part)
        (keys, size) = reads.of(view, [b.by_label["late"]])
        memory.apply([b.by_label["late"]])
        assert keys == keys0 and size <= size0 + 200
        entry = view.entry(N1)
        assert entry is not None and view.entry_bytes(N1) == memory.entry_bytes(N1)
        assert [b.label(a.id) for a in entry.appeals] == (
            ["first"] + [f"a{i}" for i in range(2_000 - cap + 1, 2_000)] + ["late"]
        )
        (m,) = entry.marks
        assert [b.label(r.ref) for r in m.recategorized] == [   # first to each, K latest
            "r0", "r1", *(f"r{i}" for i in range(2_000 - cap, 2_000))
        ]
        referrers = sum(1 for _ in store.items("viewref"))
        assert referrers <= cap + 4                # the rest were forgotten
    finally:
        store.close()


# ====================================================================== persistence


def test_reopen_restores_root_count_and_vector(tmp_path: Path) -> None:
    store, view = stored_view(tmp_path / "db")
    view.apply(RICH.records)
    before = state(view)
    store.close()
    store, view = stored_view(tmp_path / "db")
    try:
        assert state(view) == before == state(RICH_VIEW)
        assert view.stored and view.count == 4
        meta = {k: v for k, v in store.items("viewmeta")}
        assert json.loads(meta[b"vector"]) == RICH_VIEW.vector
    finally:
        store.close()


def test_another_view_configuration_starts_empty(tmp_path: Path) -> None:
    store, view = stored_view(tmp_path / "db")
    view.apply(RICH.records)
    store.close()
    other = consortium(view_bucket_bits=5)
    store, view = stored_view(tmp_path / "db", other)
    try:
        assert (view.count, view.vector, list(view.numbers())) == (0, {}, [])
        assert not any(any(True for _ in store.items(cf)) for cf in VIEW_FAMILIES
                       if cf != "viewmeta")
        view.apply(RICH.records)
        assert state(view) == state(resolve(RICH.records, other))
    finally:
        store.close()


@pytest.mark.parametrize("policy", [
    {"max_marks_per_participant": 3},
    {"max_expiry_ms": 200 * 86_400_000},
    {"reassignment_window_ms": 86_400_000},
    {"clock_skew_ms": 1},
])
def test_another_time_bound_or_cap_recomputes_the_view(
    policy: dict[str, int], tmp_path: Path
) -> None:
    """The policy values resolution applies (the cap and ledger.rules' bounds) are
    in the view's configuration digest (main left them out and kept the view)."""
    store, view = stored_view(tmp_path / "db")
    view.apply(RICH.records)
    store.close()
    other = consortium(**policy)
    store, view = stored_view(tmp_path / "db", other)
    try:
        assert (view.count, view.vector, list(view.numbers())) == (0, {}, [])
        view.apply(RICH.records)
        assert state(view) == state(resolve(RICH.records, other))
    finally:
        store.close()


def test_a_failed_write_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, view = stored_view(tmp_path / "db")
    try:
        half = len(RICH.records) // 2
        view.apply(RICH.records[:half])
        before = state(view)

        def fail(batch: Any, *, sync: bool = True) -> None:
            raise StorageFailure("disk full")

        monkeypatch.setattr(store, "write", fail)
        with pytest.raises(StorageFailure):
            view.apply(RICH.records[half:])
        assert state(view) == before
        monkeypatch.undo()
        view.apply(RICH.records[half:])
        assert state(view) == state(RICH_VIEW)
    finally:
        store.close()


def test_read_only_store_of_an_older_version(tmp_path: Path) -> None:
    """A store written before the view families existed opens read-only; they read empty."""
    from rocksdict import Options, Rdict

    old = [cf for cf in COLUMN_FAMILIES if not cf.startswith("view") or cf == "view"]
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    db = Rdict(str(tmp_path / "db"), opts,
               column_families={cf: Options(raw_mode=True) for cf in old})
    db.get_column_family("meta")[b"size"] = bytes(8)
    db.close()
    store = Store(tmp_path / "db", read_only=True)
    try:
        assert store.get("meta", b"size") == bytes(8)
        assert store.get("viewix", bytes(32)) is None
        assert store.get_many("viewbucket", [b"a", b"b"]) == [None, None]
        assert list(store.items("viewmeta")) == []
    finally:
        store.close()


# ====================================================================== catch_up


def ledger_with(tmp_path: Path, records: list[Record]) -> NodeLedger:
    ledger = NodeLedger.open(tmp_path / "db", CONS, "institute")
    now = max(r.issued_at_ms for r in records)
    for rec in records:
        out = ledger.submit([rec.envelope], now).outcomes[0]
        assert out.status in ("accepted", "equivocation"), out.error
    return ledger


def test_catch_up_after_a_crash_between_ledger_and_view(tmp_path: Path) -> None:
    """The ledger committed records the view never applied (a crash between
    the two writes): at the next start, catch_up applies exactly those."""
    half = len(RICH.records) // 2
    ledger = ledger_with(tmp_path, RICH.records[:half])
    view = NationalView.open(ledger.store, CONS)
    assert catch_up(view, ledger) == half
    now = max(r.issued_at_ms for r in RICH.records)
    for rec in RICH.records[half:]:                # committed; the view's write "crashed"
        assert ledger.submit([rec.envelope], now).outcomes[0].status == "accepted"
    ledger.close()

    ledger = NodeLedger.open(tmp_path / "db", CONS, "institute")
    try:
        view = NationalView.open(ledger.store, CONS)
        assert view.vector != RICH_VIEW.vector
        assert catch_up(view, ledger, batch_size=2) == len(RICH.records) - half
        assert catch_up(view, ledger) == 0
        full = rebuild_from_ledger(ledger)
        assert state(view) == state(full) == state(RICH_VIEW)
        stored = {k.decode(): v for k, v in ledger.store.items("view")}
        assert stored == {n: e.encode() for n, e in RICH_VIEW.entries.items()}
    finally:
        ledger.close()


def test_catch_up_rebuilds_a_view_ahead_of_a_frozen_feed(tmp_path: Path) -> None:
    b = Book()
    b.mark("m1", "carrier-1", N1, "fraud", 1_700_000_000_000)
    b.mark("m2", "carrier-1", N2, "fraud", 1_700_000_000_001)
    b.mark("m3", "carrier-1", N3, "fraud", 1_700_000_000_002)
    b.mark("x", "internet-1", N4, "marketing", 1_700_000_000_000)
    fork = Record.issue(KEYS["carrier-1"], "carrier-1", 2, b.id("m1"), 1_700_000_000_001,
                        Mark(N4, "fraud", 60, 0, 1_700_000_000_001), consortium=CONS.name)
    ledger = ledger_with(tmp_path, b.records)
    try:
        view = NationalView.open(ledger.store, CONS)
        catch_up(view, ledger)
        assert view.vector == {"carrier-1": 3, "internet-1": 1}
        outs = ledger.submit([fork.envelope], 1_700_000_000_010).outcomes
        assert outs[0].status == "equivocation"
        catch_up(view, ledger)                      # ahead of the freeze: rebuilt
        assert view.vector == {"carrier-1": 1, "internet-1": 1}
        assert set(view.entries) == {N1, N4}
        assert state(view) == state(rebuild_from_ledger(ledger))
        again = rebuild_from_ledger(ledger, view=view)
        assert again is view and state(view) == state(rebuild_from_ledger(ledger))
    finally:
        ledger.close()


# ====================================================================== memory


MEMORY_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, resource, sys
    from keys.consortium import Consortium, Participant, Policy
    from ledger.record import Mark, Record
    from ledger.store import Store
    from ledger.view import NationalView

    path, warm, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cons = Consortium(
        "markex-test",
        (Participant("carrier-1", "carrier", bytes(32), 2, "", ""),),
        {"carrier-1": ("+86138",)},
        policy=Policy(),
    )

    def marks(lo, hi):
        # The view never checks signatures (the ledger does): plain records will do.
        return [
            Record("carrier-1", i + 1, b"", 1_700_000_000_000 + i,
                   Mark(f"+86138{i:08d}", "fraud", 60, 1, 1_700_000_000_000 + i),
                   b"", b"", b"", hashlib.sha256(i.to_bytes(8, "big")).digest())
            for i in range(lo, hi)
        ]

    store = Store(path, cache_bytes=8 << 20)  # a cache that fills early, not during the run
    view = NationalView.open(store, cons)
    for lo in range(0, warm, 2000):
        view.apply(marks(lo, min(warm, lo + 2000)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for lo in range(warm, warm + n, 2000):
        view.apply(marks(lo, min(warm + n, lo + 2000)))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kb": before, "after_kb": after, "count": view.count}))
    store.close()
    """
)


@pytest.mark.timeout(600)
def test_memory_stays_flat_as_the_view_grows(tmp_path: Path) -> None:
    """200k marks on distinct numbers: peak RSS grows by a small, bounded
    amount (RocksDB memtables and block cache), not by ~2 KB per entry. The
    block cache is cut to 8 MiB so that it is full before the measured run
    and its fixed size does not count as growth."""
    warm, n = 20_000, 200_000
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "db"), str(warm), str(n)],
        cwd=REPO, capture_output=True, text=True, timeout=580, check=True,
    )
    got = json.loads(out.stdout)
    assert got["count"] == warm + n
    growth = (got["after_kb"] - got["before_kb"]) * 1024 / n
    assert growth < 300, f"peak RSS grew by {growth:.0f} bytes per entry"


def test_view_families_are_store_families() -> None:
    """The store creates the view's families on open (rocksdict creates missing ones)."""
    assert set(VIEW_FAMILIES) <= set(COLUMN_FAMILIES)


# ====================================================================== the node's keeper


def test_view_keeper_heals_gaps_and_freezes(tmp_path: Path) -> None:
    """node/viewkeeper.py: records handed over after a gap (an update that
    failed) or beyond a freeze are read from the ledger instead."""
    from node.viewkeeper import ViewKeeper

    b = Book()
    for i, n in enumerate((N1, N2, N3, N4)):
        b.mark(f"c{i}", "carrier-1", n, "fraud", 1_700_000_000_000 + i)
        b.mark(f"i{i}", "internet-1", n, "marketing", 1_700_000_000_000 + i)
    now = 1_700_000_000_100
    ledger = NodeLedger.open(tmp_path / "db", CONS, "institute", KEYS["institute"])
    try:
        first = ledger.submit([r.envelope for r in b.records[:2]], now).accepted
        keeper = ViewKeeper(ledger, lambda: now)
        keeper.start()                                   # catches up on what the ledger holds
        assert keeper.view is not None and keeper.view.vector == {"carrier-1": 1, "internet-1": 1}
        keeper.apply(first)                              # already applied: nothing changes
        lost = ledger.submit([r.envelope for r in b.records[2:5]], now).accepted
        assert len(lost) == 3                            # committed, never handed to the view
        rest = ledger.submit([r.envelope for r in b.records[5:]], now).accepted
        keeper.apply(rest)                               # a gap: caught up from the ledger
        assert state(keeper.view) == state(resolve(b.records, CONS))
        note_text = keeper.checkpoint_note()
        assert note_text is not None and f"\n{keeper.view.count}\n" in note_text

        fork = Record.issue(KEYS["carrier-1"], "carrier-1", 2, b.id("c0"), now,
                            Mark(N4, "harassment", 60, 0, now), consortium=CONS.name)
        out = ledger.submit([fork.envelope], now)
        assert out.outcomes[0].status == "equivocation"
        keeper.invalidate()
        keeper.tick()                                     # ahead of the freeze: rebuilt
        assert keeper.view.vector == {"carrier-1": 1, "internet-1": 4}
        assert state(keeper.view) == state(rebuild_from_ledger(ledger))

        resp = keeper.lookup("13812340001", True)
        got = verify_lookup(resp.number, resp.entry or None, resp.proof, keeper.view.root())
        assert got is not None and got.number == N1
    finally:
        ledger.close()


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=6), n=st.integers(min_value=0, max_value=2**70))
def test_mark_index_body_is_the_compact_json_list(text: str, n: int) -> None:
    """The viewix body of a mark is written directly (for speed): it must stay the
    number, a newline and the compact JSON list the index always held."""
    from ledger.view import _mark_body, _MarkFact

    f = _MarkFact(b"\x01" * 32, text, n, n + 1, "+86" + text, text, n, n, n, n)
    fact = [text, n, n + 1, text, n, n, n, n]
    want = ("+86" + text).encode("utf-8") + b"\n" + json.dumps(fact, separators=(",", ":")).encode()
    assert _mark_body(f) == want


@pytest.mark.parametrize(
    "bend", ["truncated", "trailing", "not ascii", "not an object", "a bent mark"]
)
def test_a_bent_stored_entry_is_a_storage_failure_that_changes_nothing(
    tmp_path: Path, bend: str
) -> None:
    """An apply reads a changed number's stored entry back (its kept facts): bytes
    that are not one whole JSON entry are refused with StorageFailure, and the
    view (root, count, vector, the stored bytes) stays as it was."""
    last = max(
        (i for i, r in enumerate(RICH.records)
         if isinstance(r.payload, Mark) and r.payload.number == N1),
    )
    store, view = stored_view(tmp_path / "db")
    try:
        view.apply(RICH.records[:last] + RICH.records[last + 1 :])
        raw = view.entry_bytes(N1)
        assert raw is not None
        bent = {
            "truncated": raw[:-1],
            "trailing": raw + b"{}",
            "not ascii": raw.replace(b'"marks":[', '"marks":["\u00e9",'.encode()),
            "not an object": b"[" + raw + b"]",
            "a bent mark": raw.replace(b'"seq":', b'"sequence":', 1),
        }[bend]
        batch = store.batch()
        batch.put("view", N1.encode(), bent)
        store.write(batch)
        before = (view.root(), view.count, view.vector)
        with pytest.raises(StorageFailure, match="does not parse"):
            view.apply([RICH.records[last]])
        assert (view.root(), view.count, view.vector) == before
        assert view.entry_bytes(N1) == bent
    finally:
        store.close()
