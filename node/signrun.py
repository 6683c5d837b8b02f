"""A group's own records signed by the node's signing process
(node/signproc.py) instead of on the signing stage's thread (node/core.py
`_sign_ahead`), with the same answers: the same checks, in the same order,
decide which records take a seq, and the chain (seq, prev id) is the one
the stage's own loop would make. What differs is only where Ed25519 runs,
and that a Mark's or a Reassignment's Record is put together from the parts
the stage already holds (its payload object round-trips through its field's
bytes: tests/test_signproc.py) instead of parsed back from the envelope."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from ledger import recordbytes
from ledger.errors import LedgerError
from ledger.log import NodeLedger, Outcome
from ledger.payloads import type_of
from ledger.record import MAX_ISSUER, Mark, Reassignment, Record
from markex.v1 import record_pb2 as pb
from node.jobs import Job, state_free
from node.signproc import SigningProcess, SigningProcessFailed

log = logging.getLogger("markex.node")

# Own records in a group from which the signing process signs them (fewer:
# the stage's thread, as a unary issue's).
MIN_RUN = 64
FIRST_WAIT_S = 2.0  # how long a run may wait for the process it started
_FROM_PARTS = (Mark, Reassignment)


class ProcessSigner:
    """A NodeCore's signing process, started on demand (`prepare`, or the
    first group with a run of MIN_RUN own issues) and used once it is ready;
    after a failure the signing stage signs on its own thread for good."""

    def __init__(self, ledger: NodeLedger) -> None:
        self.ledger = ledger
        self.enabled = ledger.signer is not None  # False: never start one (tests compare)
        self._proc: SigningProcess | None = None
        self._lock = threading.Lock()
        self.signed = 0  # records the process signed (metrics, tests)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return None if proc is None else proc.pid

    def prepare(self) -> None:
        """Start the process now (without waiting for it): a bulk stream
        begins (node/bulkissue.py), so its first group finds it (nearly) ready."""
        self._started()

    def wait_ready(self, timeout: float) -> bool:
        """Start the process and wait up to `timeout` seconds until it is ready."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self._started()
            try:
                if proc is not None and proc.ready():
                    return True
            except SigningProcessFailed as e:
                self.failed(e)
                return False
            if proc is None or time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def _started(self) -> SigningProcess | None:
        with self._lock:
            if self._proc is None and self.enabled:
                assert self.ledger.signer is not None
                proc = SigningProcess(self.ledger.signer.seed(), self.ledger.context)
                try:
                    proc.start()
                except OSError as e:
                    self._fail(e)
                    return None
                self._proc = proc
            return self._proc

    def for_run(self, jobs: list[Job]) -> SigningProcess | None:
        """The process for a group holding MIN_RUN own issues or more, once
        it is ready (a group in its first FIRST_WAIT_S waits for it: the
        stage signing the group itself would hold the GIL longer than the
        wait); None (the stage signs itself) for a smaller group, or later
        while it starts."""
        if not self.enabled or sum(1 for j in jobs if j.kind == "issue") < MIN_RUN:
            return None
        proc = self._started()
        try:
            while proc is not None and not proc.ready():
                if time.monotonic() - proc.started_at > FIRST_WAIT_S:
                    return None
                time.sleep(0.005)
            return proc
        except SigningProcessFailed as e:
            self.failed(e)
            return None

    def failed(self, why: Exception) -> None:
        """The process failed: end it; from now on the stage signs itself."""
        with self._lock:
            self._fail(why)

    def _fail(self, why: Exception) -> None:
        log.warning("%s; the signing stage signs on its own thread from now on", why)
        self.enabled = False
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.close()

    def close(self) -> None:
        with self._lock:
            self.enabled = False
            proc, self._proc = self._proc, None
        if proc is not None:
            proc.close()


def payload_field(payload: object) -> bytes:
    """The body's payload field: tag, length and the payload's message bytes."""
    msg = pb.Record()
    getattr(msg, type_of(payload).field).CopyFrom(payload.to_pb())  # type: ignore[attr-defined]
    return msg.SerializeToString()


