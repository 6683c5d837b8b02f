"""The order-dependent checks over a log's leaves, fed in log order (`LogChecker`):

    feeds: each record names the id of its feed's previous record (previous)
        and is issued no earlier than it (feed-time);
        one record twice (duplicate), two at one seq (equivocation);
        order is judged per feed once all leaves are in (sequence): the fewest
        records whose removal leaves the feed in order are out of order, and
        seqs below the head that the log never holds are missing
    Merkle root over every leaf, at each size a checkpoint names
    the views being recomputed (`ViewTarget`), compared with a signed one
        by `compare_view`

A record that does not verify is still placed on its feed, but its id
proves nothing, so the next record's link to it is not judged: one tampered
record makes one finding, not a cascade.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keys.consortium import Consortium
from ledger import merkle
from ledger import view as V
from ledger.audit.envelopes import NOTES, Checked
from ledger.audit.report import AuditReport
from ledger.errors import LedgerError
from ledger.evidence import equivocation_evidence
from ledger.log import EquivocationProof
from ledger.record import Record


class _Feed:
    """An issuer's chain as the audit has seen it. Per seq from `base`+1 (dense
    arrays, -1 where nothing is placed): the leaf index, the first 8 bytes
    of the record's id and of its previous id, and its issued-at; `head` is
    the highest seq placed and `head_id` its id (None when it did not
    verify); `base_time` the issued-at of the record at `base` (0: unknown)."""

    __slots__ = (
        "base",
        "base_id",
        "base_time",
        "seq",
        "head",
        "head_index",
        "leaves",
        "ids",
        "prevs",
        "times",
        "genuine",
        "disordered",
    )

    def __init__(self, seq: int = 0, head: bytes | None = b"", time: int = 0) -> None:
        self.base = seq  # audited before this run: seqs 1..base
        self.base_id = head
        self.base_time = time
        self.seq = seq
        self.head = head
        self.head_index = -1
        self.leaves = array("q")
        self.ids = bytearray()
        self.prevs = bytearray()
        self.times = array("q")
        self.genuine = bytearray()
        self.disordered = False

    def place(
        self, seq: int, index: int, rid: bytes, prev: bytes, genuine: bool, time: int
    ) -> None:
        j = seq - self.base - 1
        short = j + 1 - len(self.leaves)
        if short > 0:
            self.leaves.extend([-1] * short)
            self.ids.extend(bytes(8 * short))
            self.prevs.extend(bytes(8 * short))
            self.times.extend([0] * short)
            self.genuine.extend(bytes(short))
        self.leaves[j] = index
        self.ids[8 * j : 8 * j + 8] = rid[:8]
        self.prevs[8 * j : 8 * j + 8] = prev[:8].ljust(8, b"\0")
        self.times[j] = time
        self.genuine[j] = genuine

    def append(self, index: int, rid: bytes, prev: bytes, genuine: bool, time: int) -> None:
        """place() of the record at seq + 1, the next in order (the usual case)."""
        self.leaves.append(index)
        self.ids += rid[:8]
        self.prevs += prev[:8].ljust(8, b"\0")
        self.times.append(time)
        self.genuine.append(genuine)
        self.seq += 1
        self.head = rid if genuine else None
        self.head_index = index

    def extend(
        self,
        leaves: list[int],
        head: bytes,
        ids: list[bytes],
        prevs: list[bytes],
        times: list[int],
    ) -> None:
        """append() of the next len(leaves) records, all genuine: their leaf
        indexes, the last one's id, the first 8 bytes of each one's id and
        previous id, and each one's issued-at."""
        self.leaves.extend(leaves)
        self.ids += b"".join(ids)
        self.prevs += b"".join(prevs)
        self.times.extend(times)
        self.genuine += b"\1" * len(leaves)
        self.seq += len(leaves)
        self.head = head
        self.head_index = leaves[-1]

    def at(self, seq: int) -> tuple[int, bytes] | None:
        """(leaf index, id prefix) of the record placed at `seq`, if any."""
        j = seq - self.base - 1
        if j < 0 or j >= len(self.leaves) or self.leaves[j] < 0:
            return None
        return self.leaves[j], bytes(self.ids[8 * j : 8 * j + 8])

    def prev_of(self, seq: int) -> bytes | None:
        """The previous-id prefix the genuine record at `seq` names, if any."""
        j = seq - self.base - 1
        if j < 0 or j >= len(self.leaves) or self.leaves[j] < 0 or not self.genuine[j]:
            return None
        return bytes(self.prevs[8 * j : 8 * j + 8])

    def is_genuine(self, seq: int) -> bool:
        j = seq - self.base - 1
        return 0 <= j < len(self.leaves) and self.leaves[j] >= 0 and bool(self.genuine[j])

    def time_of(self, seq: int) -> int | None:
        """The issued-at of the genuine record at `seq` (the audited base's,
        when known), else None: a record that did not verify proves no time."""
        if seq == self.base:
            return self.base_time or None
        return self.times[seq - self.base - 1] if self.is_genuine(seq) else None

    def placed(self) -> int:
        return len(self.leaves) - self.leaves.count(-1)

    def out_of_order(self) -> list[int]:
        """Seqs to take out so the rest stand in the log in feed order: those
        outside a longest increasing run (the fewest records to blame)."""
        by_leaf = sorted(
            (leaf, self.base + 1 + j) for j, leaf in enumerate(self.leaves) if leaf >= 0
        )
        seqs = [s for _, s in by_leaf]
        tails: list[int] = []  # tails[k]: position in seqs ending a run of length k+1
        back = [-1] * len(seqs)
        for i, s in enumerate(seqs):
            lo, hi = 0, len(tails)
            while lo < hi:
                mid = (lo + hi) // 2
                if seqs[tails[mid]] < s:
                    lo = mid + 1
                else:
                    hi = mid
            back[i] = tails[lo - 1] if lo else -1
            if lo == len(tails):
                tails.append(i)
            else:
                tails[lo] = i
        keep = set()
        k = tails[-1] if tails else -1
        while k >= 0:
            keep.add(k)
            k = back[k]
        return [s for i, s in enumerate(seqs) if i not in keep]

    def holes(self) -> list[tuple[int, int, int]]:
        """Missing seq ranges below the head: (first, last, leaf of the next record)."""
        out = []
        j = 0
        n = len(self.leaves)
        while j < n:
            if self.leaves[j] >= 0:
                j += 1
                continue
            k = j
            while k < n and self.leaves[k] < 0:
                k += 1
            nxt = self.leaves[k] if k < n else -1
            out.append((self.base + 1 + j, self.base + k, nxt))
            j = k
        return out


