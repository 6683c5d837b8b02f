"""Following logs for a read replica: every round of a followed log is an
online audit (ledger.audit.audit_source, resuming from its AuditState) and
only the entries that audit verified reach the view; the view is moved only
to the vector of a view checkpoint signed by a followed node, and only when
the records up to that vector give that checkpoint's root.

    FollowedLog    one node's log: `round()` audits what is new and returns
                   the verified envelopes, or raises LogRefused (evidence:
                   the audit's findings) or LogUnavailable (try again)
    ViewFollower   the replica's NationalView (in its own store): verified
                   records wait by (issuer, seq) until a view checkpoint's
                   vector covers them; `advance(cp)` applies them and checks
                   the root, or raises ViewRefused

Pure: the node is reached through a `LogSource` (node/replica.py adapts
gRPC). A refusal names what failed; the replica stops applying and keeps
serving the last checkpoint that verified (docs/replica.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from keys.consortium import Consortium
from ledger import audit
from ledger import view as V
from ledger.audit import AuditReport, AuditState, LogSource
from ledger.errors import CheckpointFork, Equivocation, LedgerError, OutOfOrder
from ledger.record import Record

# Findings that say only that the node could not be read this round (it is
# down, restarting, or has nothing yet): the next round tries again. Every
# other error of a failed audit is evidence against the log.
UNAVAILABLE_KINDS = frozenset({"node", "entries"})


class LogRefused(LedgerError):
    """The followed log did not verify: the audit's report says why."""

    def __init__(self, node: str, report: AuditReport) -> None:
        self.node = node
        self.report = report
        errors = [f.line() for f in report.findings if f.kind not in UNAVAILABLE_KINDS]
        super().__init__(f"the log of {node} does not verify: " + "; ".join(errors[:3]))


class LogUnavailable(LedgerError):
    """The followed node could not be read this round (nothing is wrong yet)."""


class ViewRefused(CheckpointFork):
    """A node's view checkpoint is not what the verified records give."""


class _Recording:
    """A LogSource that remembers the entries it served, by index, so the
    envelopes the audit verified are the ones the view is built from (never
    read twice: a node could serve other bytes the second time)."""

    def __init__(self, inner: LogSource) -> None:
        self.inner = inner
        self.seen: dict[int, bytes] = {}

    def log_checkpoint(self) -> str:
        return self.inner.log_checkpoint()

    def entries(self, start: int, end: int) -> list[bytes]:
        got = self.inner.entries(start, end)
        for i, env in enumerate(got):
            self.seen.setdefault(start + i, env)
        return got

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self.inner.consistency_proof(old_size, new_size)

    def view_checkpoint(self) -> str | None:
        return self.inner.view_checkpoint()

    def feed_heads(self) -> dict[str, tuple[int, bytes, bool]]:
        return self.inner.feed_heads()

    def evidence(self) -> tuple[list[bytes], list[bytes]]:
        return self.inner.evidence()


@dataclass
class FollowedLog:
    """One followed node's log, audited round by round from its last state."""

    node: str
    log: str
    source: LogSource
    consortium: Consortium
    state: AuditState | None = None
    last: AuditReport | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return 0 if self.state is None else self.state.size

    def round(self) -> list[bytes]:
        """Audit the log from the last verified checkpoint to the node's
        current one and return the envelopes in between, in log order.
        LogRefused when the audit found the log wrong (the state is kept:
        the next round asks the same question again); LogUnavailable when
        the node could not be read."""
        rec = _Recording(self.source)
        report, new_state = audit.audit_source(
            rec, self.consortium, self.log, self.state, view=False, workers=1
        )
        self.last = report
        if new_state is None:
            kinds = {f.kind for f in report.findings}
            if kinds and kinds <= UNAVAILABLE_KINDS:
                raise LogUnavailable("; ".join(f.line() for f in report.findings[:2]))
            raise LogRefused(self.node, report)
        start = self.size
        out = []
        for i in range(start, new_state.size):
            env = rec.seen.get(i)
            if env is None:  # the audit verified it, so it read it: a broken promise here
                raise LogUnavailable(f"entry {i} of {self.node} was verified but not kept")
            out.append(env)
        self.state = new_state
        return out


class ViewFollower:
    """A NationalView moved from one signed vector to the next.

    Records (already verified by a FollowedLog) wait in `pending` by
    (issuer, seq); two different records at one (issuer, seq) from any
    followed logs are an Equivocation. `advance(cp)` applies exactly the
    records up to `cp`'s vector and raises ViewRefused when the root or the
    count is not `cp`'s; the view then holds the records' own state, which
    no followed node signed (the caller stops serving new checkpoints)."""

    def __init__(self, view: V.NationalView) -> None:
        self.view = view
        self.pending: dict[tuple[str, int], Record] = {}

    def add(self, envelopes: Sequence[bytes]) -> int:
        """Keep the records of `envelopes` (verified) that the view has not
        applied yet; returns how many were new."""
        vector = self.view.vector
        new = 0
        for env in envelopes:
            r = Record.from_envelope(env)
            if r.seq <= vector.get(r.issuer, 0):
                continue
            key = (r.issuer, r.seq)
            held = self.pending.get(key)
            if held is None:
                self.pending[key] = r
                new += 1
            elif held.id != r.id:
                raise Equivocation(
                    f"{r.issuer} signed two records at seq {r.seq}: "
                    f"{held.id.hex()[:16]}… and {r.id.hex()[:16]}…"
                )
        return new

    def covers(self, cp: V.ViewCheckpoint) -> bool:
        """True when every record up to `cp`'s vector is applied or pending,
        and `cp` does not go back on any feed the view applied."""
        vector = self.view.vector
        target = cp.vector_dict
        if any(seq > target.get(i, 0) for i, seq in vector.items()):
            return False
        return all(
            (i, s) in self.pending
            for i, upto in target.items()
            for s in range(vector.get(i, 0) + 1, upto + 1)
        )

    def advance(self, cp: V.ViewCheckpoint) -> set[str]:
        """Apply the records up to `cp`'s vector (OutOfOrder unless `covers`)
        and check the result is `cp`'s root and count (ViewRefused). Returns
        the numbers whose entry changed."""
        if not self.covers(cp):
            raise OutOfOrder(f"the records up to {cp.vector_dict} are not all verified yet")
        vector = self.view.vector
        batch = [
            self.pending.pop((i, s))
            for i, upto in sorted(cp.vector_dict.items())
            for s in range(vector.get(i, 0) + 1, upto + 1)
        ]
        changed = self.view.apply(batch) if batch else set()
        if self.view.root() != cp.root or self.view.count != cp.count:
            raise ViewRefused(
                f"{cp.origin} signs {cp.count} entries with root {cp.root.hex()[:16]}… for "
                f"{cp.vector_dict}; the verified records give {self.view.count} entries with "
                f"root {self.view.root().hex()[:16]}…"
            )
        return changed

    def matches(self, cp: V.ViewCheckpoint) -> bool:
        """True when `cp` signs the view as it is now (vector, root, count)."""
        return (
            cp.vector_dict == self.view.vector
            and cp.root == self.view.root()
            and cp.count == self.view.count
        )


def findings_json(report: AuditReport | None) -> list[dict[str, Any]]:
    """The errors of `report` (none for None), as JSON objects."""
    return [] if report is None else [f.to_json() for f in report.findings]
