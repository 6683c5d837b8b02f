"""The offline audit: a stopped node's RocksDB files, opened read-only.

Besides the checks of every envelope and chain (`ledger.audit.envelopes`,
`ledger.audit.chain`), the store itself: meta size vs leaves; leaves[i] ->
records[id] exists, holds index i and an envelope whose hash is id; feedseq;
feed heads and freezes; every stored Merkle node against the hash recomputed
from the envelopes (`ledger.audit.storepass`); stored equivocation proofs;
the view column family against the view recomputed from the records; stored
checkpoints against the recomputed roots.
"""

from __future__ import annotations

import json
from pathlib import Path
from time import perf_counter

from keys.consortium import Consortium
from ledger import note
from ledger import view as V
from ledger.audit.chain import LogChecker, ViewTarget, compare_view
from ledger.audit.cosign import cosigners
from ledger.audit.envelopes import gc_paused
from ledger.audit.report import AuditReport, Progress
from ledger.audit.storepass import LeafPass
from ledger.errors import LedgerError, StorageFailure, UnknownIssuer
from ledger.evidence import equivocation_evidence
from ledger.log import EquivocationProof, FeedState
from ledger.names import log_origin, view_origin
from ledger.store import Store, feedseq_key, read_u64, u64

AUDIT_CACHE_BYTES = 512 << 20  # the offline audit's block cache


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
    """One offline audit: the driver, the store's meta, checkpoints,
    equivocations, feed heads and view; the leaves are `LeafPass`'s."""

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
        targets: list[ViewTarget] = []
        stored_vector = self._stored_view_vector() if self.view else None
        if self.view:
            # A store-backed view says which vector it stands for; else it is
            # every feed up to its counted seq, as rebuild_from_ledger makes it.
            targets.append(ViewTarget("store", V.NationalView(self.cons), stored_vector, frozen))
            for key, vcp in view_cps:
                targets.append(
                    ViewTarget(key, V.NationalView(self.cons), dict(vcp.vector), frozen)
                )
        checker = LogChecker(
            self.cons,
            rep,
            want_roots={cp.size for _, _, cp in log_cps},
            views=targets,
            entry_at=self._entry_at,
        )
        leaves = LeafPass(
            self.store,
            self.cons,
            rep,
            workers=self.workers,
            progress=self.progress,
            keep=self.view,
        )
        with gc_paused():
            leaves.run(size, checker)
        checker.finish()
        rep.counts["verified"] = checker.verified
        rep.counts["issuers"] = len(checker.feeds)
        leaves.tails(size)
        self._feed_heads(checker, frozen)
        leaves.feedseq_extras(checker)
        leaves.record_extras(size)
        for key, _, cp in log_cps:
            got = checker.roots.get(cp.size)
            if got is not None and got != cp.root:
                rep.error(
                    "checkpoint",
                    f"signs root {cp.root.hex()[:16]}… for size {cp.size}; the stored envelopes "
                    f"hash to {got.hex()[:16]}…",
                    where=f"checkpoints/{key}",
                )
        if self.view:
            if stored_vector is not None:
                self._view_vector(stored_vector, checker, frozen)
            self._views(targets, view_cps)

    def _stored_view_vector(self) -> dict[str, int] | None:
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
        vorigin = view_origin(self.cons.name, self.pid)
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
                        text, note.Verifier.for_key(vorigin, p.public_key), vorigin
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
            names = cosigners(rep, self.cons, self.pid, text, f"checkpoints/{name}")
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

    # ------------------------------------------------------------ after the pass
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

    def _views(
        self, targets: list[ViewTarget], view_cps: list[tuple[str, V.ViewCheckpoint]]
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
            compare_view(rep, t.view, vcp, key)
