"""The auditor: verify a node's log, checkpoints, store and view without trusting the node.

Two ways in, one set of checks:

- `audit_store(path, consortium, node)`: a stopped node's RocksDB files
  (opened read-only), plus a file-system check of the store's own indexes
  against what the records imply.
- `audit_source(source, consortium, node, state)`: a running node through a
  `LogSource` (node/auditcli.py adapts the gRPC Public service), resuming from
  an `AuditState` so a second audit reads only what is new.

Checks on every envelope, in log order (`check_envelopes` runs on a spawn-safe
process pool of one worker per core but one, with the auditing process checking
chunks too, for long logs; in-process for short ones; `LogChecker` does the
sequential part):

    parse  -> issuer  -> signature -> role -> time   (one finding each, per leaf;
        time: `ledger.rules.time_violation`, the ledger's own bounds)
    feeds: each record names the id of its feed's previous record (previous)
        and is issued no earlier than it (feed-time);
        one record twice (duplicate), two at one seq (equivocation);
        order is judged per feed once all leaves are in (sequence): the fewest
        records whose removal leaves the feed in order are out of order, and
        seqs below the head that the log never holds are missing
    Merkle root over every leaf == the root the signed checkpoint names

A record that does not verify is still placed on its feed, but its id
proves nothing, so the next record's link to it is not judged: one tampered
record makes one finding, not a cascade.

Checkpoints: the node's signature and origin (`log_origin`), the root at the
checkpoint's size, cosignatures counted against `policy.cosign_quorum`
(a cosignature that does not verify is a finding, too few is a warning).
Two checkpoints of one log are joined by a consistency proof; when none
joins them the auditor writes *proven* fork evidence (see `verify_evidence`).

Store checks (offline only): meta size vs leaves; leaves[i] -> records[id]
exists, holds index i and an envelope whose hash is id; feedseq; feed heads
and freezes; every stored Merkle node against the hash recomputed from the
envelopes (an edited node is located: a node that also disagrees with its own
stored children); the view column family against the view recomputed from the
records; stored checkpoints against the recomputed roots.

The offline pass is built for the usual case, an honest store, and loses no
precision on the other: a chunk of leaves is read with one scan and one
multi-get, and a chunk that is whole (consecutive 8-byte leaf keys, every
record there naming its leaf) is checked with list operations; its Merkle
nodes and each ordered feed's feedseq entries are compared with one scan per
run of adjacent keys; a clean chunk whose feeds continue in order joins the
chains in one go. Wherever a chunk is not like that, the pass goes key by
key and record by record, and the findings are those of that slower path.

Results go into an `AuditReport`: `findings` (errors: something is wrong) and
`warnings` (worth knowing, not wrong), each naming kind, leaf index, record
id, issuer and what failed. `report.ok` is True only without errors. Verifiers
elsewhere raise; the auditor collects instead and goes on.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import itertools
import json
import multiprocessing
import os
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any, Protocol

from keys.consortium import Consortium
from ledger import merkle, note
from ledger import view as V
from ledger.errors import BadInput, LedgerError, StorageFailure, UnknownIssuer
from ledger.log import EquivocationProof, FeedState
from ledger.names import log_origin, witness_name
from ledger.payloads import check_issuer as check_role
from ledger.record import Fields, Record, parse_envelope, record_context, record_id
from ledger.rules import time_violation
from ledger.store import COLUMN_FAMILIES, Store, feedseq_key, merkle_key, read_u64, u64

__all__ = [
    "EVIDENCE_FORMAT",
    "AuditReport",
    "AuditState",
    "Finding",
    "LogChecker",
    "LogSource",
    "audit_source",
    "audit_store",
    "check_envelopes",
    "check_role",
    "equivocation_evidence",
    "fork_evidence",
    "verify_evidence",
    "witness_name",
]

ERROR = "error"
WARNING = "warning"
MAX_PER_KIND = 100  # findings listed per kind; the rest are counted in `dropped`
POOL_MIN_RECORDS = 20_000  # below this, spawning workers costs more than it saves
AUDIT_CACHE_BYTES = 512 << 20  # the offline audit's block cache
CHUNK = 1000  # envelopes per task; also the public GetEntries page limit
EVIDENCE_FORMAT = "markex-evidence/v1"
STATE_VERSION = 1

Progress = Callable[[int, int], None]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: Any, what: str) -> bytes:
    if not isinstance(s, str):
        raise BadInput(f"{what} must be a base64 string")
    try:
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise BadInput(f"{what} is not base64") from e


# ====================================================================== report


@dataclass(frozen=True)
class Finding:
    """One thing the audit found. `kind` names the check; `detail` says what
    failed; the other fields locate it (leaf index, record id, issuer, seq,
    or `where`: a store key, a Merkle node, a number)."""

    kind: str
    detail: str
    index: int | None = None
    record_id: str | None = None
    issuer: str | None = None
    seq: int | None = None
    where: str | None = None
    severity: str = ERROR

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "severity": self.severity}
        for k in ("index", "record_id", "issuer", "seq", "where"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        out["detail"] = self.detail
        return out

    def line(self) -> str:
        loc = []
        if self.index is not None:
            loc.append(f"leaf {self.index}")
        if self.issuer is not None:
            loc.append(self.issuer if self.seq is None else f"{self.issuer}#{self.seq}")
        if self.record_id is not None:
            loc.append(f"record {self.record_id[:16]}…")
        if self.where is not None:
            loc.append(self.where)
        at = f" [{', '.join(loc)}]" if loc else ""
        return f"{self.kind}{at}: {self.detail}"


@dataclass
class AuditReport:
    target: str
    mode: str  # "offline" | "online"
    findings: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    evidence: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    _listed: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def add(self, f: Finding) -> None:
        key = f"{f.severity}:{f.kind}"
        listed = self._listed.get(key, 0)
        if listed >= MAX_PER_KIND:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return
        self._listed[key] = listed + 1
        (self.findings if f.severity == ERROR else self.warnings).append(f)

    def error(self, kind: str, detail: str, **where: Any) -> None:
        self.add(Finding(kind, detail, **where))

    def warn(self, kind: str, detail: str, **where: Any) -> None:
        self.add(Finding(kind, detail, severity=WARNING, **where))

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    @property
    def ok(self) -> bool:
        return not self.findings and not any(k.startswith(ERROR) for k in self.dropped)

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "target": self.target,
            "mode": self.mode,
            "findings": [f.to_json() for f in self.findings],
            "warnings": [f.to_json() for f in self.warnings],
            "dropped": dict(self.dropped),
            "counts": dict(self.counts),
            "seconds": round(self.seconds, 3),
        }


# ====================================================================== per-envelope checks

# (leaf hash, record id, issuer, seq, prev id, failed check, what failed, record, issued-at)
Checked = tuple[
    bytes, bytes, str | None, int, bytes, str | None, str | None, Record | None, int
]


def check_envelopes(
    cons: Consortium, envelopes: Iterable[bytes], *, verify: bool = True, keep: bool = False
) -> list[Checked]:
    """The context-free checks of each envelope: parse, issuer, signature,
    role, and the bounds on the record's own times.

    `verify=False` only parses (for entries already audited whose hashes
    match). `keep` returns the parsed Record of every envelope that passed."""
    policy = cons.policy
    max_bytes = policy.max_envelope_bytes
    context = record_context(cons.name)
    # Two passes: parse the chunk, then verify its signatures back to back
    # rather than one between each two parses.
    parsed: list[tuple[bytes, bytes, Fields | None, str | None]] = []
    for env in envelopes:
        env = bytes(env)
        try:
            parsed.append((env, merkle.leaf_hash(env), parse_envelope(env, max_bytes), None))
        except LedgerError as e:
            parsed.append((env, merkle.leaf_hash(env), None, f"{type(e).__name__}: {e}"))
    out: list[Checked] = []
    for env, lh, rec, err in parsed:
        if rec is None:
            out.append((lh, record_id(env), None, 0, b"", "parse", err, None, 0))
            continue
        issuer = rec.issuer
        kind = msg = p = None
        if verify:
            p = cons.participant(issuer)
            if p is None:
                kind, msg = "issuer", f"{issuer!r} is not a participant of {cons.name}"
            elif not p.verify(rec.signature, context + rec.body):
                kind, msg = "signature", f"the signature is not {issuer}'s"
            else:
                try:
                    check_role(cons, p.role, issuer, rec.payload)
                except LedgerError as e:
                    kind, msg = "role", f"{type(e).__name__}: {e}"
                else:
                    msg = time_violation(rec.issued_at_ms, rec.payload, policy)
                    if msg is not None:
                        kind = "time"
        keep_rec = Record(*rec) if keep and kind is None else None
        if p is not None:
            issuer = p.id  # one string object per issuer: pickled once per chunk
        out.append(
            (lh, rec.id, issuer, rec.seq, rec.prev_id, kind, msg, keep_rec, rec.issued_at_ms)
        )
    return out


_WORKER_CONSORTIA: dict[bytes, Consortium] = {}


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection during a pass: it allocates millions of
    short-lived, acyclic objects (freed by reference counting), and the
    collector would scan the long-lived ones again and again for nothing.
    Whatever cycles there are go at the collection after the pass."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _worker_check(task: tuple[bytes, list[bytes], bool, bool]) -> list[Checked]:
    raw, envelopes, verify, keep = task
    digest = hashlib.sha256(raw).digest()
    cons = _WORKER_CONSORTIA.get(digest)
    if cons is None:
        # The parent verified consortium.json; workers get its exact bytes.
        cons = _WORKER_CONSORTIA[digest] = Consortium.from_json_bytes(raw)
    with _gc_paused():
        return check_envelopes(cons, envelopes, verify=verify, keep=keep)


class _Checker:
    """Runs `check_envelopes` over chunks, in order, on a spawn pool or in-process.

    With a pool the caller's process checks too: whenever the pool already
    has AHEAD chunks per worker waiting, the next chunk is checked here
    instead of queued. So the default pool has one worker fewer than there
    are cores, the caller's sequential work (Merkle, feeds, store indexes)
    and its share of the checks fill the last core, and no core runs two
    busy processes. At most a few chunks are in flight, so memory stays
    flat on huge logs."""

    AHEAD = 4

    def __init__(self, cons: Consortium, total: int, workers: int | None) -> None:
        self.cons = cons
        if workers is None:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            workers = cpus - 1 if total >= POOL_MIN_RECORDS and cpus > 1 else 0
        self.workers = workers
        self.local = 0  # chunks checked in the caller's process
        self._raw = cons.raw or cons.to_json_bytes()
        self._pool: Any = None
        if workers > 0:
            try:
                self._pool = multiprocessing.get_context("spawn").Pool(workers)
            except OSError:  # no processes to be had: check in-process instead
                self.workers = 0

    def run(
        self,
        tasks: Iterable[tuple[Any, list[bytes]]],
        *,
        verify: bool,
        keep: bool,
        count: int | None = None,
    ) -> Iterator[tuple[Any, list[Checked]]]:
        """Checked chunks, in order. `count`: how many tasks there will be,
        when known; the pool's backlog then shrinks over the last ones (to
        half of those left), so the pool and this process finish together
        rather than this one waiting for a queue of chunks at the end."""
        if self._pool is None:
            for tag, envs in tasks:
                yield tag, check_envelopes(self.cons, envs, verify=verify, keep=keep)
            return
        window: deque[tuple[Any, Any]] = deque()  # (tag, AsyncResult or the checked list)
        queued = 0  # AsyncResults in the window
        ahead = self.AHEAD * self.workers
        limit = 2 * ahead + 2
        for k, (tag, envs) in enumerate(tasks):
            backlog = ahead if count is None else min(ahead, (count - k) // 2)
            if queued < backlog:
                task = (self._raw, envs, verify, keep)
                window.append((tag, self._pool.apply_async(_worker_check, (task,))))
                queued += 1
            else:
                window.append((tag, check_envelopes(self.cons, envs, verify=verify, keep=keep)))
                self.local += 1
            # Hand back what is done at the front; wait only when the window is full.
            while window and (
                len(window) >= limit
                or isinstance(window[0][1], list)
                or window[0][1].ready()
            ):
                t, r = window.popleft()
                if not isinstance(r, list):
                    r = r.get()
                    queued -= 1
                yield t, r
        while window:
            t, r = window.popleft()
            yield t, r if isinstance(r, list) else r.get()

    def close(self, abort: bool = False) -> None:
        if self._pool is not None:
            if abort:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()
            self._pool = None


# ====================================================================== sequential checks


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
class _ViewTarget:
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
        views: Sequence[_ViewTarget] = (),
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
                self.report.error(
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
            genuine = kind in (None, "role", "time")
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


# ====================================================================== evidence


def equivocation_evidence(proof: EquivocationProof, cons: Consortium) -> dict[str, Any]:
    """A portable equivocation file (JSON object). Raises unless the proof verifies."""
    a, _ = proof.verify(cons)
    return {
        "format": EVIDENCE_FORMAT,
        "kind": "equivocation",
        "consortium": cons.name,
        "issuer": a.issuer,
        "seq": a.seq,
        "first": _b64(proof.first),
        "second": _b64(proof.second),
    }


def fork_evidence(
    cons: Consortium,
    log: str,
    first: str,
    second: str,
    prefix_root: bytes | None = None,
    proof: Sequence[bytes] = (),
) -> dict[str, Any]:
    """A portable fork file: two signed checkpoints of `log`, and, when their
    sizes differ, the root of the larger tree's first `smaller size` leaves
    with an RFC 9162 consistency proof to the larger root. Raises unless it
    verifies (see `verify_evidence`)."""
    ev: dict[str, Any] = {
        "format": EVIDENCE_FORMAT,
        "kind": "log-fork",
        "consortium": cons.name,
        "log": log,
        "first": first,
        "second": second,
    }
    if prefix_root is not None:
        ev["prefix_root"] = _b64(prefix_root)
        ev["proof"] = [_b64(h) for h in proof]
    verify_evidence(ev, cons)
    return ev


def verify_evidence(ev: Any, cons: Consortium) -> str:
    """Check an evidence object offline with only the consortium configuration.
    Returns a one-line description of what it proves; raises a LedgerError
    (BadInput, BadSignature, MalformedProof, ProofMismatch, ...) when it is
    not evidence of misbehaviour.

    - equivocation: two different records, both validly signed by one issuer
      at one seq.
    - log-fork: two checkpoints signed by the log's key under its origin that
      no consistency proof can join: same size and different roots; or sizes
      a < b with `prefix_root` and `proof`, where the proof verifies from
      (a, prefix_root) to the larger checkpoint's root, so the larger tree's
      first a leaves hash to prefix_root, which differs from the smaller
      checkpoint's root.
    """
    if not isinstance(ev, dict):
        raise BadInput("evidence is a JSON object")
    if ev.get("format") != EVIDENCE_FORMAT:
        raise BadInput(f"evidence format must be {EVIDENCE_FORMAT!r}")
    if ev.get("consortium") != cons.name:
        raise BadInput(f"evidence is for consortium {ev.get('consortium')!r}, not {cons.name!r}")
    kind = ev.get("kind")
    if kind == "equivocation":
        proof = EquivocationProof(
            _unb64(ev.get("first"), "first"), _unb64(ev.get("second"), "second")
        )
        a, b = proof.verify(cons)
        if ev.get("issuer") not in (None, a.issuer) or ev.get("seq") not in (None, a.seq):
            raise BadInput("the evidence names another issuer or seq than its records")
        return (
            f"equivocation: {a.issuer} signed two different records at seq {a.seq} "
            f"({a.id.hex()[:16]}… and {b.id.hex()[:16]}…)"
        )
    if kind == "log-fork":
        log = ev.get("log")
        p = cons.participant(log) if isinstance(log, str) else None
        if p is None:
            raise UnknownIssuer(f"{log!r} is not a participant of {cons.name}")
        origin = log_origin(cons.name, p.id)
        verifier = note.Verifier.for_key(origin, p.public_key)
        first, second = ev.get("first"), ev.get("second")
        if not isinstance(first, str) or not isinstance(second, str):
            raise BadInput("a fork needs two signed checkpoint notes")
        c1 = note.open_checkpoint(first, verifier, origin)
        c2 = note.open_checkpoint(second, verifier, origin)
        if c1.size == c2.size:
            if c1.root == c2.root:
                raise BadInput("the two checkpoints name the same tree: no fork")
            return f"log fork: {log} signed two different roots for size {c1.size}"
        small, big = (c1, c2) if c1.size < c2.size else (c2, c1)
        if "prefix_root" not in ev:
            raise BadInput(
                "two checkpoints of different sizes may be consistent; a fork needs "
                "prefix_root and proof"
            )
        prefix = _unb64(ev["prefix_root"], "prefix_root")
        raw_proof = ev.get("proof")
        if not isinstance(raw_proof, list):
            raise BadInput("proof must be a list of base64 hashes")
        hashes = [_unb64(h, "proof hash") for h in raw_proof]
        merkle.verify_consistency(small.size, big.size, prefix, big.root, hashes)
        if prefix == small.root:
            raise BadInput("the proof joins the two checkpoints: no fork")
        return (
            f"log fork: {log}'s tree of size {big.size} does not extend its tree of size "
            f"{small.size} (its first {small.size} leaves hash to another root)"
        )
    raise BadInput(f"unknown evidence kind {kind!r}")


def _fork_from_entries(
    cons: Consortium,
    log: str,
    small: tuple[str, note.Checkpoint],
    big: tuple[str, note.Checkpoint],
    leaf_hashes: bytes,
) -> dict[str, Any] | None:
    """Proven fork evidence from the larger tree's leaf hashes, when they do
    hash to the larger root and their prefix does not hash to the smaller one."""
    n = big[1].size
    if len(leaf_hashes) < 32 * n:
        return None
    tree = merkle.MemoryNodes()
    for i in range(n):
        tree.append(leaf_hashes[32 * i : 32 * i + 32])
    if tree.root() != big[1].root:
        return None
    prefix = merkle.root_at(tree, small[1].size)
    if prefix == small[1].root:
        return None
    proof = merkle.consistency_proof(tree, small[1].size, n) if small[1].size else []
    try:
        return fork_evidence(cons, log, small[0], big[0], prefix, proof)
    except LedgerError:
        return None


# ====================================================================== checkpoints


def _witnesses(cons: Consortium, log: str) -> dict[str, bytes]:
    return {witness_name(cons.name, p.id): p.public_key for p in cons.witnesses if p.id != log}


def _cosignatures(
    report: AuditReport, cons: Consortium, log: str, text: str, where: str
) -> list[str]:
    """Names of members with a valid cosignature on `text`; a bad one is a finding."""
    try:
        names = note.count_cosignatures(text, _witnesses(cons, log))
    except LedgerError as e:
        report.error("cosignature", f"{type(e).__name__}: {e}", where=where)
        return []
    return names


def _newest_cosignature(cons: Consortium, log: str, text: str) -> int:
    """The newest timestamp (POSIX s) of a valid member cosignature on `text`
    (0: none; a bad line is `_cosignatures`' finding, not counted here)."""
    witnesses = _witnesses(cons, log)
    known = {(n, note.cosignature_key_id(n, k)): (n, k) for n, k in witnesses.items()}
    newest = 0
    try:
        parsed = note.Note.parse(text)
    except LedgerError:
        return 0
    for sig in parsed.signatures:
        w = known.get((sig.name, sig.key_id))
        if w is None:
            continue
        with contextlib.suppress(LedgerError):
            newest = max(newest, note.verify_cosignature(parsed.text, sig, w[0], w[1]))
    return newest


# ====================================================================== offline


def audit_store(
    path: Path | str,
    consortium: Consortium,
    participant_id: str,
    *,
    view: bool = True,
    workers: int | None = None,
    progress: Progress | None = None,
) -> AuditReport:
    """Audit a stopped node's store at `path` (opened read-only)."""
    t0 = perf_counter()
    report = AuditReport(str(path), "offline")
    if consortium.participant(participant_id) is None:
        raise UnknownIssuer(f"{participant_id!r} is not a participant of {consortium.name}")
    if not Path(path).is_dir():
        raise StorageFailure(f"{path} is not a node's data folder")
    # The records are read in log order, which is random in their key order:
    # a block cache that holds a large log's record tables reads and
    # decompresses each block once, not once per record in it.
    store = Store(path, read_only=True, cache_bytes=AUDIT_CACHE_BYTES)
    try:
        _StoreAudit(store, consortium, participant_id, report, view, workers, progress).run()
    finally:
        store.close()
    report.seconds = perf_counter() - t0
    if report.seconds > 0:
        report.counts["records_per_second"] = int(report.counts.get("records", 0) / report.seconds)
    return report


class _StoreAudit:
    def __init__(
        self,
        store: Store,
        cons: Consortium,
        pid: str,
        report: AuditReport,
        view: bool,
        workers: int | None,
        progress: Progress | None,
    ) -> None:
        self.store = store
        self.cons = cons
        self.pid = pid
        self.report = report
        self.view = view
        self.workers = workers
        self.progress = progress
        self.origin = log_origin(cons.name, pid)
        p = cons.participant(pid)
        assert p is not None
        self.verifier = note.Verifier.for_key(self.origin, p.public_key)

    # ------------------------------------------------------------ driver
    def run(self) -> None:
        rep = self.report
        size = self._size()
        rep.counts["records"] = size
        log_cps, view_cps = self._checkpoints(size)
        frozen = self._equivocations()
        targets: list[_ViewTarget] = []
        stored_vector = self._stored_view_vector() if self.view else None
        if self.view:
            # A store-backed view says which vector it stands for; else it is
            # every feed up to its counted seq, as rebuild_from_ledger makes it.
            targets.append(_ViewTarget("store", V.NationalView(self.cons), stored_vector, frozen))
            for key, vcp in view_cps:
                targets.append(
                    _ViewTarget(key, V.NationalView(self.cons), dict(vcp.vector), frozen)
                )
        checker = LogChecker(
            self.cons,
            rep,
            want_roots={cp.size for _, _, cp in log_cps},
            views=targets,
            entry_at=self._entry_at,
        )
        with _gc_paused():
            self._leaves(size, checker)
        checker.finish()
        rep.counts["verified"] = checker.verified
        rep.counts["issuers"] = len(checker.feeds)
        self._tails(size)
        self._feed_heads(checker, frozen)
        self._feedseq_extras(checker)
        self._record_extras(size)
        for key, text, cp in log_cps:
            got = checker.roots.get(cp.size)
            if got is not None and got != cp.root:
                rep.error(
                    "checkpoint",
                    f"signs root {cp.root.hex()[:16]}… for size {cp.size}; the stored envelopes "
                    f"hash to {got.hex()[:16]}…",
                    where=f"checkpoints/{key}",
                )
            del text
        if self.view:
            if stored_vector is not None:
                self._view_vector(stored_vector, checker, frozen)
            self._views(targets, view_cps)

    def _stored_view_vector(self) -> dict[str, int] | None:
        if "viewmeta" not in COLUMN_FAMILIES:
            return None
        raw = self.store.get("viewmeta", b"vector")
        if raw is None:
            return None
        try:
            vector = json.loads(raw.decode("utf-8"))
            ok = isinstance(vector, dict) and all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                for k, v in vector.items()
            )
        except (UnicodeDecodeError, json.JSONDecodeError):
            ok = False
        if not ok:
            self.report.error(
                "view", "the stored view's vector does not parse", where="viewmeta/vector"
            )
            return None
        return vector

    def _view_vector(
        self, vector: dict[str, int], checker: LogChecker, frozen: dict[str, int]
    ) -> None:
        """The stored view's vector against what the log holds and counts."""
        rep = self.report
        for issuer in sorted(set(vector) | set(checker.feeds)):
            want = vector.get(issuer, 0)
            f = checker.feeds.get(issuer)
            held = f.seq if f is not None else 0
            counted = min(held, frozen[issuer]) if issuer in frozen else held
            if want > held:
                rep.error(
                    "view",
                    f"the stored view stands for {issuer}#{want}; the log holds only up to #{held}",
                    issuer=issuer,
                    where="viewmeta/vector",
                )
            elif want != counted:
                rep.warn(
                    "view",
                    f"the stored view stands for {issuer}#{want}, the log counts "
                    f"#{counted}: the node brings its view up to date when it starts",
                    issuer=issuer,
                    where="viewmeta/vector",
                )
        raw = self.store.get("viewmeta", b"count")
        if raw is not None and len(raw) == 8:
            rep.counts["stored_view_count"] = read_u64(raw)

    def _entry_at(self, index: int) -> bytes | None:
        rid = self.store.get("leaves", u64(index))
        v = None if rid is None else self.store.get("records", rid)
        return None if v is None else v[8:]

    # ------------------------------------------------------------ meta, checkpoints
    def _size(self) -> int:
        raw = self.store.get("meta", b"size")
        if raw is None:
            n = sum(1 for _ in self.store.items("leaves"))
            if n:
                self.report.error("size", f"meta holds no log size but leaves holds {n} entries")
            return n
        if len(raw) != 8:
            self.report.error("size", f"meta size is {len(raw)} bytes, not 8", where="meta/size")
            return sum(1 for _ in self.store.items("leaves"))
        return read_u64(raw)

    def _checkpoints(
        self, size: int
    ) -> tuple[list[tuple[str, str, note.Checkpoint]], list[tuple[str, V.ViewCheckpoint]]]:
        rep = self.report
        log_cps: list[tuple[str, str, note.Checkpoint]] = []
        view_cps: list[tuple[str, V.ViewCheckpoint]] = []
        best = 0
        latest: note.Checkpoint | None = None
        view_origin = V.view_origin(self.cons.name, self.pid)
        p = self.cons.participant(self.pid)
        assert p is not None
        for key, raw in self.store.items("checkpoints"):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                rep.error("checkpoint", "is not UTF-8", where=f"checkpoints/{key!r}")
                continue
            if key.startswith(b"view"):
                name = key.decode("utf-8", "replace")
                try:
                    vcp = V.open_view_checkpoint(
                        text, note.Verifier.for_key(view_origin, p.public_key), view_origin
                    )
                except LedgerError as e:
                    rep.error("checkpoint", f"{type(e).__name__}: {e}", where=f"checkpoints/{name}")
                    continue
                view_cps.append((name, vcp))
                continue
            if key in (b"log/latest", b"log/cosigned"):
                name = key.decode()
            elif key.startswith(b"log/") and len(key) == 12:
                name = f"log/{read_u64(key[4:])}"
            else:
                rep.warn("checkpoint", "unknown key in the checkpoints family", where=repr(key))
                continue
            rep.count("checkpoints")
            try:
                cp = note.open_checkpoint(text, self.verifier, self.origin)
            except LedgerError as e:
                rep.error("checkpoint", f"{type(e).__name__}: {e}", where=f"checkpoints/{name}")
                continue
            if name not in ("log/latest", "log/cosigned") and name != f"log/{cp.size}":
                rep.error(
                    "checkpoint",
                    f"stored under {name} but names size {cp.size}",
                    where=f"checkpoints/{name}",
                )
            if cp.size > size:
                rep.error(
                    "checkpoint",
                    f"signs size {cp.size} but the store holds {size} leaves (records lost?)",
                    where=f"checkpoints/{name}",
                )
                continue
            names = _cosignatures(rep, self.cons, self.pid, text, f"checkpoints/{name}")
            best = max(best, len(names))
            if name == "log/latest":
                latest = cp
            log_cps.append((name, text, cp))
        sized = [cp.size for n, _, cp in log_cps if n not in ("log/latest", "log/cosigned")]
        if latest is not None and sized and latest.size < max(sized):
            rep.error(
                "checkpoint",
                f"log/latest names size {latest.size}, older than the stored size {max(sized)}",
                where="checkpoints/log/latest",
            )
        if log_cps and best < self.cons.policy.cosign_quorum:
            rep.warn(
                "quorum",
                f"no stored checkpoint carries {self.cons.policy.cosign_quorum} member "
                f"cosignatures (best: {best})",
            )
        if not log_cps and size:
            rep.warn("checkpoint", "the store holds no signed log checkpoint")
        rep.counts["cosignatures"] = best
        return log_cps, view_cps

    def _equivocations(self) -> dict[str, int]:
        """Verify stored equivocation proofs; return issuer -> the seq its feed is frozen at."""
        rep = self.report
        frozen: dict[str, int] = {}
        for key, raw in self.store.items("equivocations"):
            rep.count("equivocations")
            where = f"equivocations/{key[:-9].decode('utf-8', 'replace')}#{read_u64(key[-8:])}"
            try:
                proof = EquivocationProof.decode(raw)
                a, _ = proof.verify(self.cons)
            except LedgerError as e:
                rep.error(
                    "evidence", f"stored equivocation proof does not verify: {e}", where=where
                )
                continue
            if key != feedseq_key(a.issuer, a.seq):
                rep.error(
                    "evidence",
                    f"proof for {a.issuer}#{a.seq} is stored under another key",
                    where=where,
                )
            frozen[a.issuer] = min(frozen.get(a.issuer, a.seq - 1), a.seq - 1)
            rep.error(
                "equivocation",
                f"{a.issuer} signed two different records at seq {a.seq} (proof verified)",
                issuer=a.issuer,
                seq=a.seq,
                record_id=a.id.hex(),
            )
            rep.evidence.append(equivocation_evidence(proof, self.cons))
        return frozen

    # ------------------------------------------------------------ the pass
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

    def _leaves(self, size: int, checker: LogChecker) -> None:
        rep = self.report
        pool = _Checker(self.cons, size, self.workers)
        rep.counts["workers"] = pool.workers
        done = 0
        try:
            results = pool.run(
                self._read(size), verify=True, keep=self.view, count=-(-size // CHUNK)
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
    def _tails(self, size: int) -> None:
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

    def _feed_heads(self, checker: LogChecker, frozen: dict[str, int]) -> None:
        rep = self.report
        stored: dict[str, FeedState] = {}
        for k, v in self.store.items("feeds"):
            issuer = k.decode("utf-8", "replace")
            try:
                stored[issuer] = FeedState.decode(issuer, v)
            except LedgerError as e:
                rep.error("feed-head", str(e), issuer=issuer, where=f"feeds/{issuer}")
        for issuer in sorted(set(stored) | set(checker.feeds)):
            f = checker.feeds.get(issuer)
            seq, head = (f.seq, f.head) if f is not None else (0, b"")
            st = stored.get(issuer) or FeedState(issuer)
            where = {"issuer": issuer, "where": f"feeds/{issuer}"}
            if f is not None and f.head_index >= 0:
                where["index"] = f.head_index
            if st.seq != seq:
                verb = "rewound" if st.seq < seq else "ahead of the log"
                rep.error(
                    "feed-head",
                    f"feed head {verb}: the store says #{st.seq}, the log's "
                    f"last record of {issuer} is #{seq}",
                    seq=seq,
                    **where,
                )
            elif head is not None and seq and st.head_id != head:
                rep.error(
                    "feed-head",
                    f"head id {st.head_id.hex()[:16]}… is not the id of {issuer}#{seq} in the log",
                    seq=seq,
                    **where,
                )
            elif (
                f is not None
                and st.head_issued_at_ms  # 0: the older encoding, which kept no time
                and (t := f.time_of(seq)) is not None
                and st.head_issued_at_ms != t
            ):
                rep.error(
                    "feed-head",
                    f"head issued-at {st.head_issued_at_ms} is not that of {issuer}#{seq} "
                    f"in the log ({t})",
                    seq=seq,
                    **where,
                )
            if st.frozen_at != frozen.get(issuer):
                rep.error(
                    "feed-head",
                    f"frozen at {st.frozen_at}, but the stored equivocation "
                    f"proofs give {frozen.get(issuer)}",
                    **where,
                )

    def _feedseq_extras(self, checker: LogChecker) -> None:
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

    def _record_extras(self, size: int) -> None:
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

    def _views(
        self, targets: list[_ViewTarget], view_cps: list[tuple[str, V.ViewCheckpoint]]
    ) -> None:
        rep = self.report
        expected = targets[0].view
        rep.counts["view_entries"] = expected.count
        stored_n = 0
        seen: set[str] = set()
        for k, v in self.store.items("view"):
            stored_n += 1
            number = k.decode("utf-8", "replace")
            seen.add(number)
            e = expected.entry(number)
            if e is None:
                rep.error(
                    "view-entry", "stored entry for a number the records do not mark", where=number
                )
            elif e.encode() != v:
                rep.error(
                    "view-entry",
                    "stored entry differs from the entry the records give",
                    where=number,
                )
        rep.counts["stored_view_entries"] = stored_n
        if rep.counts.get("stored_view_count", stored_n) != stored_n:
            rep.error(
                "view",
                f"viewmeta counts {rep.counts['stored_view_count']} entries, the "
                f"view family holds {stored_n}",
                where="viewmeta/count",
            )
        if stored_n == 0 and expected.count:
            rep.warn(
                "view",
                f"the store keeps no view entries; recomputed {expected.count} "
                f"entries, root {expected.root().hex()[:16]}…",
            )
        elif stored_n:
            for number in expected.numbers():
                if number not in seen:
                    rep.error(
                        "view-entry", "the records give an entry the store lacks", where=number
                    )
        for t, (key, vcp) in zip(targets[1:], view_cps, strict=True):
            _compare_view(rep, t.view, vcp, key)


def _compare_view(
    rep: AuditReport, view: V.NationalView, vcp: V.ViewCheckpoint, where: str
) -> None:
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


# ====================================================================== online


class LogSource(Protocol):
    """What an online audit asks a node (node/auditcli.py adapts gRPC).
    Methods raise a LedgerError when the node refuses or fails."""

    def log_checkpoint(self) -> str: ...

    def entries(self, start: int, end: int) -> list[bytes]:
        """Envelopes start.. (at most end-1); may return fewer than asked."""
        ...

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...

    def view_checkpoint(self) -> str | None: ...

    def feed_heads(self) -> dict[str, tuple[int, bytes, bool]]: ...

    def evidence(self) -> tuple[list[bytes], list[bytes]]: ...


@dataclass(frozen=True)
class AuditState:
    """What an auditor remembers of one log between runs: the last audited
    checkpoint (verified note), the Merkle frontier at its size, each feed's
    head there, the signing time (ms) of the newest view checkpoint seen and
    the newest log cosignature time (s) seen (0: none yet), so a node serving
    an older view or an older cosigned log checkpoint is a finding. Stored as JSON."""

    consortium: str
    log: str
    note: str
    size: int
    root: bytes
    frontier: tuple[bytes, ...]
    heads: Mapping[str, tuple[int, bytes]]
    head_times: Mapping[str, int] = field(default_factory=dict)  # each head's issued-at
    view_signed_at_ms: int = 0
    log_cosigned_at: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "consortium": self.consortium,
            "log": self.log,
            "size": self.size,
            "root": _b64(self.root),
            "note": self.note,
            "frontier": [_b64(h) for h in self.frontier],
            "heads": {
                i: [s, h.hex()] + ([self.head_times[i]] if i in self.head_times else [])
                for i, (s, h) in sorted(self.heads.items())
            },
            "view_signed_at_ms": self.view_signed_at_ms,
            "log_cosigned_at": self.log_cosigned_at,
        }

    @classmethod
    def from_json(cls, obj: Any, cons: Consortium) -> AuditState:
        """Parse and re-verify (the note's signature, the frontier's root).
        A head is [seq, id hex] or [seq, id hex, issued-at] (states written
        before the issued-at was kept have the first form)."""
        try:
            if obj["version"] != STATE_VERSION:
                raise BadInput(f"audit state version {obj['version']!r} is not {STATE_VERSION}")
            log = obj["log"]
            if obj["consortium"] != cons.name:
                raise BadInput(f"the audit state is for consortium {obj['consortium']!r}")
            p = cons.participant(log)
            if p is None:
                raise UnknownIssuer(f"audit state names {log!r}, not a participant")
            origin = log_origin(cons.name, log)
            text = obj["note"]
            cp = note.open_checkpoint(text, note.Verifier.for_key(origin, p.public_key), origin)
            frontier = tuple(_unb64(h, "frontier hash") for h in obj["frontier"])
            f = merkle.Frontier.from_hashes(cp.size, frontier)
            if f.root() != cp.root or obj["size"] != cp.size:
                raise BadInput("the audit state's frontier does not give its checkpoint's root")
            heads = {}
            times = {}
            for issuer, head in obj["heads"].items():
                if not isinstance(head, list) or len(head) not in (2, 3):
                    raise BadInput(f"audit state head of {issuer!r} is not [seq, id(, time)]")
                heads[str(issuer)] = (int(head[0]), bytes.fromhex(head[1]))
                if len(head) == 3:
                    times[str(issuer)] = int(head[2])
            # Absent in states written before these were kept: nothing seen yet.
            seen = [obj.get(k, 0) for k in ("view_signed_at_ms", "log_cosigned_at")]
            if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in seen):
                raise BadInput("the audit state's times are not non-negative integers")
        except (KeyError, TypeError, ValueError) as e:
            raise BadInput(f"audit state does not parse: {e}") from e
        return cls(cons.name, log, text, cp.size, cp.root, frontier, heads, times, *seen)


