"""The writer's jobs (node/core.py): what a caller queues, how the queue's
entries are gathered into a group, and which own issues the signing stage
may sign ahead of the writer."""

from __future__ import annotations

import queue
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from ledger.errors import BadInput
from ledger.log import EquivocationProof, Outcome
from ledger.payloads import type_of
from ledger.record import Payload, Record
from node.answer import Answer

MAX_GROUP = 2000  # envelopes per group commit
MAX_ISSUE_KEY = 128  # bytes of an idempotency key (docs/import.md)


@dataclass
class Job:
    kind: str  # "issue" | "submit" | "equivocation"
    payload: Payload | EquivocationProof | None
    envelopes: Sequence[bytes]
    future: Future | Answer
    source: str
    wait_for_target: bool = False  # an own correction may name a target not seen yet
    key: bytes = b""  # an issue's idempotency key (b"": none) and its content's digest
    digest: bytes = b""
    # Set by the signing stage for an own issue before the writer takes it:
    rec: Record | None = None  # signed ahead (seq and prev_id are checked again by the writer)
    first: Job | None = None  # the job that issues this job's key first (in flight)
    held: Outcome | None = None  # answered already: its key issued before, or refused
    # A submit's records parsed and signature-checked ahead of the writer, by
    # id (NodeLedger.submit's `verified`); any envelope not here is checked in full.
    verified: Mapping[bytes, Record] = field(default_factory=dict)


@dataclass(frozen=True)
class OwnIssue:
    """One own record to issue (`NodeCore.issue_many_async`): as `issue_async`'s arguments."""

    payload: Payload
    wait_for_target: bool = False
    key: bytes = b""
    digest: bytes = b""


def check_key(key: bytes, digest: bytes) -> None:
    if len(key) > MAX_ISSUE_KEY:
        raise BadInput(f"an idempotency key of {len(key)} bytes; at most {MAX_ISSUE_KEY}")
    if key and len(digest) != 32:
        raise BadInput("an idempotency key needs its content's 32-byte digest")


def state_free(job: Job) -> bool:
    """An own issue whose checks read no state (no `effect` check, no target
    to wait for), so it may be checked and signed before the writer has
    written the records ahead of it."""
    return (job.kind == "issue" and not job.wait_for_target
            and type_of(job.payload).effect is None)


def gather(q: queue.Queue, jobs: list[Job]) -> int:
    """Extend `jobs` with the entries waiting in `q` (a job or a list of them
    each) while the group holds under MAX_GROUP envelopes (an issue counts
    1); the end marker (None) goes back for the next get. Returns the entries
    taken."""
    n = sum(len(j.envelopes) + 1 for j in jobs)
    taken = 0
    while n < MAX_GROUP:
        try:
            nxt = q.get_nowait()
        except queue.Empty:
            break
        if nxt is None:
            q.put(None)
            break
        more = nxt if isinstance(nxt, list) else [nxt]
        jobs.extend(more)
        n += sum(len(j.envelopes) + 1 for j in more)
        taken += 1
    return taken
