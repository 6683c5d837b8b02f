"""Thin servicers: protobuf in, ledger calls, protobuf out; ledger errors
become the status code `node.status` gives them."""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

import grpc

from keys import KeysError
from keys.consortium import ISSUES_NOTHING
from keys.tls import admin_from_cert, participant_from_cert
from ledger import note, trail
from ledger import view as V
from ledger.errors import (
    LedgerError,
    MalformedRecord,
    NotAllowed,
    NotFound,
    StorageFailure,
    TooLarge,
)
from ledger.log import EquivocationProof, NodeLedger
from ledger.numbers import normalize
from ledger.record import Record
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import complaintservice as CS
from node.bulkissue import BUILDERS, BulkIssuer
from node.core import NodeCore
from node.feedgate import IssueGate
from node.limits import PublicGate, PublicLimits
from node.logkeeper import LogKeeper
from node.status import code_for, detail_for
from node.viewkeeper import ViewKeeper, ViewReads
from node.witness import Witness

log = logging.getLogger("markex.rpc")

MAX_ENTRIES_PER_CALL = 1000
EXPORT_PAGE_BYTES = 1 << 20  # entry bytes per ExportView page (gRPC's limit is 4 MiB)
EVIDENCE_PAGE = 100  # evidence items per GetEvidence page, the default and the most
FIND_LIMIT = 16  # ids per FindRecords answer
PULL_BATCH = 500
PUSH_INFLIGHT = 16  # push messages from one peer queued for the writer at once
PUSH_WAIT = 30.0  # seconds a push waits for room in the writer's queue (then RESOURCE_EXHAUSTED)
DELIVER_WAIT = 10.0  # the same for a Deliver call
ISSUE_WAIT = 10.0  # seconds an issuing call waits for the issue gate to open (node/feedgate.py)


class ForkSource(Protocol):
    """A keeper of fork evidence (the witness, the view keeper)."""

    def forks(self) -> list[bytes]: ...


def feed_heads(ledger: NodeLedger) -> pb.FeedHeads:
    """Every feed's head as the ledger holds it, sorted by issuer."""
    heads = []
    for issuer, st in sorted(ledger.feeds().items()):
        heads.append(
            pb.FeedHead(
                issuer=issuer,
                seq=st.seq,
                head_id=st.head_id,
                frozen=st.frozen_at is not None,
                frozen_at=st.frozen_at or 0,
            )
        )
    return pb.FeedHeads(heads=heads)


def edge(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map ledger/keys errors to their status code; anything else is INTERNAL."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except (LedgerError, KeysError) as e:
            context.abort(code_for(e), detail_for(e))
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"BadInput: {e}")

    return wrapper


