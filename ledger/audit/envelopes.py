"""The context-free checks of each envelope, and the process pool that runs them.

    parse -> issuer -> signature -> role -> time   (one finding each, per leaf;
        role: `ledger.payloads.check_issuer`, the log's own rule; time:
        `ledger.rules.time_violation`, the ledger's own bounds)

Two outcomes of the role check are notes (warnings), not failures
(`NOTES`): "members-key", a carrier's preference the audit cannot check
because it holds no members' key (node.toml members_key), and "ported", a
carrier's preference for a number of its range the configuration now lists
under another carrier (it may predate the port: docs/consent.md, rule 9).

`check_envelopes` checks one chunk; `Checker` runs it over a log's chunks in
order, on a spawn-safe pool of one worker per core but one with the auditing
process checking chunks too, for long logs; in-process for short ones.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from keys.consortium import Consortium
from ledger import merkle
from ledger.errors import LedgerError, MembersKeyMissing, PortedAway
from ledger.payloads import check_issuer as check_role
from ledger.record import Fields, Record, parse_envelope, record_context, record_id
from ledger.rules import time_violation
from ledger.sealing import MembersKey

POOL_MIN_RECORDS = 20_000  # below this, spawning workers costs more than it saves
NOTES = ("members-key", "ported")  # role outcomes reported as warnings (module doc)

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
                except MembersKeyMissing:
                    kind, msg = "members-key", (
                        "a carrier's preference: whether the carrier serves the number is "
                        "not checked, the audit holds no members' key (node.toml members_key)"
                    )
                except PortedAway as e:
                    kind, msg = "ported", f"{e}; issued before the port, or refused by the ledger"
                except LedgerError as e:
                    kind, msg = "role", f"{type(e).__name__}: {e}"
                else:
                    msg = time_violation(rec.issued_at_ms, rec.payload, policy)
                    if msg is not None:
                        kind = "time"
        keep_rec = Record(*rec) if keep and (kind is None or kind in NOTES) else None
        if p is not None:
            issuer = p.id  # one string object per issuer: pickled once per chunk
        out.append(
            (lh, rec.id, issuer, rec.seq, rec.prev_id, kind, msg, keep_rec, rec.issued_at_ms)
        )
    return out


_WORKER_CONSORTIA: dict[bytes, Consortium] = {}


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
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


def _worker_check(task: tuple[bytes, bytes, list[bytes], bool, bool]) -> list[Checked]:
    raw, key, envelopes, verify, keep = task
    digest = hashlib.sha256(raw + key).digest()
    cons = _WORKER_CONSORTIA.get(digest)
    if cons is None:
        # The parent verified consortium.json; workers get its exact bytes,
        # and the members' key it carries (b"": none).
        cons = Consortium.from_json_bytes(raw)
        if key:
            cons = cons.with_members_key(MembersKey(key))
        _WORKER_CONSORTIA[digest] = cons
    with gc_paused():
        return check_envelopes(cons, envelopes, verify=verify, keep=keep)


class Checker:
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
        self._key = cons.members_key.key if cons.members_key is not None else b""
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
                task = (self._raw, self._key, envs, verify, keep)
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
