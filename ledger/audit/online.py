"""The online audit: a running node, through a `LogSource`, resuming from an
`AuditState` so a second audit reads only what is new.

The node's signed log checkpoint is joined to the last audited one by a
consistency proof; when none joins them the auditor tries to prove a fork
from the entries the node serves and writes the evidence (ledger.evidence).
The entries since are checked as the offline audit checks them, their root
against the checkpoint's (a mismatch is located by binary search with the
node's own consistency proofs); the view checkpoint is compared with the
view recomputed from the records; cosignatures are counted; the evidence the
node serves (equivocations, and the forks its witness and view keeper kept)
is verified. A node that serves an older view or an older cosigned log
checkpoint than one seen before is a finding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any

from keys.consortium import Consortium
from ledger import merkle, note
from ledger import view as V
from ledger.audit.chain import LogChecker, ViewTarget, compare_view
from ledger.audit.cosign import cosigners, newest_cosignature
from ledger.audit.envelopes import Checker, gc_paused
from ledger.audit.report import AuditReport, Progress
from ledger.audit.state import AuditState, LogSource
from ledger.errors import BadInput, LedgerError, UnknownIssuer
from ledger.evidence import (
    equivocation_evidence,
    log_fork_evidence,
    log_fork_from_leaves,
    read_evidence,
    verify_evidence,
)
from ledger.log import EquivocationProof
from ledger.names import log_origin, view_origin


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
    """One online audit of `pid`'s log through `src`; `run` returns the state to keep."""

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
        self.pool: Checker | None = None
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
                vorigin = view_origin(cons.name, self.pid)
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
        names = cosigners(rep, cons, self.pid, text, "log checkpoint")
        cosigned_at = newest_cosignature(cons, self.pid, text)
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

        targets: list[ViewTarget] = []
        if vcp is not None:
            targets.append(ViewTarget("view checkpoint", V.NationalView(cons), dict(vcp.vector)))
        need_all = bool(targets) or start == 0
        self.pool = Checker(cons, cp.size if need_all else cp.size - start, self.workers)
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
                assert st is not None  # entries were read again: there is an audited prefix
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
            max(seen_cosig, newest_cosignature(cons, self.pid, text)),
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
        with gc_paused():
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
                rep.evidence.append(log_fork_evidence(self.cons, self.pid, st.note, text))
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
            ev = log_fork_from_leaves(self.cons, self.pid, small, big, bytes(leaves))
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
        self, st: AuditState, text: str, cp: note.Checkpoint, leaves: bytes
    ) -> None:
        """The served entries, the audited prefix's included, prove that `cp`
        does not extend the audited checkpoint: a fork finding and its evidence."""
        old = note.open_checkpoint(st.note, self.verifier, self.origin)
        ev = log_fork_from_leaves(self.cons, self.pid, (st.note, old), (text, cp), leaves)
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
            _served_fork(rep, self.cons, raw)

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
        compare_view(rep, view, vcp, "view checkpoint")
        names = cosigners(rep, self.cons, self.pid, vnote, "view checkpoint")
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


_SERVED_FORKS = {"log-fork": "fork", "view-fork": "view-fork"}  # evidence kind -> finding


def _served_fork(rep: AuditReport, cons: Consortium, raw: bytes) -> None:
    """A fork a node kept (its witness's log forks, its view keeper's view
    forks; in the evidence format or an older node's JSON): an error, with
    the evidence, when it proves itself; else the node's word, a warning."""
    try:
        ev = read_evidence(raw, cons)
        if ev.get("kind") not in _SERVED_FORKS:
            raise BadInput(f"not a fork but {ev.get('kind')!r}")
        what = verify_evidence(ev, cons)
    except LedgerError as e:
        rep.warn("evidence", f"the node reports a fork it cannot prove by itself: {e}")
        return
    if ev["kind"] == "log-fork":
        rep.error("fork", what, issuer=str(ev["log"]))
    else:
        rep.error("view-fork", what, where=f"{ev['witness']} vs {ev['peer']}")
    rep.evidence.append(ev)
