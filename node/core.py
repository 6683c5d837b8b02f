"""The node's core: one writer thread in front of the ledger (group commit),
and subscribers told of every accepted record (push to peers, the view, the
log keeper). No gRPC here; services call into it.

Own issues pass a signing stage first (its own thread, `_sign_loop`): it
signs the next group's state-free own records (a payload type without an
`effect` check: marks, reassignments) ahead on the feed chain while the
writer writes and applies the current group, since Ed25519 signing releases
the GIL and the writer's view apply holds it. A record signed ahead lives only
in this process's memory until the writer's synced write: it is never stored,
sent or answered before that, so one the writer does not take (its chain
moved: an earlier record was refused, or a failure) is dropped and signed
again, and a crash leaves nothing signed that a restart could contradict."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future

from keys.consortium import Consortium, Policy
from keys.signing import SigningKey
from ledger.errors import (
    BadInput,
    BufferFull,
    IdempotencyConflict,
    LedgerError,
    NotAllowed,
    SequenceGap,
    StorageFailure,
    TooLarge,
)
from ledger.log import EquivocationProof, NodeLedger, Outcome
from ledger.record import Payload, Record
from ledger.store import Store
from node.answer import Answer, _Answers
from node.jobs import MAX_GROUP as MAX_GROUP  # re-exported: callers import it from here
from node.jobs import MAX_ISSUE_KEY as MAX_ISSUE_KEY
from node.jobs import Job, OwnIssue, check_key, gather, state_free
from node.signproc import SigningProcessFailed
from node.signrun import ProcessSigner, sign_run

log = logging.getLogger("markex.node")

# One member message (a push, a delivery, a pulled batch) holds at most this
# many envelopes, so no one message floods the single writer.
MAX_ENVELOPES_PER_MESSAGE = 1000
# Envelopes waiting for the writer at most: beyond it a caller waits for room
# (up to its timeout) and then gets BufferFull; nothing is dropped silently.
MAX_QUEUED_ENVELOPES = 20_000
# A stream held open (NodeCore.feeding) counts as feeding the writer only while it
# gave it work within this many seconds (queued a job, or a group was written).
FEED_IDLE_S = 1.0
# Groups the signing stage may hold signed ahead of the writer: one being
# written, these waiting; a bound on the work dropped when the chain moves.
SIGNED_AHEAD = 2
ISSUE_KEYS = "issuekeys"  # key -> content digest (32) || record id (32), with the record


def max_member_message_bytes(policy: Policy) -> int:
    """The largest member message (either way): a full batch of the largest
    envelopes the policy allows, with room for framing and small messages."""
    return MAX_ENVELOPES_PER_MESSAGE * (policy.max_envelope_bytes + 16) + (64 << 10)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class NodeCore:
    """Owns the ledger. Every write goes through one thread, which gathers
    whatever is queued into one atomic synced batch."""

    def __init__(
        self,
        store: Store,
        consortium: Consortium,
        participant_id: str,
        signer: SigningKey,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.consortium = consortium
        self.participant_id = participant_id
        self.clock = clock
        self.ledger = NodeLedger(store, consortium, participant_id, signer)
        self._q: queue.Queue[Job | list[Job] | None] = queue.Queue()
        self.max_queued = MAX_QUEUED_ENVELOPES
        self._queued = 0  # envelopes (an issue counts 1) in _q, under _room
        self._room = threading.Condition()
        self._subscribers: list[Callable[[list[Record]], None]] = []
        self._equivocation_subscribers: list[Callable[[EquivocationProof], None]] = []
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        # The signing stage's groups, in queue order, for the writer.
        self._signed: queue.Queue[list[Job] | None] = queue.Queue(SIGNED_AHEAD)
        self._signer = threading.Thread(target=self._sign_loop, name="ledger-signer",
                                        daemon=True)
        self._pipe = threading.Condition()  # guards _sent, _written, _inflight
        self._sent = 0  # groups handed to the writer
        self._written = 0  # groups the writer finished (written, refused or failed)
        self._inflight: dict[bytes, Job] = {}  # key -> its job signed ahead, until written
        self._broken = False  # the writer did not take a record as signed ahead
        # Runs of MIN_RUN own records or more are signed in a child process
        # (node/signproc.py), started at the first IssueMany or such run.
        self.signing = ProcessSigner(self.ledger)
        self._stopped = False
        self._in_group = False  # the writer is processing a group (read by `busy`)
        self._feeds = 0  # streams feeding the writer now (`feeding`), under _room
        self._worked_at = 0.0  # when work was last queued or a group written (monotonic)
        # Told each record's status, its error class (if any), its claimed
        # issuer (None when it did not parse) and how many records in a row
        # had these three (in log order): the node's metrics and log counts.
        self.observer: Callable[[str, str | None, str | None, int], None] | None = None
        # Set once when a write fails: from then on nothing is written or acknowledged.
        self.failure: StorageFailure | None = None
        self._failure_subscribers: list[Callable[[StorageFailure], None]] = []

    def start(self) -> None:
        self._signer.start()
        self._thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._q.put(None)  # the signer hands it on to the writer
        for t in (self._signer, self._thread):
            if t.ident is not None:  # started
                t.join(timeout=10)
        self.signing.close()

    def subscribe(self, fn: Callable[[list[Record]], None]) -> None:
        """fn(accepted records in log order) runs on the writer thread after each
        commit, before the commit's callers are answered."""
        self._subscribers.append(fn)

    def on_equivocation(self, fn: Callable[[EquivocationProof], None]) -> None:
        self._equivocation_subscribers.append(fn)

    def on_failure(self, fn: Callable[[StorageFailure], None]) -> None:
        """fn(the failure) runs once, on the writer thread, when a write fails."""
        self._failure_subscribers.append(fn)

    def _refuse_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    # ------------------------------------------------------------ API
    def issue(
        self, payload: Payload, timeout: float = 30, *, wait_for_target: bool = False
    ) -> Outcome:
        """Sign and append one own record. Raises its LedgerError when it is
        refused (also when it can change nothing: `NodeLedger.check_effect`;
        a correction of a target not seen yet only with `wait_for_target`),
        and StorageFailure (for good) once a write has failed."""
        out: Outcome = self.issue_async(
            payload, wait=timeout, wait_for_target=wait_for_target
        ).result(timeout)
        if out.error is not None:
            raise out.error
        return out

    def issue_async(
        self,
        payload: Payload,
        *,
        wait: float = 30,
        wait_for_target: bool = False,
        key: bytes = b"",
        digest: bytes = b"",
    ) -> Future:
        """Queue one own record for the writer (issues queued together share
        one group commit); the future's result is its Outcome (a refusal is
        an Outcome with its error). With an idempotency `key` (<= 128 bytes)
        and the `digest` (32 bytes) of the content it names: a key this
        participant issued before gives that record's Outcome with status
        "duplicate" and issues nothing, or IdempotencyConflict when the digest
        differs; a new key is written in the record's own atomic batch."""
        check_key(key, digest)
        self._refuse_if_failed()
        fut: Future = Future()
        job = Job("issue", payload, (), fut, "self", wait_for_target, key, digest)
        self._enqueue(job, wait)
        return fut

    def issue_many_async(self, issues: Sequence[OwnIssue], *, wait: float = 30) -> list[Answer]:
        """`issue_async` of each of `issues`, queued in one step (one lock and
        one wake-up for them all: a bulk caller's cost an item stays small),
        in their order; each has an Answer (a Future's result, exception and
        done; the Answers of one call share one lock). An issue refused
        before it is queued (its key) has an answer holding its BadInput.
        When the queue has no room for them all within `wait` seconds this
        raises BufferFull and queues none; StorageFailure once a write has
        failed."""
        self._refuse_if_failed()
        shared = _Answers()
        futs: list[Answer] = []
        jobs: list[Job] = []
        for it in issues:
            fut = Answer(shared)
            futs.append(fut)
            try:
                check_key(it.key, it.digest)
            except BadInput as e:
                fut.set_exception(e)
                continue
            jobs.append(Job("issue", it.payload, (), fut, "self", it.wait_for_target, it.key,
                             it.digest))
        if jobs:
            self._enqueue(jobs, wait)
        return futs

    def add_equivocation(self, proof: EquivocationProof, timeout: float = 30) -> bool:
        """Check and keep a peer's equivocation proof (on the writer thread,
        since it freezes a feed). True when it was new."""
        self._refuse_if_failed()
        fut: Future = Future()
        self._enqueue(Job("equivocation", proof, (), fut, "peer"), timeout)
        return fut.result(timeout)

    def submit(self, envelopes: Sequence[bytes], source: str, timeout: float = 60) -> list[Outcome]:
        return self.submit_async(envelopes, source, wait=timeout).result(timeout)

    def submit_async(
        self,
        envelopes: Sequence[bytes],
        source: str,
        wait: float = 0,
        *,
        verified: Mapping[bytes, Record] | None = None,
    ) -> Future:
        """Queue envelopes for the writer; the future's result is their
        Outcomes. Jobs are written in the order they were queued.
        `verified`: those of them this process has parsed and signature-checked
        against the consortium, by record id (node/pullpipe.py): the writer
        does not check their signatures again, every other check. When the
        queue is full this waits up to `wait` seconds for room, then raises
        BufferFull; more than MAX_ENVELOPES_PER_MESSAGE at once is TooLarge.
        Raises StorageFailure once a write has failed."""
        if len(envelopes) > MAX_ENVELOPES_PER_MESSAGE:
            raise TooLarge(
                f"{len(envelopes)} envelopes in one message; at most {MAX_ENVELOPES_PER_MESSAGE}"
            )
        self._refuse_if_failed()
        fut: Future = Future()
        job = Job("submit", None, list(envelopes), fut, source, verified=verified or {})
        self._enqueue(job, wait)
        return fut

    @staticmethod
    def _cost(job: Job) -> int:
        return max(1, len(job.envelopes))

    def _enqueue(self, job: Job | list[Job], wait: float) -> None:
        """Queue one job, or a list of them as one entry (taken whole, in order)."""
        cost = sum(map(self._cost, job)) if isinstance(job, list) else self._cost(job)
        deadline = time.monotonic() + wait
        with self._room:
            while self._queued + cost > self.max_queued:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BufferFull(
                        f"the writer queue is full ({self._queued} envelopes waiting, at most "
                        f"{self.max_queued}); try again later"
                    )
                self._room.wait(left)
            self._queued += cost
            self._worked_at = time.monotonic()
            self._q.put(job)

    def _taken(self, jobs: list[Job]) -> None:
        """The writer took `jobs` off the queue: their room is free again
        (one lock and one wake-up a group, not one an item)."""
        with self._room:
            self._queued -= sum(self._cost(j) for j in jobs)
            self._room.notify_all()

    @property
    def queued(self) -> int:
        """Envelopes waiting for the writer now."""
        return self._queued

    @property
    def busy(self) -> bool:
        """The writer has work now (a group in process, jobs queued, or a
        stream feeding it: `fed`): the node's background work (the screen's
        rows) rests meanwhile, since every thread of the process shares one GIL."""
        return self._in_group or self._queued > 0 or self.fed

    @property
    def fed(self) -> bool:
        """A stream feeds the writer now (`feeding`) and gave it work within
        FEED_IDLE_S: more work follows the queued work, also when the queue is
        empty between its batches; a stream held open with nothing to write
        (an idle IssueMany, a trickling Pull) is not feeding."""
        return self._feeds > 0 and time.monotonic() - self._worked_at < FEED_IDLE_S

    @contextlib.contextmanager
    def feeding(self) -> Iterator[None]:
        """Held by a caller that feeds the writer a stream of batches (a
        catch-up's pulled batches, an IssueMany import) for as long as it
        does: `busy` and `fed` hold meanwhile."""
        with self._room:
            self._feeds += 1
        try:
            yield
        finally:
            with self._room:
                self._feeds -= 1

    # ------------------------------------------------------------ signer
    def _sign_loop(self) -> None:
        """Take the queued jobs in order, a group at a time, sign what may be
        signed ahead, and hand each group on to the writer."""
        tail: tuple[int, bytes] | None = None  # the own chain's end after the groups handed on
        while True:
            got = self._q.get()
            if got is None:
                self._signed.put(None)
                return
            jobs = got if isinstance(got, list) else [got]
            gather(self._q, jobs)
            if self.failure is None:
                if tail is None or self._broken:
                    # Where the chain ends is known once the writer is done with
                    # every group before this one.
                    self._wait_written()
                    self._broken = False
                    own = self.ledger.feed(self.participant_id)
                    tail = (own.seq, own.head_id)
                try:
                    tail = self._sign_ahead(jobs, tail)
                except Exception:  # a bug: the writer signs these itself
                    log.exception("signing ahead failed")
                    tail = None
            with self._pipe:
                self._sent += 1
            self._signed.put(jobs)

    def _wait_written(self) -> None:
        with self._pipe:
            while self._written < self._sent:
                self._pipe.wait()

    def _sign_ahead(self, jobs: list[Job], tail: tuple[int, bytes]) -> tuple[int, bytes] | None:
        """Sign the state-free own issues of `jobs` from `tail` on, up to the
        first job whose checks read state (a correction, a preference, ...)
        or may freeze the feed (an equivocation proof); the writer does
        those and all after them. Returns the chain's end after `jobs`, or
        None when it is known only once the writer has written them. A run
        of MIN_RUN or more is signed by the signing process (node/signrun.py,
        the same answers), fewer here."""
        proc = self.signing.for_run(jobs)
        if proc is not None:
            with self._pipe:  # read before the store is (sign_run): a key written
                flying = {j.key: f for j in jobs  # meanwhile is then in one of the two
                          if j.key and (f := self._inflight.get(j.key)) is not None}
            try:
                got = sign_run(self.ledger, proc, jobs, tail, self.clock(), flying,
                               self._key_answer)
            except SigningProcessFailed as e:
                self.signing.failed(e)
                for j in jobs:  # nothing of it was signed: the group is signed here
                    j.rec = j.first = j.held = None
                got = None
            if got is not None:
                done, whole = got
                self.signing.signed += len(done)
                with self._pipe:
                    for j in done:
                        if j.key:
                            self._inflight[j.key] = j
                if not whole:
                    return None
                last = done[-1].rec if done else None
                return tail if last is None else (last.seq, last.id)
        return self._sign_each(jobs, tail)

    def _sign_each(self, jobs: list[Job], tail: tuple[int, bytes]) -> tuple[int, bytes] | None:
        """`_sign_ahead` on this thread, one record at a time."""
        led = self.ledger
        seq, head = tail
        now = self.clock()
        for job in jobs:
            if job.kind == "submit":
                continue  # a peer's records: they do not move this node's own chain
            if not state_free(job) or led.feed(self.participant_id).frozen_at is not None:
                return None
            if job.key:
                with self._pipe:
                    first = self._inflight.get(job.key)
                if first is not None:  # answered by the writer once the first is
                    job.first = first  # (same content: its record; other: a conflict)
                    continue
                # Not in flight: issued before (written, so the store has it) or new.
                held = self._issued_key(job, {})
                assert not isinstance(held, Job)  # asked with no group of its own
                if held is not None:
                    job.held = held
                    continue
            try:
                rec = Record.issue(
                    led.signer, self.participant_id, seq + 1, head, now, job.payload,  # type: ignore[arg-type]
                    consortium=led.consortium.name,
                )
                led.check_payload(rec, now)
            except LedgerError as e:
                job.held = Outcome("rejected", error=e)  # it takes no seq: the chain goes on
                continue
            job.rec = rec
            seq, head = rec.seq, rec.id
            if job.key:
                with self._pipe:
                    self._inflight[job.key] = job
        return seq, head

    # ------------------------------------------------------------ writer
    def _run(self) -> None:
        while True:
            jobs = self._signed.get()
            if jobs is None:
                return
            groups = 1 + gather(self._signed, jobs)  # the signer's groups waiting: one commit
            self._in_group = True
            try:
                self._write_group(jobs)
            finally:
                self._in_group = False
                self._worked_at = time.monotonic()
                with self._pipe:
                    for j in jobs:  # written (visible to the store's readers) or failed
                        if j.rec is not None and self._inflight.get(j.key) is j:
                            del self._inflight[j.key]
                    self._written += groups
                    self._pipe.notify_all()

    def _write_group(self, jobs: list[Job]) -> None:
        self._taken(jobs)
        if self.failure is not None:
            self._fail(jobs, self.failure)
            return
        try:
            self._process(jobs)
        except StorageFailure as e:
            # Nothing of this group is durable, and the store may hold it
            # unsynced: stop writing, so nothing unsynced is ever acknowledged.
            log.critical("ledger write failed; the node stops writing: %s", e)
            msg = str(e) if "restart the node" in str(e) else f"{e}; restart the node"
            self.failure = StorageFailure(msg)
            self._fail(jobs, self.failure)
            for fn in self._failure_subscribers:
                try:
                    fn(self.failure)
                except Exception:
                    log.exception("failure subscriber failed")
        except Exception as e:  # a bug, not the disk: fail this group only
            log.exception("ledger write failed")
            self._fail(jobs, e)

    @staticmethod
    def _fail(jobs: list[Job], err: Exception) -> None:
        for j in jobs:
            if not j.future.done():
                j.future.set_exception(err)

    def _process(self, jobs: list[Job]) -> None:
        now = self.clock()
        led = self.ledger
        envs: list[bytes] = []
        spans: list[tuple[Job, int, int]] = []
        own = led.feed(self.participant_id)
        seq, head = own.seq, own.head_id
        fresh: list[Record] = []  # own records signed in this group, for check_effect
        keyed: dict[bytes, tuple[bytes, Job]] = {}  # key -> (digest, its job) in this group
        again: list[tuple[Job, Job]] = []  # (a repeat, the job of the key's first issue)
        extra: dict[bytes, list[tuple[str, bytes, bytes]]] = {}  # record id -> its key's put
        # Own records signed here skip submit's parse and signature check, but
        # the group's first: one verification a group still proves the key right.
        signed: dict[bytes, Record] = {}
        verified: dict[bytes, Record] = {}  # peers' records checked ahead (submit_async)
        for job in jobs:
            start = len(envs)
            if job.kind == "equivocation":
                try:
                    new = led.add_equivocation_proof(job.payload)  # type: ignore[arg-type]
                except StorageFailure:
                    raise  # the writer stops (see _run)
                except LedgerError as e:
                    job.future.set_exception(e)
                    continue
                job.future.set_result(new)
                if new:
                    for fn in self._equivocation_subscribers:
                        fn(job.payload)  # type: ignore[arg-type]
                continue
            if job.kind == "issue":
                assert job.payload is not None
                if job.held is not None:  # the signing stage answered it
                    job.future.set_result(job.held)
                    continue
                if job.first is not None:  # its key's first issue is this or an earlier group
                    again.append((job, job.first))
                    continue
                rec = job.rec
                if rec is not None and (rec.seq != seq + 1 or rec.prev_id != head):
                    # Signed ahead on a chain that has moved since (an earlier
                    # record was refused): dropped unseen, signed again below.
                    rec = None
                    self._broken = True
                if job.key and job.rec is None:
                    first = self._issued_key(job, keyed)
                    if isinstance(first, Job):
                        again.append((job, first))
                        continue
                    if first is not None:
                        job.future.set_result(first)
                        continue
                try:
                    if own.frozen_at is not None:
                        raise NotAllowed("this participant's own feed is frozen")
                    if rec is None:
                        rec = Record.issue(
                            led.signer,
                            self.participant_id,
                            seq + 1,
                            head,
                            now,
                            job.payload,
                            consortium=led.consortium.name,
                        )
                        # just signed here: submit() verifies the group's first signature
                        led.check_payload(rec, now)
                        led.check_effect(rec, wait_for_target=job.wait_for_target, fresh=fresh)
                    # (one signed ahead is state-free: its payload type has no effect check)
                except LedgerError as e:
                    job.future.set_result(Outcome("rejected", error=e))
                    continue
                if fresh:
                    signed[rec.id] = rec
                fresh.append(rec)
                seq, head = rec.seq, rec.id
                envs.append(rec.envelope)
                if job.key:
                    keyed[job.key] = (job.digest, job)
                    extra[rec.id] = [(ISSUE_KEYS, job.key, job.digest + rec.id)]
            else:
                envs.extend(job.envelopes)
                verified.update(job.verified)
            spans.append((job, start, len(envs)))
        result = led.submit(envs, now, extra=extra, signed=signed, verified=verified)
        outcomes = result.outcomes
        # The subscribers (the view first) run before anyone is answered, so a
        # record acknowledged by this node is also in this node's view: an
        # appeal filed here is found by the page the holder is sent to next.
        for proof in result.equivocations:
            for fn in self._equivocation_subscribers:
                try:
                    fn(proof)
                except Exception:
                    log.exception("equivocation subscriber failed")
        if result.accepted:
            for fn in self._subscribers:
                try:
                    fn(result.accepted)
                except Exception:
                    log.exception("subscriber failed")
        if self.observer is not None:
            self._observe(self.observer, outcomes)
        broken = False
        for job, a, b in spans:
            if job.kind != "issue":
                job.future.set_result(outcomes[a:b])
                continue
            out = outcomes[a]  # an issue's span is its one record
            if isinstance(out.error, SequenceGap):
                # Chained to an own record of this group that was refused: this one
                # wrote nothing, and is signed again behind the queue.
                self._requeue(job)
                continue
            if job.rec is not None and out.status != "accepted":
                broken = True  # a record signed ahead was refused: later ones name it
            job.future.set_result(out)
        if broken:
            self._broken = True
        for job, first in again:  # a key repeated in flight: what its first issue became
            if not first.future.done():  # the first was queued again: so is this one
                self._requeue(job)
                continue
            exc = first.future.exception(0)
            if exc is not None:
                job.future.set_exception(exc)
                continue
            out = first.future.result(0)
            if out.status in ("accepted", "duplicate"):
                if first.digest != job.digest:
                    out = Outcome("rejected", error=self._conflict(job.key))
                elif out.status == "accepted":
                    out = Outcome("duplicate", out.record, out.index)
            elif first.digest != job.digest:  # the key's first wrote nothing: this is new
                self._requeue(job)
                continue
            job.future.set_result(out)  # the same content, refused the same way

    @staticmethod
    def _observe(observer: Callable[[str, str | None, str | None, int], None],
                 outcomes: list[Outcome]) -> None:
        """Tell `observer` the outcomes in order, a run of alike ones (status,
        error class, issuer) at once: one call (a metric's label lookup and
        lock) a run, not one a record."""
        run: tuple[str, str | None, str | None] | None = None
        n = 0
        for o in outcomes:
            key = (o.status, None if o.error is None else type(o.error).__name__,
                   None if o.record is None else o.record.issuer)
            if key == run:
                n += 1
                continue
            if run is not None:
                observer(*run, n)
            run, n = key, 1
        if run is not None:
            observer(*run, n)

    def _requeue(self, job: Job) -> None:
        """Queue an own issue again (on the writer thread, so without waiting
        for room): its record, if signed, was never written."""
        job.rec = job.first = job.held = None
        with self._pipe:  # no longer in flight: signed again, it must not find itself
            if job.key and self._inflight.get(job.key) is job:  # its key's first (the review)
                del self._inflight[job.key]
        with self._room:
            self._queued += self._cost(job)
        self._q.put(job)

    def _issued_key(
        self, job: Job, keyed: dict[bytes, tuple[bytes, Job]]
    ) -> Outcome | Job | None:
        """The answer of an issue whose key was issued before: the first
        record as a duplicate (or IdempotencyConflict), the job of the key's
        first issue when it is in this group, or None when the key is new."""
        held = keyed.get(job.key)
        if held is not None:
            return held[1]  # its answer waits for the first's (a conflict only if it is issued)
        return self._key_answer(job, self.ledger.store.get(ISSUE_KEYS, job.key))

    def _key_answer(self, job: Job, v: bytes | None) -> Outcome | None:
        """`_issued_key`'s answer from the key's stored value `v` (None: new)."""
        if v is None:
            return None
        if v[:32] != job.digest:
            return Outcome("rejected", error=self._conflict(job.key))
        found = self.ledger.record_by_id(v[32:])
        if found is None:
            raise StorageFailure(f"idempotency key {job.key!r} names a missing record")
        return Outcome("duplicate", Record.from_envelope(found[1]), found[0])

    def _conflict(self, key: bytes) -> IdempotencyConflict:
        return IdempotencyConflict(
            f"the idempotency key {key.decode('utf-8', 'replace')!r} was issued before "
            f"with different content; nothing was issued"
        )