def stream_edge(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
        except (LedgerError, KeysError) as e:
            context.abort(code_for(e), detail_for(e))

    return wrapper


@functools.lru_cache(maxsize=1024)
def _participant_of(cert_pem: bytes) -> str:
    """participant_from_cert once per certificate: every member call asks
    (each Heads, Cosign and Push of every peer), and parsing the certificate
    was about 7% of a busy node's sampled CPU. A refusal is not kept: it raises
    again each time."""
    return participant_from_cert(cert_pem)


def caller_id(context: grpc.ServicerContext) -> str:
    """The participant id the consortium CA put in the caller's certificate."""
    auth = context.auth_context()
    certs = auth.get("x509_pem_cert") or []
    if not certs:
        raise NotAllowed("no client certificate")
    try:
        return _participant_of(bytes(certs[0]))
    except (KeysError, ValueError) as e:  # a CA-signed certificate naming no participant
        raise NotAllowed(f"the client certificate names no participant: {e}") from e


@functools.lru_cache(maxsize=64)
def _admin_of(cert_pem: bytes) -> str:
    """admin_from_cert once per certificate: every Admin call asks (an
    IssueMark each), as `_participant_of` for members; a refusal raises
    again each time."""
    return admin_from_cert(cert_pem)


def admin_caller_id(context: grpc.ServicerContext) -> str:
    """The participant whose operator's admin certificate the caller presented."""
    certs = context.auth_context().get("x509_pem_cert") or []
    if not certs:
        raise NotAllowed("no client certificate")
    try:
        return _admin_of(bytes(certs[0]))
    except (KeysError, ValueError) as e:  # a member certificate, or one naming no admin
        raise NotAllowed(f"the Admin API takes an admin certificate: {e}") from e


# ------------------------------------------------------------------ public


def charged_lookup_batch(view: ViewReads, gate: PublicGate, limits: PublicLimits,
                         request: pb.LookupBatchRequest,
                         context: grpc.ServicerContext) -> pb.LookupBatchResponse:
    """Public.LookupBatch wherever a public port serves it (a node, its
    workers, a replica): a batch past the bound is refused before it is
    charged, and costs its caller one more unit of its rate per
    `numbers_per_unit` numbers (node/limits.py)."""
    numbers = list(request.numbers)
    view.check_batch(numbers)
    gate.charge(context, len(numbers) / limits.numbers_per_unit)
    return view.lookup_batch(numbers, request.with_proofs)


class PublicService(rpc.PublicServicer):
    """Read-only answers for anyone: log checkpoints and proofs, feed heads,
    entries proven against the signed view (a lookup's `at_ms` is for the
    client, which evaluates the entry; the node answers the same at any time)."""

    def __init__(
        self,
        ledger: NodeLedger,
        logs: LogKeeper,
        view: ViewKeeper,
        gate: PublicGate,
        limits: PublicLimits,
        complaints: CS.ComplaintReader | None = None,
        lines: CS.LineReader | None = None,
    ) -> None:
        self.ledger = ledger
        self.logs = logs
        self.view = view
        self.gate = gate
        self.limits = limits
        self.complaints = complaints  # node.complaints: the bad list
        self.lines = lines            # node.consent: the marketer lines a check by number reads

    @edge
    def GetLogCheckpoint(self, request, context):  # noqa: N802
        text = self.logs.checkpoint_note()
        if text is None:
            raise NotFound("this node has not signed a checkpoint yet")
        cp = note.Checkpoint.parse_body(note.Note.parse(text).text)
        return pb.LogCheckpoint(note=text, size=cp.size, root=cp.root)

    @edge
    def GetInclusionProof(self, request, context):  # noqa: N802
        path = self.ledger.inclusion_proof(request.index, request.size)
        return pb.InclusionProof(
            index=request.index,
            size=request.size,
            leaf_hash=self.ledger.leaf_hash(request.index),
            path=path,
        )

    @edge
    def GetConsistencyProof(self, request, context):  # noqa: N802
        path = self.ledger.consistency_proof(request.old_size, request.new_size)
        return pb.ConsistencyProof(old_size=request.old_size, new_size=request.new_size, path=path)

    @edge
    def GetFeedHeads(self, request, context):  # noqa: N802
        return feed_heads(self.ledger)

    @edge
    def Lookup(self, request, context):  # noqa: N802
        return self.view.lookup(request.number, True)

    @edge
    def LookupBatch(self, request, context):  # noqa: N802
        return charged_lookup_batch(self.view, self.gate, self.limits, request, context)

    @edge
    def GetViewCheckpoint(self, request, context):  # noqa: N802
        text = self.view.checkpoint_note()
        if text is None:
            raise NotFound("this node has not signed a view checkpoint yet")
        return pb.ViewCheckpoint(note=text)

    @edge
    def GetBadList(self, request, context):  # noqa: N802
        if self.complaints is None:
            raise NotFound("this node serves no bad list")
        return CS.bad_list(self.ledger.consortium, self.ledger, self.complaints, self.lines,
                           request, self.view.clock())


# ------------------------------------------------------------------ audit


class AuditService(rpc.AuditServicer):
    """Raw records, the log's whole history and evidence, on the member port:
    for members and auditors (any participant the consortium CA certified),
    never for anonymous callers (docs/publication.md). `forks`: the keepers
    of fork evidence, served after the ledger's equivocations."""

    def __init__(
        self, ledger: NodeLedger, forks: Sequence[ForkSource], view: ViewKeeper | None = None,
        complaints: CS.ComplaintReader | None = None,
    ) -> None:
        self.ledger = ledger
        self.consortium = ledger.consortium
        self.forks = tuple(forks)
        self.view = view  # ExportView's source; None: the call is not served
        self.complaints = complaints  # ListComplaints' source (node.complaints)

    def _reader(self, context: grpc.ServicerContext) -> str:
        pid = caller_id(context)
        why = self.consortium.why_not_reader(pid)
        if why is not None:
            raise NotAllowed(why)
        return pid

    @edge
    def GetEntries(self, request, context):  # noqa: N802
        self._reader(context)
        size = self.ledger.size
        if request.start >= size or request.end <= request.start:
            raise NotFound(f"no entries {request.start}..{request.end} in a log of size {size}")
        end = min(request.end, request.start + MAX_ENTRIES_PER_CALL, size)
        return pb.Entries(start=request.start, envelopes=self.ledger.entries(request.start, end))

    @edge
    def GetRecord(self, request, context):  # noqa: N802
        self._reader(context)
        if len(request.id) != 32:
            raise MalformedRecord("a record id is 32 bytes")
        found = self.ledger.record_by_id(request.id)
        if found is None:
            raise NotFound(f"no record {request.id.hex()} on this node")
        return pb.RecordEnvelope(envelope=found[1], index=found[0])

    @edge
    def FindRecords(self, request, context):  # noqa: N802
        """Ids starting with a hex prefix of 8..64 digits: one key-ordered scan of `records`."""
        self._reader(context)
        prefix = request.id_prefix.lower()
        if not 8 <= len(prefix) <= 64 or prefix.strip("0123456789abcdef"):
            raise MalformedRecord("an id prefix is 8 to 64 hex digits")
        limit = request.limit or 2
        if limit > FIND_LIMIT:
            raise TooLarge(f"at most {FIND_LIMIT} ids per FindRecords call")
        start = bytes.fromhex(prefix[: len(prefix) // 2 * 2])
        ids = []
        for rid, _ in self.ledger.store.scan_iter("records", start):
            if not rid.hex().startswith(prefix[: len(start) * 2]) or len(ids) == limit:
                break
            if rid.hex().startswith(prefix):
                ids.append(rid)
        return pb.FoundRecords(ids=ids)

    @edge
    def GetEvidence(self, request, context):  # noqa: N802
        """One page of the evidence (see the proto): equivocations, then forks."""
        self._reader(context)
        limit = request.limit or EVIDENCE_PAGE
        if limit > EVIDENCE_PAGE:
            raise TooLarge(f"at most {EVIDENCE_PAGE} evidence items per page")
        eq = [p.encode() for p in self.ledger.equivocations()]
        forks = [f for source in self.forks for f in source.forks()]
        start, end = request.start, request.start + limit
        page_eq = eq[start:end]
        page_forks = forks[max(0, start - len(eq)) : max(0, end - len(eq))]
        more = end < len(eq) + len(forks)
        return pb.Evidence(equivocations=page_eq, forks=page_forks, next_start=end if more else 0)

    @stream_edge
    def ExportView(self, request, context):  # noqa: N802
        """Every entry at one view checkpoint, in pages of at most EXPORT_PAGE_BYTES."""
        self._reader(context)
        if self.view is None:
            raise NotFound("this node serves no view export")
        text, entries = self.view.snapshot()
        page: list[bytes] = []
        size = 0
        first = True
        for raw in entries:
            if page and size + len(raw) > EXPORT_PAGE_BYTES:
                yield pb.ViewExportPage(view_checkpoint=text if first else "", entries=page)
                first, page, size = False, [], 0
            page.append(raw)
            size += len(raw)
        yield pb.ViewExportPage(view_checkpoint=text if first else "", entries=page)

    @edge
    def GetTrail(self, request, context):  # noqa: N802
        """The number's entry with its proof, and each record it names with its
        index and inclusion proof at `size` (ledger/trail.py verifies it all)."""
        self._reader(context)
        if self.view is None:
            raise NotFound("this node serves no trails")
        if request.size > self.ledger.size:
            raise NotFound(f"the log has {self.ledger.size} entries, not {request.size}")
        answer = self.view.lookup(normalize(request.number), True)
        entry = V.Entry.decode(answer.entry) if answer.entry else None
        out = pb.Trail(lookup=answer, size=request.size)
        ids = trail.ids_of_entry(entry) | self._linked(answer.number, entry,
                                                       request.at_ms or self.view.clock())
        for rid in sorted(ids):
            found = self.ledger.record_by_id(rid)
            if found is None:  # the view holds only records of this log
                raise StorageFailure(f"record {rid.hex()} of {answer.number}'s entry is missing")
            index, env = found
            path = self.ledger.inclusion_proof(index, request.size) if index < request.size \
                else []
            out.records.add(envelope=env, index=index, path=path)
        return out

    @edge
    def ListComplaints(self, request, context):  # noqa: N802
        """A carrier's queue (node/complaintservice.py says whose the caller reads)."""
        pid = self._reader(context)
        if self.complaints is None or self.view is None:
            raise NotFound("this node serves no complaint queues")
        return CS.list_complaints(self.consortium, self.complaints, pid, request,
                                  self.view.clock())

    def _linked(self, number: str, entry: V.Entry | None, at_ms: int) -> set[bytes]:
        """What this node's complaint and consent states (ledger.complaints,
        ledger.consent, set on the ledger by their keepers) link to the entry:
        its complaints' handlings, the lines holding the number at `at_ms` with
        their deregistrations, and those lines' enterprises' sanctions."""
        comp = getattr(self.ledger, "complaints", None)
        consent = getattr(self.ledger, "consent", None)
        out: set[bytes] = set()
        if comp is not None and entry is not None:
            for c in entry.complaints:
                out.update(h.id for h in comp.handlings_of(c.id))
        if consent is not None:
            for line in consent.lines_overlapping(number, False, at_ms):
                out.add(line.id)
                if line.ended_by:
                    out.add(line.ended_by)
                if comp is not None:
                    out.update(s.id for s in comp.sanctions_of(line.uscc))
        return out


# ------------------------------------------------------------------ exchange


class ExchangeService(rpc.ExchangeServicer):
    """What members exchange: feed heads, pulls and pushes into the writer,
    equivocation reports, cosignatures of log checkpoints (the witness) and of
    view checkpoints (the view keeper). `refuses(peer)` is the partition test hook."""

    def __init__(
        self,
        core: NodeCore,
        witness: Witness,
        view: ViewKeeper,
        refuses: Callable[[str], bool],
    ) -> None:
        self.core = core
        self.ledger = core.ledger
        self.consortium = core.consortium
        self.witness = witness
        self.view = view
        self.refuses = refuses

    def _peer(self, context: grpc.ServicerContext) -> str:
        pid = caller_id(context)
        p = self.consortium.participant(pid)
        if p is None:
            raise NotAllowed(f"{pid!r} is not a member")
        if p.role in ISSUES_NOTHING:  # an auditor reads through Audit; it runs no node
            raise NotAllowed(f"{pid} is of role {p.role}: it exchanges nothing")
        if self.refuses(pid):
            context.abort(grpc.StatusCode.UNAVAILABLE, f"partitioned from {pid} (test hook)")
        return pid

    @edge
    def Heads(self, request, context):  # noqa: N802
        self._peer(context)
        return feed_heads(self.ledger)

    @stream_edge
    def Pull(self, request, context):  # noqa: N802
        self._peer(context)
        after = request.after
        remaining = request.max or (1 << 62)
        led = self.ledger
        while remaining > 0 and context.is_active():
            envs = led.records_after(request.issuer, after, min(PULL_BATCH, remaining))
            if not envs:
                return
            yield pb.RecordBatch(envelopes=envs)
            after += len(envs)
            remaining -= len(envs)

    def Push(self, request_iterator, context):  # noqa: N802
        try:
            peer = self._peer(context)
        except LedgerError as e:
            context.abort(code_for(e), detail_for(e))
        counts = {"accepted": 0, "duplicate": 0, "buffered": 0}
        # Messages are not submitted one writer cycle at a time: while the
        # writer commits one, the next ones queue behind it and go into its
        # next group commit together. Otherwise a peer's small messages wait
        # in the transport, one full commit each. At most PUSH_INFLIGHT
        # submissions wait, which bounds what a fast peer can queue here.
        inflight: deque[Future] = deque()

        def settle(fut: Future) -> None:
            for o in fut.result(timeout=60):
                if o.status in counts:
                    counts[o.status] += 1

        try:
            for batch in request_iterator:
                if self.refuses(peer):
                    context.abort(
                        grpc.StatusCode.UNAVAILABLE, f"partitioned from {peer} (test hook)"
                    )
                inflight.append(
                    self.core.submit_async(list(batch.envelopes), source=peer, wait=PUSH_WAIT)
                )
                while inflight and (len(inflight) > PUSH_INFLIGHT or inflight[0].done()):
                    settle(inflight.popleft())
            while inflight:
                settle(inflight.popleft())
        except LedgerError as e:  # e.g. the store failed: the peer must not count these as held
            context.abort(code_for(e), detail_for(e))
        return pb.PushAck(
            accepted=counts["accepted"], duplicates=counts["duplicate"], buffered=counts["buffered"]
        )

    @edge
    def Deliver(self, request, context):  # noqa: N802
        peer = self._peer(context)
        fut = self.core.submit_async(list(request.envelopes), source=peer, wait=DELIVER_WAIT)
        outs = fut.result(60)
        for o in outs:
            if o.error is not None and len(outs) == 1:
                raise o.error
        return pb.PushAck(
            accepted=sum(o.status == "accepted" for o in outs),
            duplicates=sum(o.status == "duplicate" for o in outs),
            buffered=sum(o.status == "buffered" for o in outs),
        )

    @edge
    def ReportEquivocation(self, request, context):  # noqa: N802
        self._peer(context)
        new = self.core.add_equivocation(EquivocationProof(request.first, request.second))
        return pb.PushAck(accepted=int(new))

    @edge
    def Cosign(self, request, context):  # noqa: N802
        peer = self._peer(context)
        line = self.witness.cosign_log(peer, request.note, request.old_size, list(request.proof))
        return pb.CosignResponse(signature_line=line)

    @edge
    def CosignView(self, request, context):  # noqa: N802
        peer = self._peer(context)
        line = self.view.cosign(peer, request.note)  # its origin checked there, first
        return pb.CosignResponse(signature_line=line)


# ------------------------------------------------------------------ admin


class AdminService(rpc.AdminServicer):
    """Only the node's own participant's operator, by its admin certificate
    (SAN `markex://admin/<id>`), issues records; a node's TLS certificate is no
    admin credential. An issuing call waits up to `issue_wait_s` for the
    issue gate (node/feedgate.py) to let the node sign its next record."""

    def __init__(self, core: NodeCore, gate: IssueGate, issue_wait_s: float = ISSUE_WAIT) -> None:
        self.core = core
        self.participant_id = core.participant_id
        self.gate = gate
        self.issue_wait_s = issue_wait_s

    def issue_refusal(self) -> str | None:
        """None when this node may sign its next own record now; else why not."""
        feed = self.core.ledger.feed(self.participant_id)
        return self.gate.refusal(feed.seq, feed.head_id)

    def _own(self, context: grpc.ServicerContext) -> None:
        pid = admin_caller_id(context)
        if pid != self.participant_id:
            raise NotAllowed(
                f"only {self.participant_id} issues records at this node; you are {pid}"
            )
        # Wait a little for the gate: catching up takes a round or two.
        deadline = time.monotonic() + self.issue_wait_s
        while (why := self.issue_refusal()) is not None:
            if time.monotonic() >= deadline:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"not issuing yet: {why}")
            time.sleep(0.05)

    def _issued(self, out, appeal: bool = False) -> pb.Issued:  # type: ignore[no-untyped-def]
        r: Record = out.record
        return pb.Issued(id=r.id, issuer=r.issuer, seq=r.seq, appeal=appeal, index=out.index or 0)

    @stream_edge
    def IssueMany(self, request_iterator, context):  # noqa: N802
        """Bulk issue (node/bulkissue.py): a result per item, in order."""
        self._own(context)
        yield from BulkIssuer(self.core, self.issue_refusal).run(request_iterator, context)

    def _issue(self, kind: str, request: Any) -> pb.Issued:
        """One unary Issue* request, built by the builder IssueMany uses for
        the same item (node/bulkissue.py BUILDERS[kind]), so one request makes
        one record either way (e.g. a sanction's listed_at_ms 0 is the node's clock)."""
        built = BUILDERS[kind](pb.IssueItem(**{kind: request}), self.core)
        out = self.core.issue(built.payload, wait_for_target=built.wait_for_target)
        return self._issued(out, built.appeal)

    @edge
    def IssueMark(self, request, context):  # noqa: N802
        self._own(context)
        return self._issue("mark", request)  # Mark normalizes (InvalidNumber)

    @edge
    def IssueCorrection(self, request, context):  # noqa: N802
        self._own(context)
        return self._issue("correction", request)

    @edge
    def IssueReassignment(self, request, context):  # noqa: N802
        self._own(context)
        return self._issue("reassignment", request)

    @edge
    def IssuePreference(self, request, context):  # noqa: N802
        """The number arrives in clear (the member port only) and is signed
        only sealed: with the members' key the node was started with."""
        self._own(context)
        return self._issue("preference", request)

    @edge
    def IssueMarketerLine(self, request, context):  # noqa: N802
        self._own(context)
        return self._issue("line", request)

    @edge
    def IssueComplaint(self, request, context):  # noqa: N802
        self._own(context)
        return self._issue("complaint", request)

    @edge
    def IssueHandling(self, request, context):  # noqa: N802
        self._own(context)
        return self._issue("handling", request)

    @edge
    def IssueSanction(self, request, context):  # noqa: N802
        self._own(context)
        return self._issue("sanction", request)