@dataclass
class ViewTarget:
    """One view to recompute: every feed up to `vector` (a view checkpoint's),
    or, with vector None, up to each feed's counted seq (`frozen` caps it)."""

    name: str
    view: V.NationalView
    vector: dict[str, int] | None = None
    frozen: dict[str, int] = field(default_factory=dict)

    def wants(self, rec: Record) -> bool:
        if self.vector is not None:
            return rec.seq <= self.vector.get(rec.issuer, 0)
        cap = self.frozen.get(rec.issuer)
        return cap is None or rec.seq <= cap


class LogChecker:
    """The order-dependent checks over a log's leaves, fed in log order:
    the Merkle frontier, each feed's chain, duplicates and equivocations in
    the log, roots at wanted sizes, and the views being recomputed."""

    def __init__(
        self,
        cons: Consortium,
        report: AuditReport,
        *,
        frontier: merkle.Frontier | None = None,
        heads: Mapping[str, tuple[int, bytes]] | None = None,
        head_times: Mapping[str, int] | None = None,
        want_roots: Iterable[int] = (),
        views: Sequence[ViewTarget] = (),
        keep_leaf_hashes: bool = False,
        entry_at: Callable[[int], bytes | None] | None = None,
    ) -> None:
        self.cons = cons
        self.report = report
        self.frontier = frontier.copy() if frontier is not None else merkle.Frontier.empty()
        self.start = self.frontier.size
        times = head_times or {}
        self.feeds: dict[str, _Feed] = {
            i: _Feed(s, h, times.get(i, 0)) for i, (s, h) in (heads or {}).items()
        }
        self.want = set(want_roots)
        self.roots: dict[int, bytes] = {}
        if self.start in self.want:
            self.roots[self.start] = self.frontier.root()
        self.views = list(views)
        self.leaf_hashes = bytearray() if keep_leaf_hashes else None
        self.entry_at = entry_at
        self.verified = 0

    @property
    def size(self) -> int:
        return self.frontier.size

    def heads(self) -> dict[str, tuple[int, bytes | None]]:
        return {i: (f.seq, f.head) for i, f in self.feeds.items() if f.seq}

    def head_times(self) -> dict[str, int]:
        """Each feed head's issued-at, where its record verified."""
        out = {}
        for i, f in self.feeds.items():
            t = f.time_of(f.seq) if f.seq else None
            if t is not None:
                out[i] = t
        return out

    def add(
        self, items: Sequence[tuple[bytes, Checked | None]]
    ) -> tuple[list[tuple[int, int, list[bytes]]], list[tuple[str, int, bytes, int]]]:
        """Append leaves in order: (leaf hash, checked envelope or None when
        the envelope is missing). Returns the Merkle nodes completed, as runs
        (level, first index, hashes; `merkle.Frontier.extend`), and the
        records placed on their feeds as (issuer, seq, id, leaf index)."""
        start = self.frontier.size
        leaves = [lh for lh, _ in items]
        runs: list[tuple[int, int, list[bytes]]] = []
        cut = 0
        for size in sorted(s for s in self.want if start < s <= start + len(leaves)):
            runs += self.frontier.extend(leaves[cut : size - start])
            self.roots[size] = self.frontier.root()
            cut = size - start
        runs += self.frontier.extend(leaves[cut:])
        if self.leaf_hashes is not None:
            self.leaf_hashes += b"".join(leaves)
        if not self.views:
            placed = self._add_in_order(items, start)
            if placed is not None:
                return runs, placed
        placed = []
        to_view: list[Record] = []
        for index, (_, c) in enumerate(items, start):
            if c is None:
                continue
            _, rid, issuer, seq, prev, kind, msg, rec, issued_at = c
            self.verified += 1
            if kind is not None:
                (self.report.warn if kind in NOTES else self.report.error)(
                    kind,
                    msg or kind,
                    index=index,
                    record_id=rid.hex(),
                    issuer=issuer,
                    seq=seq if issuer is not None else None,
                )
            if issuer is None:
                continue
            # signed by its issuer: its chain links and its time count
            genuine = kind in (None, "role", "time", *NOTES)
            if self._chain(index, rid, issuer, seq, prev, genuine, issued_at):
                placed.append((issuer, seq, rid, index))
                if rec is not None and self.views:
                    to_view.append(rec)
        if to_view:
            for t in self.views:
                wanted = [r for r in to_view if t.wants(r)]
                if wanted:
                    t.view.apply(wanted)
        return runs, placed

    def _add_in_order(
        self, items: Sequence[tuple[bytes, Checked | None]], start: int
    ) -> list[tuple[str, int, bytes, int]] | None:
        """The usual chunk in one go: every envelope there and clean, and each
        issuer's records in it the next ones of its feed, in order, each
        naming the one before (the feed's head for the first) and issued no
        earlier than it. Returns what
        `add` returns as placed; None, having changed nothing, when the chunk
        is not like that (`add` then goes record by record)."""
        groups: dict[str, list[int]] = {}  # issuer -> the leaf indexes of its records
        for index, (_, c) in enumerate(items, start):
            if c is None or c[5] is not None:
                return None
            groups.setdefault(c[2], []).append(index)  # type: ignore[arg-type]
        runs = []
        for issuer, leaves in groups.items():
            mine: list[Checked] = [items[i - start][1] for i in leaves]  # type: ignore[misc]
            f = self.feeds.get(issuer)
            seq, head = (f.seq, f.head) if f is not None else (0, b"")
            if [c[3] for c in mine] != list(range(seq + 1, seq + 1 + len(mine))):
                return None
            prevs = [c[4][:8].ljust(8, b"\0") for c in mine]
            named = [c[1][:8] for c in mine]  # what each record's successor must name
            if prevs[1:] != named[:-1]:
                return None
            if head is not None and prevs[0] != head[:8].ljust(8, b"\0"):
                return None  # (a head that did not verify, None, proves nothing)
            times = [c[8] for c in mine]
            if times != sorted(times):
                return None
            before = f.time_of(seq) if f is not None else None
            if before is not None and times[0] < before:
                return None
            runs.append((issuer, leaves, mine[-1][1], named, prevs, times))
        for issuer, leaves, last, named, prevs, times in runs:
            f = self.feeds.get(issuer)
            if f is None:
                f = self.feeds[issuer] = _Feed()
            f.extend(leaves, last, named, prevs, times)
        self.verified += len(items)
        return [(c[2], c[3], c[1], i) for i, (_, c) in enumerate(items, start)]  # type: ignore[index]

    def _chain(
        self,
        index: int,
        rid: bytes,
        issuer: str,
        seq: int,
        prev: bytes,
        genuine: bool,
        issued_at: int,
    ) -> bool:
        """Place a record on its feed. Order problems are judged per feed in
        `finish`; duplicates, equivocations, wrong previous ids and times
        that go back here."""
        rep = self.report
        f = self.feeds.get(issuer)
        if f is None:
            f = self.feeds[issuer] = _Feed()
        if seq == f.seq + 1:
            # The next record of the feed, in order: nothing is placed at seq or
            # above, and the record at seq - 1 is the head (the audited base's
            # id when there is none in this run; None when it did not verify).
            expect = f.head
            before = f.time_of(f.seq) if f.seq else None
            f.append(index, rid, prev, genuine, issued_at)
            if genuine:
                self._previous(index, rid, issuer, seq, prev, expect)
                if before is not None and issued_at < before:
                    self._time_back(index, rid.hex(), issuer, seq, issued_at, before)
            return True

        def where() -> dict[str, Any]:  # built only for a finding: the pass is hot
            return {"index": index, "record_id": rid.hex(), "issuer": issuer, "seq": seq}

        if seq <= f.base:
            rep.error(
                "sequence", f"{issuer}#{seq} comes again after #{f.base} audited before", **where()
            )
            return False
        seen = f.at(seq)
        if seen is not None:
            if seen[1] == rid[:8]:
                rep.error("duplicate", f"the same record is already at leaf {seen[0]}", **where())
            else:
                rep.error(
                    "equivocation",
                    f"the log holds two different records at {issuer}#{seq}: "
                    f"leaves {seen[0]} and {index}",
                    **where(),
                )
                self._equivocation_evidence(seen[0], index)
            return False
        f.place(seq, index, rid, prev, genuine, issued_at)
        if genuine:
            before = f.time_of(seq - 1)
            if before is not None and issued_at < before:
                self._time_back(index, rid.hex(), issuer, seq, issued_at, before)
            after_t = f.time_of(seq + 1)
            if after_t is not None and after_t < issued_at:
                nxt = f.at(seq + 1)
                self._time_back(
                    nxt[0] if nxt else None, None, issuer, seq + 1, after_t, issued_at
                )
            if seq == f.base + 1:
                expect = f.base_id[:8] if f.base_id is not None else None
            else:
                before = f.at(seq - 1)
                # A predecessor that did not verify has an id that proves nothing.
                expect = before[1] if before is not None and f.is_genuine(seq - 1) else None
            self._previous(index, rid, issuer, seq, prev, expect)
        after = f.at(seq + 1)
        named = f.prev_of(seq + 1)
        if genuine and after is not None and named is not None and named != rid[:8]:
            rep.error(
                "previous",
                f"names a previous record other than {issuer}#{seq} (leaf {index}) in the log",
                index=after[0],
                issuer=issuer,
                seq=seq + 1,
            )
        if seq != f.seq + 1:
            f.disordered = True
        if seq > f.seq:
            f.seq = seq
            f.head = rid if genuine else None
            f.head_index = index
        return True

    def _previous(
        self, index: int, rid: bytes, issuer: str, seq: int, prev: bytes, expect: bytes | None
    ) -> None:
        """A finding when the record names a previous id other than `expect`
        (the id, or its first 8 bytes, of the feed's record at seq - 1; None
        when that proves nothing)."""
        if expect is None or prev[:8].ljust(8, b"\0") == expect[:8].ljust(8, b"\0"):
            return
        self.report.error(
            "previous",
            f"names previous record {prev.hex()[:16]}…, which is not {issuer}#{seq - 1} in the log",
            index=index,
            record_id=rid.hex(),
            issuer=issuer,
            seq=seq,
        )

    def _time_back(
        self,
        index: int | None,
        rid: str | None,
        issuer: str,
        seq: int,
        issued_at: int,
        before: int,
    ) -> None:
        """A finding: `issuer`#`seq` is issued before the record ahead of it."""
        self.report.error(
            "feed-time",
            f"issued {before - issued_at} ms before {issuer}#{seq - 1}; a feed's "
            "issued-at never decreases",
            index=index,
            record_id=rid,
            issuer=issuer,
            seq=seq,
        )

    def finish(self) -> None:
        """Judge feed order once every leaf is in: the fewest records that,
        taken out, leave each feed in order are out of order; seqs below a
        head that the log never holds are missing."""
        rep = self.report
        for issuer, f in sorted(self.feeds.items()):
            if not f.disordered:
                continue
            for seq in f.out_of_order():
                leaf = (f.at(seq) or (None, b""))[0]
                rep.error(
                    "sequence",
                    f"{issuer}#{seq} is out of feed order in the log",
                    index=leaf,
                    issuer=issuer,
                    seq=seq,
                )
            for first, last, nxt in f.holes():
                what = f"#{first}" if first == last else f"#{first}..#{last}"
                rep.error(
                    "sequence",
                    f"the log holds no {issuer}{what} below the feed's head #{f.seq}",
                    index=nxt if nxt >= 0 else None,
                    issuer=issuer,
                    seq=first,
                )

    def _equivocation_evidence(self, first_index: int, second_index: int) -> None:
        if self.entry_at is None:
            return
        a, b = self.entry_at(first_index), self.entry_at(second_index)
        if a is None or b is None:
            return
        try:
            ev = equivocation_evidence(EquivocationProof(a, b), self.cons)
        except LedgerError:
            return
        self.report.evidence.append(ev)



def compare_view(
    rep: AuditReport, view: V.NationalView, vcp: V.ViewCheckpoint, where: str
) -> None:
    """A finding unless `view`, recomputed from the records, is what `vcp` signs."""
    if view.vector != vcp.vector_dict:
        rep.error(
            "view-root",
            f"the log holds records only up to {view.vector}, the view "
            f"checkpoint names {vcp.vector_dict}",
            where=where,
        )
        return
    if view.root() != vcp.root or view.count != vcp.count:
        rep.error(
            "view-root",
            f"signs {vcp.count} entries with root {vcp.root.hex()[:16]}…; the records up to its "
            f"vector give {view.count} entries with root {view.root().hex()[:16]}…",
            where=where,
        )