class _Abort(Exception):
    """Stop the online audit here; the report says why."""


def audit_source(
    source: LogSource,
    consortium: Consortium,
    participant_id: str,
    state: AuditState | None = None,
    *,
    view: bool = True,
    workers: int | None = None,
    progress: Progress | None = None,
    rounds: int = 3,
    pause: Callable[[float], None] | None = None,
) -> tuple[AuditReport, AuditState | None]:
    """Audit a running node's log through `source`, resuming from `state`.

    Returns the report and the state to keep for the next run (None when the
    log part of the audit was not clean: the next run starts from the old
    state again and reports the same problems)."""
    t0 = perf_counter()
    p = consortium.participant(participant_id)
    if p is None:
        raise UnknownIssuer(f"{participant_id!r} is not a participant of {consortium.name}")
    if state is not None and state.log != participant_id:
        raise BadInput(f"the audit state is for {state.log}, not {participant_id}")
    report = AuditReport(participant_id, "online")
    run = _OnlineAudit(
        source, consortium, participant_id, state, report, view, workers, progress, rounds, pause
    )
    new_state = None
    try:
        new_state = run.run()
    except _Abort:
        run.close()
    except BaseException:
        run.close(abort=True)
        raise
    else:
        run.close()
    report.seconds = perf_counter() - t0
    if report.seconds > 0:
        report.counts["records_per_second"] = int(report.counts.get("verified", 0) / report.seconds)
    return report, new_state