def sign_run(
    ledger: NodeLedger,
    proc: SigningProcess,
    jobs: list[Job],
    tail: tuple[int, bytes],
    now: int,
    flying: Mapping[bytes, Job],
    key_answer: Callable[[Job, bytes | None], Outcome | None],
) -> tuple[list[Job], bool] | None:
    """Sign the state-free own issues of `jobs` from `tail` on, up to the
    first job that is not (as `NodeCore._sign_ahead`): each job gets its
    `rec`, `held` or `first`. `flying`: the keys in flight when the group
    was taken (read before the store is); `key_answer(job, stored value)`:
    a key's answer from its stored value. Returns (the jobs signed, in
    order; whether every job was looked at), or None when nothing was
    decided and the caller signs the group itself (the issuer's id or the
    time is one a record may not hold, for the ordinary path's error)."""
    pid = ledger.participant_id
    who = pid.encode()
    if now <= 0 or not 0 < len(pid) <= MAX_ISSUER:
        return None
    seq, head = tail
    keys = [j.key for j in jobs if j.kind == "issue" and j.key and j.key not in flying]
    ask = list(dict.fromkeys(keys))
    stored = dict(zip(ask, ledger.store.get_many("issuekeys", ask), strict=True))
    mine: dict[bytes, Job] = {}
    run: list[Job] = []
    fields: list[bytes] = []
    whole = True
    for job in jobs:
        if job.kind == "submit":
            continue  # a peer's records: they do not move this node's own chain
        if not state_free(job) or ledger.feed(pid).frozen_at is not None:
            whole = False
            break
        if job.key:
            first = mine.get(job.key) or flying.get(job.key)
            if first is not None:  # answered by the writer once the first is
                job.first = first
                continue
            held = key_answer(job, stored.get(job.key))
            if held is not None:
                job.held = held
                continue
        n = seq + 1 + len(run)
        refusal: LedgerError | None = None
        try:
            ledger.check_fields(pid, n, now, job.payload, now)  # type: ignore[arg-type]
        except LedgerError as e:
            refusal = e
        try:
            if refusal is not None:
                # The ordinary path signs first and parses back, then checks:
                # a record refused by both is refused for what the parse says.
                job.held = Outcome("rejected", error=_parse_error(ledger, job, n, now) or refusal)
                continue
            fields.append(payload_field(job.payload))
        except Exception:  # a bug: the writer signs this one and the rest itself
            log.exception("signing ahead failed")
            whole = False
            break
        run.append(job)
        if job.key:
            mine[job.key] = job
    if not run:
        return [], whole
    envelopes = proc.sign(pid, seq + 1, head, now, fields)
    recs: list[Record] = []
    body_head = recordbytes.head_writer(who, now)
    for job, field, env in zip(run, fields, envelopes, strict=True):
        seq += 1
        rec = _record(ledger, body_head(seq, head) + field, seq, head, now, job, env)
        if rec is None:  # never for a Mark or Reassignment: the writer signs it and the rest
            whole = False
            break
        recs.append(rec)
        head = rec.id
    for job, rec in zip(run, recs, strict=False):  # only once every one is checked
        job.rec = rec
    return run[:len(recs)], whole


def _record(ledger: NodeLedger, body: bytes, seq: int, prev: bytes, now: int, job: Job,
            env: bytes) -> Record | None:
    """The Record of envelope `env` the process signed at `seq` after `prev`,
    checked to hold `body`, the one asked for; None when it does not parse."""
    n = len(env) - 66
    if env[n:n + 2] != b"\x12\x40" or env[:n] != b"\x0a" + recordbytes.varint(len(body)) + body:
        raise SigningProcessFailed(f"the signing process answered another record at seq {seq}")
    if type(job.payload) in _FROM_PARTS:
        return Record(ledger.participant_id, seq, prev, now, job.payload, body,  # type: ignore[arg-type]
                      env[n + 2:], env, recordbytes.record_id(env))
    try:
        return Record.from_envelope(env)
    except LedgerError:
        return None


def _parse_error(ledger: NodeLedger, job: Job, seq: int, now: int) -> LedgerError | None:
    """What signing and parsing the record back raises (`Record.issue`), if
    anything: the error a refused record gets first on the ordinary path."""
    assert ledger.signer is not None
    try:
        Record.issue(ledger.signer, ledger.participant_id, seq, b"\x00" * 32 if seq > 1 else b"",
                     now, job.payload, consortium=ledger.consortium.name)  # type: ignore[arg-type]
    except LedgerError as e:
        return e
    return None
