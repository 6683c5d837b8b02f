"""Bulk issue: Admin.IssueMany's items turned into payloads and queued for the
writer many at a time (so they share its group commits), and one result per
item sent back in the items' order (docs/import.md).

An item's content digest, which its idempotency key is held to, is SHA-256
over the item's deterministic protobuf bytes with the key cleared and its
number in E.164: the same item sent again (by a rerun of the same file) has
the same digest on any day, so its key returns the first record; the same
key with any other content is an IdempotencyConflict.

A new payload kind is one builder in `BUILDERS` (the oneof field's name ->
a function of the item and the node's core) and one entry in the proto's
IssueItem oneof; the unary Issue* RPCs build theirs with the same builders
(node/services.py AdminService._issue), so a request is one record either way."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc

from keys import KeysError
from ledger.errors import (
    LedgerError,
    MalformedRecord,
    MembersKeyMissing,
    StorageFailure,
    TooLarge,
)
from ledger.numbers import normalize
from ledger.payloads.line import MarketerLine
from ledger.payloads.preference import Preference
from ledger.record import (
    RECATEGORIZE,
    REJECT,
    UPHOLD,
    WITHDRAW,
    Correction,
    Mark,
    Payload,
    Reassignment,
    Record,
)
from ledger.recordbytes import varint
from ledger.view.facts import appealed
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from node import complaintservice
from node.answer import Answer
from node.core import NodeCore, OwnIssue
from node.status import code_for, detail_for

log = logging.getLogger("markex.rpc")

WINDOW = 4000  # items of one stream queued for the writer at once (or answered, not yet sent)
MAX_BATCH = 1000  # items in one IssueBatch
ENQUEUE_WAIT = 30.0  # seconds one item waits for room in the writer's queue

_ACTIONS = {
    rpb.CORRECTION_ACTION_WITHDRAW: WITHDRAW,
    rpb.CORRECTION_ACTION_RECATEGORIZE: RECATEGORIZE,
    rpb.CORRECTION_ACTION_UNSPECIFIED: "",
}
_OUTCOMES = {
    rpb.APPEAL_OUTCOME_UPHOLD: UPHOLD,
    rpb.APPEAL_OUTCOME_REJECT: REJECT,
    rpb.APPEAL_OUTCOME_UNSPECIFIED: "",
}


@dataclass(frozen=True)
class Built:
    """An item made ready to issue: its payload, and how the node treats it."""

    payload: Payload
    appeal: bool = False
    wait_for_target: bool = False


def _mark(item: pb.IssueItem, core: NodeCore) -> Built:
    m = item.mark
    observed = m.observed_at_ms or core.clock()
    expires = m.expires_at_ms
    if not expires and item.expires_after_ms:
        expires = observed + item.expires_after_ms
    return Built(Mark(number=m.number, category=m.category, score=m.score, reports=m.reports,
                      observed_at_ms=observed, expires_at_ms=expires,
                      evidence_digest=m.evidence_digest))


def _correction(item: pb.IssueItem, core: NodeCore) -> Built:
    r = item.correction
    if r.action not in _ACTIONS or r.outcome not in _OUTCOMES:
        raise MalformedRecord("unknown correction action or outcome")
    c = Correction(targets=tuple(r.targets), action=_ACTIONS[r.action], category=r.category,
                   reason=r.reason, appeal_id=r.appeal_id, outcome=_OUTCOMES[r.outcome])

    def mark_issuer(t: bytes) -> str | None:
        found = core.ledger.record_by_id(t)
        rec = None if found is None else Record.from_envelope(found[1])
        return rec.issuer if rec is not None and isinstance(rec.payload, Mark) else None

    # The view's rule: a correction of another participant's mark is an appeal.
    appeal = bool(appealed(core.participant_id, c, mark_issuer))
    return Built(c, appeal, r.wait_for_target)


def _reassignment(item: pb.IssueItem, core: NodeCore) -> Built:
    r = item.reassignment
    return Built(Reassignment(number=r.number, effective_at_ms=r.effective_at_ms))


def _preference(item: pb.IssueItem, core: NodeCore) -> Built:
    r = item.preference
    key = core.consortium.members_key
    if key is None:
        raise MembersKeyMissing(
            f"node {core.participant_id} holds no members' key, so it cannot seal a "
            "subscriber's number (node.toml: members_key)"
        )
    return Built(Preference(
        subscriber=key.seal(normalize(r.number)), key_id=key.id, refuse=tuple(r.refuse),
        modes=tuple(r.modes), allowed=tuple((b.start_minute, b.end_minute) for b in r.allowed),
        days=tuple(r.days), effective_from_ms=r.effective_from_ms, until_ms=r.until_ms,
    ))


def _line(item: pb.IssueItem, core: NodeCore) -> Built:
    r = item.line
    return Built(MarketerLine(number=r.number, prefix=r.prefix, enterprise=r.enterprise,
                              uscc=r.uscc, industry=r.industry, deregisters=r.deregisters))


def _complaint(item: pb.IssueItem, core: NodeCore) -> Built:
    # The same Complaint the unary IssueComplaint signs: the complainant sealed
    # with the members' key, the description kept as its SHA-256 only.
    return Built(complaintservice.complaint_of(core.consortium, item.complaint))


def _handling(item: pb.IssueItem, core: NodeCore) -> Built:
    return Built(complaintservice.handling_of(item.handling))


def _sanction(item: pb.IssueItem, core: NodeCore) -> Built:
    s = item.sanction
    if not s.listed_at_ms:  # 0: it takes effect when the node signs it, as a mark's time
        s = rpb.Sanction()
        s.CopyFrom(item.sanction)
        s.listed_at_ms = core.clock()
    return Built(complaintservice.sanction_of(s))


# The IssueItem oneof's field -> its builder (raises the payload's typed error).
BUILDERS: dict[str, Callable[[pb.IssueItem, NodeCore], Built]] = {
    "mark": _mark,
    "correction": _correction,
    "reassignment": _reassignment,
    "preference": _preference,
    "line": _line,
    "complaint": _complaint,
    "handling": _handling,
    "sanction": _sanction,
}


def content_digest(item: pb.IssueItem) -> bytes:
    """SHA-256 of the item as sent, without its key and with its number in
    E.164 (so "13812345678" and "+8613812345678" are the same content).
    The item is changed for the hash and put back as it was (no copy of it)."""
    kind = item.WhichOneof("payload")
    if kind == "mark":
        fast = _mark_digest(item)
        if fast is not None:
            return fast
    sub = getattr(item, kind) if kind else None
    saved: list[tuple[Any, str, Any]] = []  # (message, field, value as sent), put back after

    def put(msg: Any, name: str, value: Any) -> None:
        saved.append((msg, name, getattr(msg, name)))
        setattr(msg, name, value)

    try:
        put(item, "key", b"")
        if kind in ("mark", "reassignment", "preference") or (kind == "line" and
                                                               not item.line.prefix):
            with contextlib.suppress(LedgerError):  # the builder refuses it with its sentence
                put(sub, "number", normalize(sub.number))  # type: ignore[union-attr]
        if kind == "complaint":  # its number and its complainant's, whichever way written
            with contextlib.suppress(LedgerError):
                put(item.complaint, "number", normalize(item.complaint.number))
            with contextlib.suppress(LedgerError):
                put(item.complaint, "complainant", normalize(item.complaint.complainant))
        return hashlib.sha256(item.SerializeToString(deterministic=True)).digest()
    finally:
        for msg, name, value in reversed(saved):
            setattr(msg, name, value)


def _mark_digest(item: pb.IssueItem) -> bytes | None:
    """`content_digest` of a mark item whose number is E.164 already (an
    import's, mostly), without changing the item: the key is field 1, so
    the item's bytes with the key cleared are its bytes after the key's
    field. None when the bytes do not start so (the general path then)."""
    number = item.mark.number
    try:
        if normalize(number) != number:
            return None
    except LedgerError:
        return None
    data = item.SerializeToString(deterministic=True)
    key = item.key
    if key:
        head = b"\x0a" + varint(len(key)) + key
        if not data.startswith(head):
            return None
        data = data[len(head):]
    return hashlib.sha256(data).digest()


def refused(n: int, e: Exception) -> pb.IssueResult:
    """The result of item n refused with `e` (its status code name and sentence)."""
    if isinstance(e, LedgerError | KeysError):
        return pb.IssueResult(item=n, code=code_for(e).name, error=detail_for(e))
    if isinstance(e, ValueError):
        return pb.IssueResult(item=n, code=grpc.StatusCode.INVALID_ARGUMENT.name,
                              error=f"BadInput: {e}")
    log.exception("bulk item %d failed", n, exc_info=e)
    return pb.IssueResult(item=n, code=grpc.StatusCode.INTERNAL.name,
                          error=f"{type(e).__name__}: {e}")


def _done(result: pb.IssueResult) -> Future:
    fut: Future = Future()
    fut.set_result(result)
    return fut


_Slot = tuple[int, Built | None, Future | Answer]  # (item n, its build, its answer)
_PENDING: Future = Future()  # a built item's place until its batch is queued (`_queue`)


class BulkIssuer:
    """Runs one IssueMany stream against the node's core (its caller is
    already checked: the node's own participant, the issue gate open)."""

    def __init__(self, core: NodeCore, refusal: Callable[[], str | None] = lambda: None,
                 window: int = WINDOW) -> None:
        self.core = core
        self.refusal = refusal  # why the node may not sign now (the issue gate), or None
        self.window = window  # items queued for the writer (or answered, not sent) at once

    def _build(self, n: int, item: pb.IssueItem) -> tuple[Built, OwnIssue] | pb.IssueResult:
        """Item n made ready to queue (its payload built, its digest taken, here
        on the stream's reader thread, not the writer's), or its result when
        it is refused before the writer sees it."""
        kind = item.WhichOneof("payload")
        try:
            if kind is None:
                raise MalformedRecord("an item with no payload (mark, correction, reassignment, "
                                      "preference, line, complaint, handling or sanction)")
            built = BUILDERS[kind](item, self.core)
            key = bytes(item.key)
            return built, OwnIssue(built.payload, built.wait_for_target, key,
                                   content_digest(item) if key else b"")
        except Exception as e:  # noqa: BLE001 - every refusal is this item's result
            return refused(n, e)

    def _queue(self, started: list[_Slot],
               ready: list[tuple[int, OwnIssue]]) -> None:
        """Queue the built items of one batch for the writer in one step;
        `ready` holds (place in `started`, the issue)."""
        if not ready:
            return
        try:
            futs = self.core.issue_many_async([it for _, it in ready], wait=ENQUEUE_WAIT)
        except Exception as e:  # noqa: BLE001 - no room, or the node stopped writing: each item's
            for i, _ in ready:
                n = started[i][0]
                started[i] = (n, None, _done(refused(n, e)))
            return
        for (i, _), fut in zip(ready, futs, strict=True):
            n, built, _ = started[i]
            started[i] = (n, built, fut)

    def run(self, requests: Iterator[pb.IssueBatch],
            context: grpc.ServicerContext) -> Iterator[pb.IssueResults]:
        """One IssueResults per batch, in order. A reader thread queues the
        items of the next batches while this answers the earlier ones, so the
        writer gathers up to `window` items into its group commits."""
        room = threading.BoundedSemaphore(max(self.window, MAX_BATCH))
        slots: queue.Queue[list[_Slot] | BaseException | None] = (
            queue.Queue())

        def read() -> None:
            end: BaseException | None = None
            n = 0
            try:
                for batch in requests:
                    if len(batch.items) > MAX_BATCH:
                        raise TooLarge(f"a batch of {len(batch.items)} items; at most "
                                       f"{MAX_BATCH}")
                    started: list[_Slot] = []
                    ready: list[tuple[int, OwnIssue]] = []
                    why = self.refusal()  # asked again each batch, as a unary call asks
                    for item in batch.items:
                        while not room.acquire(timeout=0.5):
                            if not context.is_active():
                                return
                        if why is None:
                            got = self._build(n, item)
                            if isinstance(got, pb.IssueResult):
                                started.append((n, None, _done(got)))
                            else:
                                ready.append((len(started), got[1]))
                                started.append((n, got[0], _PENDING))
                        else:
                            started.append((n, None, _done(pb.IssueResult(
                                item=n, code=grpc.StatusCode.UNAVAILABLE.name,
                                error=f"not issuing yet: {why}"))))
                        n += 1
                    self._queue(started, ready)
                    slots.put(started)
            except BaseException as e:  # noqa: BLE001 - a broken or aborted request stream
                end = e
            finally:  # also when the client went away: the answering loop must end
                slots.put(end)

        self.core.signing.prepare()  # the node's signing process, ready by the first full group
        reader = threading.Thread(target=read, name="issue-many-reader", daemon=True)
        reader.start()
        with self.core.feeding():  # the stream feeds the writer (the screen's rows rest)
            yield from self._answers(slots, room, context)

    def _answers(self, slots: queue.Queue[list[_Slot] | BaseException | None],
                 room: threading.BoundedSemaphore,
                 context: grpc.ServicerContext) -> Iterator[pb.IssueResults]:
        """One IssueResults per batch the reader queued, in order."""
        while True:
            got = slots.get()
            if got is None:
                return
            if isinstance(got, BaseException):
                if context.is_active():  # e.g. an item that does not decode (status.DecodeGuard)
                    raise got
                return  # the client went away: nothing more to answer
            out = pb.IssueResults()
            results = out.results
            for n, built, fut in got:
                self._answer(results, n, built, fut)
                room.release()
            yield out

    @staticmethod
    def _answer(results: Any, n: int, built: Built | None, fut: Future | Answer) -> None:
        """Item n's result appended to `results` (an issued item's built in
        place: one message, encoded once with the rest)."""
        try:
            res = fut.result()
        except Exception as e:  # noqa: BLE001 - the writer refused the whole group
            results.append(refused(n, e))
            return
        if built is None:
            results.append(res)
            return
        if res.error is not None:
            results.append(refused(n, res.error))
            return
        r: Record | None = res.record
        if r is None:  # never: a duplicate of a key is always answered with its record
            results.append(refused(n, StorageFailure("the issued record is missing")))
            return
        results.add(item=n, id=r.id, issuer=r.issuer, seq=r.seq, index=res.index or 0,
                    appeal=built.appeal, duplicate=res.status == "duplicate")