class _OnlineAudit:
    def __init__(
        self,
        src: LogSource,
        cons: Consortium,
        pid: str,
        state: AuditState | None,
        report: AuditReport,
        view: bool,
        workers: int | None,
        progress: Progress | None,
        rounds: int,
        pause: Callable[[float], None] | None,
    ) -> None:
        self.src = src
        self.cons = cons
        self.pid = pid
        self.state = state
        self.report = report
        self.view = view
        self.workers = workers
        self.progress = progress
        self.rounds = rounds
        self.pause = pause if pause is not None else time.sleep
        self.origin = log_origin(cons.name, pid)
        part = cons.participant(pid)
        assert part is not None
        self.public_key = part.public_key
        self.verifier = note.Verifier.for_key(self.origin, part.public_key)
        self.pool: _Checker | None = None
        self.log_ok = True

    def close(self, abort: bool = False) -> None:
        if self.pool is not None:
            self.pool.close(abort)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except LedgerError as e:
            self.report.error("node", f"{what} failed: {type(e).__name__}: {e}")
            self.log_ok = False
            raise _Abort from e

    def _open(self, text: str, where: str) -> note.Checkpoint:
        try:
            return note.open_checkpoint(text, self.verifier, self.origin)
        except LedgerError as e:
            self.report.error("checkpoint", f"{type(e).__name__}: {e}", where=where)
            self.log_ok = False
            raise _Abort from e

    # ------------------------------------------------------------ driver
    def run(self) -> AuditState | None:
        rep, src, cons = self.report, self.src, self.cons
        vnote: str | None = None
        vcp: V.ViewCheckpoint | None = None
        if self.view:
            # Fetched before the log checkpoint, so the log is likely to cover its vector.
            vnote = self._call("GetViewCheckpoint", src.view_checkpoint)
            if vnote is None:
                rep.warn("view", "the node serves no view checkpoint yet")
            else:
                vorigin = V.view_origin(cons.name, self.pid)
                try:
                    vcp = V.open_view_checkpoint(
                        vnote, note.Verifier.for_key(vorigin, self.public_key), vorigin
                    )
                except LedgerError as e:
                    rep.error("view-root", f"view checkpoint: {type(e).__name__}: {e}")
                    vcp = None
        seen_view = self.state.view_signed_at_ms if self.state is not None else 0
        if vcp is not None and vcp.signed_at_ms < seen_view:
            rep.error(
                "view-rollback",
                f"the view checkpoint is signed at {vcp.signed_at_ms} ms, "
                f"{(seen_view - vcp.signed_at_ms) // 1000:,} s before one this auditor saw "
                f"({seen_view} ms)",
            )
        text = self._call("GetLogCheckpoint", src.log_checkpoint)
        cp = self._open(text, "log checkpoint")
        rep.counts["records"] = cp.size
        names = _cosignatures(rep, cons, self.pid, text, "log checkpoint")
        cosigned_at = _newest_cosignature(cons, self.pid, text)
        seen_cosig = self.state.log_cosigned_at if self.state is not None else 0
        # A fresh checkpoint may have no cosignature yet; one whose newest is older
        # (beyond the clock skew between witnesses) than one seen is an old one replayed.
        if cosigned_at and cosigned_at * 1000 < seen_cosig * 1000 - cons.policy.clock_skew_ms:
            rep.error(
                "cosignature-rollback",
                f"the log checkpoint's newest cosignature is from {cosigned_at} s, "
                f"{seen_cosig - cosigned_at:,} s before one this auditor saw ({seen_cosig} s)",
            )
        rep.counts["cosignatures"] = len(names)
        if len(names) < cons.policy.cosign_quorum:
            rep.warn(
                "quorum",
                f"the log checkpoint carries {len(names)} member cosignatures; "
                f"the policy asks for {cons.policy.cosign_quorum}",
            )

        st = self.state
        base_frontier = merkle.Frontier.empty()
        heads: dict[str, tuple[int, bytes]] = {}
        head_times: dict[str, int] = {}
        if st is not None and st.size > 0:
            cp, text = self._join(st, cp, text)
            base_frontier = merkle.Frontier.from_hashes(st.size, st.frontier)
            heads = dict(st.heads)
            head_times = dict(st.head_times)
        start = base_frontier.size

        targets: list[_ViewTarget] = []
        if vcp is not None:
            targets.append(_ViewTarget("view checkpoint", V.NationalView(cons), dict(vcp.vector)))
        need_all = bool(targets) or start == 0
        self.pool = _Checker(cons, cp.size if need_all else cp.size - start, self.workers)
        rep.counts["workers"] = self.pool.workers

        prefix_leaves = bytearray()
        if start and targets:
            # Entries already audited, read again only for the view: their hashes must
            # give the audited root; their signatures were checked last time.
            reread = merkle.Frontier.empty()
            for _, checked in self.pool.run(self._pages(0, start), verify=False, keep=True):
                recs = []
                for c in checked:
                    reread.append(c[0])
                    prefix_leaves += c[0]
                    if c[7] is not None:
                        recs.append(c[7])
                for t in targets:
                    t.view.apply([r for r in recs if t.wants(r)])
            rep.counts["reread_for_view"] = start
            if reread.root() != st.root:  # type: ignore[union-attr]
                rep.error(
                    "root",
                    f"entries 0..{start - 1} served now are not the ones audited "
                    "before (their root differs)",
                )
                self.log_ok = False

        checker = LogChecker(
            cons,
            rep,
            frontier=base_frontier,
            heads=heads,
            head_times=head_times,
            views=targets,
            keep_leaf_hashes=True,
            entry_at=self._entry_at,
        )
        self._verify_range(checker, start, cp.size)
        if not self._root_ok(checker, cp, base_frontier):
            self.log_ok = False
            if prefix_leaves and len(prefix_leaves) == 32 * start:
                self._fork_from_prefix(
                    st, text, cp, bytes(prefix_leaves) + bytes(checker.leaf_hashes or b"")
                )
            raise _Abort

        # The view may be ahead of the log checkpoint: wait for a newer one.
        if vcp is not None:
            for _ in range(self.rounds):
                if self._covers(checker, vcp):
                    break
                self.pause(0.3)
                text2 = self._call("GetLogCheckpoint", src.log_checkpoint)
                cp2 = self._open(text2, "log checkpoint")
                if cp2.size <= cp.size:
                    continue
                proof = self._call(
                    "GetConsistencyProof", lambda a=cp.size, b=cp2.size: src.consistency_proof(a, b)
                )
                try:
                    merkle.verify_consistency(cp.size, cp2.size, cp.root, cp2.root, proof)
                except LedgerError as e:
                    rep.error("consistency", f"size {cp2.size} does not extend size {cp.size}: {e}")
                    self.log_ok = False
                    raise _Abort from e
                before = checker.frontier.copy()
                self._verify_range(checker, cp.size, cp2.size)
                if not self._root_ok(checker, cp2, before):
                    self.log_ok = False
                    raise _Abort
                cp, text = cp2, text2
            rep.counts["records"] = cp.size

        checker.finish()
        rep.counts["verified"] = checker.verified
        rep.counts["issuers"] = len(checker.feeds)
        self._feed_heads(checker)
        self._evidence()
        if vcp is not None and vnote is not None:
            self._view(checker, targets[0].view, vcp, vnote)
        if not self.log_ok:
            return None
        if any(f.kind in _LOG_KINDS for f in rep.findings):
            return None
        return AuditState(
            cons.name,
            self.pid,
            text,
            cp.size,
            cp.root,
            checker.frontier.hashes,
            {i: (s, h) for i, (s, h) in checker.heads().items() if h is not None},
            checker.head_times(),
            max(seen_view, vcp.signed_at_ms if vcp is not None else 0),
            max(seen_cosig, _newest_cosignature(cons, self.pid, text)),
        )

    # ------------------------------------------------------------ pieces
    def _pages(self, start: int, end: int) -> Iterator[tuple[int, list[bytes]]]:
        i = start
        while i < end:
            envs = self._call(f"GetEntries {i}..{end}", lambda a=i: self.src.entries(a, end))
            if not envs:
                self.report.error(
                    "entries",
                    f"the node served no entries from {i} (checkpoint size {end})",
                    index=i,
                )
                self.log_ok = False
                raise _Abort
            envs = envs[: end - i]
            yield i, envs
            i += len(envs)

    def _verify_range(self, checker: LogChecker, start: int, end: int) -> None:
        assert self.pool is not None
        done = 0
        with _gc_paused():
            for _, checked in self.pool.run(self._pages(start, end), verify=True, keep=self.view):
                checker.add([(c[0], c) for c in checked])
                done += len(checked)
                if self.progress is not None:
                    self.progress(done, end - start)

    def _entry_at(self, index: int) -> bytes | None:
        try:
            got = self.src.entries(index, index + 1)
        except LedgerError:
            return None
        return got[0] if got else None

    def _root_ok(self, checker: LogChecker, cp: note.Checkpoint, base: merkle.Frontier) -> bool:
        got = checker.frontier.root()
        if got == cp.root:
            return True
        first_bad = self._locate(checker, cp, base)
        self.report.error(
            "root",
            f"the entries hash to {got.hex()[:16]}…, the signed checkpoint of size {cp.size} "
            f"names {cp.root.hex()[:16]}…"
            + (f"; the first leaf that differs is {first_bad}" if first_bad is not None else ""),
            index=first_bad,
        )
        return False

    def _locate(
        self, checker: LogChecker, cp: note.Checkpoint, base: merkle.Frontier
    ) -> int | None:
        """The first leaf where the served entries leave the checkpoint's tree:
        binary search with the node's own consistency proofs."""
        leaves = checker.leaf_hashes
        if leaves is None:
            return None
        start = base.size

        def root_at(m: int) -> bytes:
            f = base.copy()
            for j in range(start, m):
                k = j - start
                f.append(bytes(leaves[32 * k : 32 * k + 32]))
            return f.root()

        def good(m: int) -> bool:
            if m == 0:
                return True
            try:
                proof = self.src.consistency_proof(m, cp.size)
                merkle.verify_consistency(m, cp.size, root_at(m), cp.root, proof)
            except LedgerError:
                return False
            return True

        lo, hi = start, cp.size  # good(lo) holds: it is the audited (or empty) prefix
        probes = 0
        while lo + 1 < hi and probes < 64:
            mid = (lo + hi) // 2
            probes += 1
            if good(mid):
                lo = mid
            else:
                hi = mid
        return lo

    def _join(self, st: AuditState, cp: note.Checkpoint, text: str) -> tuple[note.Checkpoint, str]:
        """The new checkpoint against the last audited one. Returns the
        checkpoint to audit up to (the old one when the node shows an older one)."""
        rep = self.report
        old = note.open_checkpoint(st.note, self.verifier, self.origin)
        if cp.size == st.size:
            if cp.root != st.root:
                rep.error("fork", f"the node signed two roots for size {cp.size}")
                rep.evidence.append(fork_evidence(self.cons, self.pid, st.note, text))
                self.log_ok = False
                raise _Abort
            return cp, text
        small, big = (
            ((text, cp), (st.note, old)) if cp.size < st.size else ((st.note, old), (text, cp))
        )
        try:
            proof = self.src.consistency_proof(small[1].size, big[1].size)
            merkle.verify_consistency(small[1].size, big[1].size, small[1].root, big[1].root, proof)
        except LedgerError as e:
            self._fork_between(small, big, e)
            raise _Abort from e
        if cp.size < st.size:
            rep.warn(
                "checkpoint",
                f"the node serves size {cp.size}, older than size {st.size} "
                "audited before (consistent; nothing new to audit)",
            )
            return old, st.note
        rep.counts["consistent_from"] = st.size
        return cp, text

    def _fork_between(
        self,
        small: tuple[str, note.Checkpoint],
        big: tuple[str, note.Checkpoint],
        why: LedgerError,
    ) -> None:
        """No valid consistency proof from the node: try to prove a fork from
        the larger tree's entries, as the node serves them now."""
        rep = self.report
        self.log_ok = False
        ev = None
        leaves = bytearray()
        try:
            i = 0
            while i < big[1].size:
                envs = self.src.entries(i, big[1].size)
                if not envs:
                    break
                for env in envs[: big[1].size - i]:
                    leaves += merkle.leaf_hash(env)
                i += len(envs)
        except LedgerError:
            pass  # the node cannot serve the larger tree: the fork stays unproven
        else:
            ev = _fork_from_entries(self.cons, self.pid, small, big, bytes(leaves))
        if ev is not None:
            rep.error(
                "fork",
                f"size {big[1].size} does not extend size {small[1].size}: the "
                f"first {small[1].size} entries hash to another root (proof written)",
            )
            rep.evidence.append(ev)
        else:
            rep.error(
                "consistency",
                f"no valid consistency proof from size {small[1].size} to "
                f"{big[1].size} ({type(why).__name__}: {why}), and the served entries do "
                "not prove a fork by themselves",
            )

    def _fork_from_prefix(
        self, st: AuditState | None, text: str, cp: note.Checkpoint, leaves: bytes
    ) -> None:
        if st is None:
            return
        old = note.open_checkpoint(st.note, self.verifier, self.origin)
        ev = _fork_from_entries(self.cons, self.pid, (st.note, old), (text, cp), leaves)
        if ev is not None:
            self.report.error(
                "fork", f"size {cp.size} does not extend the audited size {st.size} (proof written)"
            )
            self.report.evidence.append(ev)

    def _covers(self, checker: LogChecker, vcp: V.ViewCheckpoint) -> bool:
        heads = checker.heads()
        return all(heads.get(i, (0, None))[0] >= s for i, s in vcp.vector)

    def _feed_heads(self, checker: LogChecker) -> None:
        rep = self.report
        served = self._call("GetFeedHeads", self.src.feed_heads)
        for issuer, (seq, head) in sorted(checker.heads().items()):
            got = served.get(issuer)
            f = checker.feeds[issuer]
            where = {
                "issuer": issuer,
                "seq": seq,
                "index": f.head_index if f.head_index >= 0 else None,
            }
            if got is None:
                rep.error(
                    "feed-head",
                    f"the node lists no feed for {issuer}, whose #{seq} is in its log",
                    **where,
                )
            elif got[0] < seq:
                rep.error(
                    "feed-head",
                    f"feed head rewound: the node says #{got[0]}, its log holds #{seq}",
                    **where,
                )
            elif got[0] == seq and head is not None and got[1] != head:
                rep.error(
                    "feed-head",
                    "the node's head id is not the id of the last record of the feed in its log",
                    **where,
                )

    def _evidence(self) -> None:
        rep = self.report
        eqs, forks = self._call("GetEvidence", self.src.evidence)
        for raw in eqs:
            rep.count("equivocations")
            try:
                proof = EquivocationProof.decode(raw)
                a, _ = proof.verify(self.cons)
            except LedgerError as e:
                rep.error(
                    "evidence", f"the node serves an equivocation proof that does not verify: {e}"
                )
                continue
            rep.error(
                "equivocation",
                f"{a.issuer} signed two different records at seq {a.seq} (proof verified)",
                issuer=a.issuer,
                seq=a.seq,
                record_id=a.id.hex(),
            )
            rep.evidence.append(equivocation_evidence(proof, self.cons))
        for raw in forks:
            rep.count("fork_reports")
            _node_fork_report(rep, self.cons, raw)

    def _view(
        self, checker: LogChecker, view: V.NationalView, vcp: V.ViewCheckpoint, vnote: str
    ) -> None:
        rep = self.report
        if not self._covers(checker, vcp):
            rep.warn(
                "view",
                f"the log checkpoint does not yet hold every record of the view "
                f"checkpoint's vector {vcp.vector_dict}; view not compared",
            )
            return
        rep.counts["view_entries"] = view.count
        _compare_view(rep, view, vcp, "view checkpoint")
        names = _cosignatures(rep, self.cons, self.pid, vnote, "view checkpoint")
        rep.counts["view_cosignatures"] = len(names)


_LOG_KINDS = {
    "parse",
    "issuer",
    "signature",
    "role",
    "time",
    "feed-time",
    "sequence",
    "previous",
    "duplicate",
    "root",
    "checkpoint",
    "consistency",
    "fork",
    "entries",
    "node",
    "cosignature",
}


def _node_fork_report(rep: AuditReport, cons: Consortium, raw: bytes) -> None:
    """A fork a node's witness kept: {"kind": "log-fork", "log", "first", "second"}.
    Proven only for two roots at one size; otherwise the node's word."""
    try:
        obj = json.loads(raw.decode("utf-8"))
        if not isinstance(obj, dict) or obj.get("kind") != "log-fork":
            raise BadInput("not a log fork report")
        ev = {
            "format": EVIDENCE_FORMAT,
            "kind": "log-fork",
            "consortium": cons.name,
            "log": obj.get("log"),
            "first": obj.get("first"),
            "second": obj.get("second"),
        }
        what = verify_evidence(ev, cons)
    except (LedgerError, UnicodeDecodeError, json.JSONDecodeError) as e:
        rep.warn("evidence", f"the node reports a fork it cannot prove by itself: {e}")
        return
    rep.error("fork", what, issuer=str(ev["log"]))
    rep.evidence.append(ev)
