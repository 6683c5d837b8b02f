"""The offline audit's pass over a stopped node's leaves (`LeafPass`), and
the store's indexes against them: each stored Merkle node, feedseq entry and
record against what the envelopes give.

The pass is built for the usual case, an honest store, and loses no
precision on the other: a chunk of leaves is read with one scan and one
multi-get, and a chunk that is whole (consecutive 8-byte leaf keys, every
record there naming its leaf) is checked with list operations; its Merkle
nodes and each ordered feed's feedseq entries are compared with one scan per
run of adjacent keys; a clean chunk whose feeds continue in order joins the
chains in one go. Wherever a chunk is not like that, the pass goes key by
key and record by record, and the findings are those of that slower path.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from functools import partial

from keys.consortium import Consortium
from ledger import merkle
from ledger.audit.chain import LogChecker
from ledger.audit.envelopes import Checked, Checker
from ledger.audit.report import AuditReport, Progress
from ledger.store import Store, feedseq_key, merkle_key, read_u64, u64

CHUNK = 1000  # leaves read, and envelopes checked, per task


class LeafPass:
    """Reads the leaves of `store` and checks its indexes, its findings going
    to `report`. `keep`: hand the parsed records on to the checker's views."""

    def __init__(
        self,
        store: Store,
        cons: Consortium,
        report: AuditReport,
        *,
        workers: int | None,
        progress: Progress | None,
        keep: bool,
    ) -> None:
        self.store = store
        self.cons = cons
        self.report = report
        self.workers = workers
        self.progress = progress
        self.keep = keep

    def _read(
        self, size: int
    ) -> Iterator[tuple[list[tuple[int, bytes, bytes | None]], list[bytes]]]:
        """Chunks of (leaf index, record id or b"", envelope or None) in order,
        with the envelopes to check. Missing leaves and records are findings.

        One key-ordered scan of `leaves` and a multi-get of their records per
        chunk. While the chunk is whole (its n keys are the 8-byte indexes
        first..first+n-1: n keys of 8 bytes from the first to the last, so
        none between is missing or malformed; every value an id; every
        record there, naming its leaf) it is checked in bulk; from the first
        chunk that is not, `_read_each` reads on leaf by leaf."""
        leaves = self.store.scan_iter("leaves", b"")
        first = 0
        after = b""  # the smallest key not yet read
        while first < size:
            n = min(CHUNK, size - first)
            got = list(itertools.islice(leaves, n))
            if (
                len(got) == n
                and got[0][0] == u64(first)
                and got[-1][0] == u64(first + n - 1)
                and all(len(k) == 8 and len(r) == 32 for k, r in got)
            ):
                ids = [r for _, r in got]
                vals = self.store.get_many("records", ids)
                if None not in vals and [v[:8] for v in vals] == [k for k, _ in got]:
                    envs = [v[8:] for v in vals]
                    yield list(zip(range(first, first + n), ids, envs, strict=True)), envs
                    first += n
                    after = u64(first - 1) + b"\0"
                    continue
            yield from self._read_each(size, first, after)
            return

    def _read_each(
        self, size: int, expect: int, start: bytes
    ) -> Iterator[tuple[list[tuple[int, bytes, bytes | None]], list[bytes]]]:
        """`_read` leaf by leaf from leaf `expect` on, `start` being the
        first key not yet read: each missing leaf or record, each malformed
        key or value is a finding."""
        rep = self.report
        slots: list[tuple[int, bytes, bytes | None]] = []

        def flush() -> Iterator[tuple[list[tuple[int, bytes, bytes | None]], list[bytes]]]:
            nonlocal slots
            if not slots:
                return
            ids = [rid for _, rid, _ in slots if rid]
            vals = iter(self.store.get_many("records", ids)) if ids else iter(())
            out: list[tuple[int, bytes, bytes | None]] = []
            envs: list[bytes] = []
            for i, rid, _ in slots:
                if not rid:
                    out.append((i, b"", None))
                    continue
                v = next(vals)
                if v is None:
                    rep.error(
                        "record",
                        f"leaves[{i}] names record {rid.hex()[:16]}…, which is not in the store",
                        index=i,
                        record_id=rid.hex(),
                    )
                    out.append((i, rid, None))
                    continue
                if len(v) < 8 or read_u64(v[:8]) != i:
                    at = read_u64(v[:8]) if len(v) >= 8 else None
                    rep.error(
                        "record",
                        f"records[id] says it is leaf {at}, but leaves[{i}] names it",
                        index=i,
                        record_id=rid.hex(),
                    )
                env = v[8:]
                out.append((i, rid, env))
                envs.append(env)
            slots = []
            yield out, envs

        for key, rid in self.store.items("leaves", start, u64(size)):
            if len(key) != 8:
                rep.error("leaf", "malformed key in leaves", where=repr(key))
                continue
            i = read_u64(key)
            while expect < i:
                rep.error("leaf", f"leaves has no entry {expect}", index=expect)
                slots.append((expect, b"", None))
                expect += 1
            if len(rid) != 32:
                rep.error("leaf", f"leaves[{i}] is {len(rid)} bytes, not a record id", index=i)
                rid = b""
            slots.append((i, rid, None))
            expect = i + 1
            if len(slots) >= CHUNK:
                yield from flush()
        while expect < size:
            rep.error("leaf", f"leaves has no entry {expect}", index=expect)
            slots.append((expect, b"", None))
            expect += 1
            if len(slots) >= CHUNK:
                yield from flush()
        yield from flush()

    def run(self, size: int, checker: LogChecker) -> None:
        """Every leaf 0..size-1, in order, into `checker`; each chunk's Merkle
        nodes and feedseq entries against what its leaves give."""
        rep = self.report
        pool = Checker(self.cons, size, self.workers)
        rep.counts["workers"] = pool.workers
        done = 0
        try:
            results = pool.run(
                self._read(size), verify=True, keep=self.keep, count=-(-size // CHUNK)
            )
            for slots, checked in results:
                if len(checked) == len(slots) and [c[1] for c in checked] == [
                    rid for _, rid, _ in slots
                ]:  # every leaf's envelope is there and has the id its leaf names
                    runs, placed = checker.add([(c[0], c) for c in checked])
                    self._merkle(runs)
                    self._feedseq(placed)
                    done += len(slots)
                    if self.progress is not None:
                        self.progress(done, size)
                    continue
                it = iter(checked)
                items: list[tuple[bytes, Checked | None]] = []
                for i, rid, env in slots:
                    if env is None:
                        stored = self.store.get("merkle", merkle_key(0, i))
                        if stored is None or len(stored) != 32:
                            rep.error(
                                "merkle-node",
                                "no stored leaf hash either; the root cannot be recomputed",
                                index=i,
                                where=f"merkle 0/{i}",
                            )
                            stored = bytes(32)
                        items.append((stored, None))
                        continue
                    c = next(it)
                    if c[1] != rid:
                        rep.error(
                            "record",
                            f"records[{rid.hex()[:16]}…] holds an envelope whose "
                            f"id is {c[1].hex()[:16]}…",
                            index=i,
                            record_id=rid.hex(),
                        )
                    items.append((c[0], c))
                runs, placed = checker.add(items)
                self._merkle(runs)
                self._feedseq(placed)
                done += len(slots)
                if self.progress is not None:
                    self.progress(done, size)
        except BaseException:
            pool.close(abort=True)
            raise
        pool.close()
        rep.counts["chunks_checked_here"] = pool.local

    def _adjacent(
        self, cf: str, keys: Callable[[int], bytes], first: int, values: list[bytes]
    ) -> bool:
        """True when the family holds exactly `values` under keys(first),
        keys(first + 1), ... (keys of one length, big-endian counters last):
        one scan of len(values) items. Those are n distinct keys of the
        right length in key order, the first and the last where they belong,
        so they are the n keys between."""
        n = len(values)
        if n == 0:
            return True
        got = self.store.scan(cf, keys(first), n)
        if len(got) != n or got[0][0] != keys(first) or got[-1][0] != keys(first + n - 1):
            return False
        width = len(got[0][0])
        return all(len(k) == width for k, _ in got) and [v for _, v in got] == values

    def _merkle(self, runs: list[tuple[int, int, list[bytes]]]) -> None:
        """The stored nodes against those the leaves give: a scan per run,
        and node by node only where a run differs."""
        for level, first, hashes in runs:
            if not self._adjacent("merkle", partial(merkle_key, level), first, hashes):
                self._merkle_nodes(level, first, hashes)

    def _merkle_nodes(self, level: int, first: int, hashes: list[bytes]) -> None:
        keys = [merkle_key(level, i) for i in range(first, first + len(hashes))]
        got = self.store.get_many("merkle", keys)
        for index, h, stored in zip(range(first, first + len(hashes)), hashes, got, strict=True):
            if stored == h:
                continue
            where = f"merkle {level}/{index}"
            span = f"leaves {index << level}..{((index + 1) << level) - 1}"
            if stored is None:
                self.report.error(
                    "merkle-node",
                    f"stored node over {span} is missing",
                    where=where,
                    index=index if level == 0 else None,
                )
                continue
            if level == 0:
                self.report.error(
                    "merkle-node",
                    "the stored leaf hash is not the hash of the stored envelope",
                    index=index,
                    where=where,
                )
                continue
            kids = self.store.get_many(
                "merkle", [merkle_key(level - 1, 2 * index), merkle_key(level - 1, 2 * index + 1)]
            )
            if None not in kids and stored == merkle.node_hash(kids[0], kids[1]):  # type: ignore[arg-type]
                continue  # follows from a changed node below, already reported there
            self.report.error(
                "merkle-node",
                f"stored hash over {span} is {stored.hex()[:16]}…, the leaves give "
                f"{h.hex()[:16]}… (and it is not the hash of its stored children)",
                where=where,
            )

    def _feedseq(self, placed: list[tuple[str, int, bytes, int]]) -> None:
        """feedseq against the records placed: per issuer one scan when its
        records in the chunk are consecutive (an ordered feed), else point
        reads; entry by entry only where they differ."""
        feeds: dict[str, list[tuple[str, int, bytes, int]]] = {}
        for p in placed:
            feeds.setdefault(p[0], []).append(p)
        for issuer, mine in feeds.items():
            first = mine[0][1]
            seqs = [seq for _, seq, _, _ in mine]
            if seqs == list(range(first, first + len(mine))) and self._adjacent(
                "feedseq", partial(feedseq_key, issuer), first, [rid for _, _, rid, _ in mine]
            ):
                continue
            got = self.store.get_many("feedseq", [feedseq_key(issuer, s) for s in seqs])
            for (_, seq, rid, index), stored in zip(mine, got, strict=True):
                if stored != rid:
                    what = "has no entry" if stored is None else f"names {stored.hex()[:16]}…"
                    self.report.error(
                        "feedseq",
                        f"feedseq[{issuer}#{seq}] {what}, not the record at leaf {index}",
                        index=index,
                        record_id=rid.hex(),
                        issuer=issuer,
                        seq=seq,
                    )

    # ------------------------------------------------------------ after the pass
    def tails(self, size: int) -> None:
        """Nothing stored past the log's size."""
        rep = self.report
        for key, _ in self.store.items("leaves", u64(size)):
            rep.error(
                "leaf",
                "leaves holds an entry past the log size",
                index=read_u64(key) if len(key) == 8 else None,
            )
        for level in range(64):
            start = size >> level
            for key, _ in self.store.items(
                "merkle", merkle_key(level, start), merkle_key(level + 1, 0)
            ):
                rep.error(
                    "merkle-node",
                    f"stored node past the log size {size}",
                    where=f"merkle {key[0]}/{read_u64(key[1:])}",
                )
                break

    def feedseq_extras(self, checker: LogChecker) -> None:
        """feedseq entries that name no record of the log where they say."""
        placed = sum(f.placed() for f in checker.feeds.values())
        stored = self.store.count("feedseq")
        if stored == placed:
            return
        for key, rid in self.store.items("feedseq"):
            issuer, seq = key[:-9].decode("utf-8", "replace"), read_u64(key[-8:])
            f = checker.feeds.get(issuer)
            seen = f.at(seq) if f is not None else None
            if seen is None or seen[1] != rid[:8]:
                self.report.error(
                    "feedseq",
                    "entry names no record of the log at that position",
                    issuer=issuer,
                    seq=seq,
                    record_id=rid.hex(),
                )

    def record_extras(self, size: int) -> None:
        """Stored records that no leaf of the log names."""
        n = self.store.count("records")
        self.report.counts["stored_records"] = n
        if n <= size:
            return
        for rid, v in self.store.items("records"):
            at = read_u64(v[:8]) if len(v) >= 8 else None
            if at is None or at >= size or self.store.get("leaves", u64(at)) != rid:
                self.report.error(
                    "record", "stored record is not in the log", record_id=rid.hex(), index=at
                )
