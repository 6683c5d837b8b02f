"""Replication with one peer: push our new records at once over a long-lived
stream; anti-entropy (compare feed heads, pull what we lack, in batches) on
connect and periodically; ask the peer to cosign our log checkpoint when we
sign a new one; tell it of equivocations. Records are trusted by signature, so
any peer may relay any feed; a lost push is healed by the next pull.

Anti-entropy does not chase pushes in flight. Under steady load a peer's head
is nearly always a few records ahead of ours because those records are on
their way to us; pulling them again would double the traffic and the work.
So a round pulls a feed only when the peer already had more of it in the
previous round than we have now (what a push has not brought in one whole
interval), when the two heads differ at the same seq (a possible
equivocation), or when there is no previous round to compare with: the first
round after connecting, and the first after a failed or refused round. A lost
push is thus healed within two intervals.

A round that pulls nothing means the pushes are doing the work, so the next
one waits twice as long, up to IDLE_ROUNDS_MAX sync intervals (RoundPacer):
with n nodes there are n(n-1) links, and their idle rounds were most of a
quiet node's CPU. A round that pulls something, a failed or refused one, or
a new connection starts again at one interval; a lost push is healed within
two of the current intervals, at most 2 x IDLE_ROUNDS_MAX sync intervals."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import grpc

from keys.consortium import Participant
from keys.tls import participant_dns_name
from ledger.errors import LedgerError
from ledger.log import EquivocationProof, verify_envelopes
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.core import NodeCore, max_member_message_bytes
from node.feedgate import IssueGate
from node.logkeeper import LogKeeper
from node.logs import event
from node.metrics import NodeMetrics
from node.pullpipe import PullPipe
from node.viewkeeper import ViewKeeper

log = logging.getLogger("markex.replication")

PUSH_QUEUE = 100_000
PUSH_BATCH = 500
PULL_MAX = 50_000
EVIDENCE_PAGES = 100  # GetEvidence pages read from one peer at most, per fetch
IDLE_ROUNDS_MAX = 8  # a quiet link's rounds slow to this many sync intervals (4 s at 0.5 s)
VIEW_SKIPS_MAX = 4  # view cosign asks a link skips at most after refusals in a row (ViewAskPacer)
VIEW_REFUSALS_FREE = 2  # refusals in a row before a link skips any (a peer a push behind)


class RoundPacer:
    """The wait before a link's next anti-entropy round: `base` after a round
    that pulled records (or failed), doubling after each round that pulled
    none, up to `base * most`."""

    def __init__(self, base: float, most: int = IDLE_ROUNDS_MAX) -> None:
        self.base = base
        self.most = max(1, most)
        self._factor = 1

    def after(self, pulled: int) -> float:
        """The wait after a successful round that pulled `pulled` records."""
        if pulled:
            self._factor = 1
            return self.base
        wait = self.base * self._factor
        self._factor = min(self._factor * 2, self.most)
        return wait

    def reset(self) -> float:
        """A failed or refused round: the next ones come at `base` again."""
        self._factor = 1
        return self.base


class ViewAskPacer:
    """Which of a link's asks for a view cosignature are made. Under load the
    view moves at every group commit and a peer is seldom at its vector, so
    it refuses (FAILED_PRECONDITION): in propagation_p99_12 about 7 of 10
    asks (a one-off count, docs/deploy.md "The third round"), each a call
    both ways and a note signed and parsed. The first
    `free` refusals in a row cost nothing (at a few records a second a peer
    is often just one push behind, and the next ask finds it there: the
    change stream waits for those cosignatures); after `n` in a row the
    link skips its next min(2^(n-1-free), `most`) asks. A cosignature
    starts again at none, and so does `clear`, which the rota calls for the
    links it wakes once the view stood still for a checkpoint tick (the
    peers can reach its vector now)."""

    def __init__(self, most: int = VIEW_SKIPS_MAX, free: int = VIEW_REFUSALS_FREE) -> None:
        self.most = max(0, most)
        self.free = max(0, free)
        self._refused = 0  # refusals in a row
        self._skip = 0  # asks still to skip

    def due(self) -> bool:
        """Whether this ask is made (else it counts as one skipped)."""
        if self._skip > 0:
            self._skip -= 1
            return False
        return True

    def outcome(self, cosigned: bool) -> None:
        """What the ask got: a cosignature (or nothing left to ask), or a
        refusal for another vector or root."""
        if cosigned:
            self._refused = self._skip = 0
        else:
            self._refused += 1
            over = self._refused - self.free
            self._skip = 0 if over <= 0 else min(1 << min(over - 1, 30), self.most)

    def clear(self) -> None:
        """Ask at the next wake again (the view settled)."""
        self._refused = self._skip = 0


@dataclass(frozen=True)
class LinkParts:
    """The parts of the local node a PeerLink works with, the same for every
    link: the writer (records in, feeds read), the issue gate it reports our
    feed's heads to, the log and view keepers it gets cosignatures for, the
    lag gauge, and the partition test hook (`refuses(peer)`)."""

    core: NodeCore
    gate: IssueGate
    logs: LogKeeper
    view: ViewKeeper
    metrics: NodeMetrics
    refuses: Callable[[str], bool]


class PeerLink:
    def __init__(
        self,
        parts: LinkParts,
        peer: Participant,
        credentials: grpc.ChannelCredentials,
        sync_interval: float = 0.5,
    ) -> None:
        self.parts = parts
        self.core = parts.core
        self.peer = peer
        self.sync_interval = sync_interval
        policy = parts.core.consortium.policy
        self._q: queue.Queue[list[bytes]] = queue.Queue(PUSH_QUEUE)
        self._carry: list[bytes] = []  # envelopes taken from _q past the last batch's end
        self._stop = threading.Event()
        self._wake = threading.Event()
        # What a wake-up asks the peer to cosign: "log", "view" (CosignRota).
        self._cosign_due: set[str] = set()
        self._due_lock = threading.Lock()
        self._channel = grpc.secure_channel(
            peer.member_endpoint,
            credentials,
            options=[
                ("grpc.max_receive_message_length", max_member_message_bytes(policy)),
                ("grpc.max_send_message_length", max_member_message_bytes(policy)),
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
                # TLS accepts only the certificate the CA issued to this peer.
                ("grpc.ssl_target_name_override", participant_dns_name(peer.id)),
            ],
        )
        self.stub = rpc.ExchangeStub(self._channel)
        # Evidence is on the peer's member port (docs/publication.md), asked as a member.
        self._audit = rpc.AuditStub(self._channel)
        self._threads = [
            threading.Thread(target=self._push_loop, name=f"push-{peer.id}", daemon=True),
            threading.Thread(target=self._sync_loop, name=f"sync-{peer.id}", daemon=True),
        ]
        self.peer_heads: dict[str, int] = {}
        self.pacer = RoundPacer(sync_interval)  # when the next anti-entropy round is due
        self.view_asks = ViewAskPacer()  # which asks for a view cosignature are made
        # The peer's heads as of the previous successful round (None: no such
        # round since connecting; then everything the peer has more is pulled).
        self._prev_heads: dict[str, int] | None = None
        self._pending_evidence: list[EquivocationProof] = []
        self._evidence_lock = threading.Lock()
        self._state: bool | None = None  # as last logged: None before the first round
        self.wakes_while_down = 0  # early wakes left to the next round (tests)
        self._reached = False  # the last round reached the peer (an RPC error: not)
        self._pulls = PullPipe(parts.core, peer.id, self._stop)  # pulled batches to the writer

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            if t.ident is not None:  # started (a link used only for its rounds is not)
                t.join(timeout=5)
        self._channel.close()

    def enqueue(self, envelopes: list[bytes]) -> None:
        with contextlib.suppress(queue.Full):  # anti-entropy pulls what the push drops
            self._q.put_nowait(envelopes)

    def report(self, proof: EquivocationProof) -> None:
        with self._evidence_lock:
            self._pending_evidence.append(proof)
        self._wake.set()

    def cosign_now(self, *, log: bool = True, view: bool = True) -> None:
        """Ask the peer now to cosign our log checkpoint (`log`) and our view
        checkpoint (`view`), when it has not yet."""
        with self._due_lock:
            self._cosign_due.update(k for k, on in (("log", log), ("view", view)) if on)
        self._wake.set()

    def _take_due(self) -> set[str]:
        with self._due_lock:
            due, self._cosign_due = self._cosign_due, set()
        return due

    # ------------------------------------------------------------ push
    def _batches(self, call_over: threading.Event) -> Iterator[pb.RecordBatch]:
        # Ends with its call: gRPC consumes a request iterator on a thread of
        # its own, which would otherwise stay blocked here after a failed call.
        while not self._stop.is_set() and not call_over.is_set():
            if self.parts.refuses(self.peer.id):
                return
            out, self._carry = self._carry, []
            if not out:
                try:
                    out = list(self._q.get(timeout=0.5))
                except queue.Empty:
                    continue
            while len(out) < PUSH_BATCH:
                try:
                    out.extend(self._q.get_nowait())
                except queue.Empty:
                    break
            # One commit's own records may be more than a batch: the rest goes next.
            out, self._carry = out[:PUSH_BATCH], out[PUSH_BATCH:]
            yield pb.RecordBatch(envelopes=out)

    def _push_loop(self) -> None:
        backoff = 0.3
        while not self._stop.is_set():
            if self.parts.refuses(self.peer.id):
                self._drain_queue()
                self._stop.wait(0.2)
                continue
            call_over = threading.Event()
            try:
                self.stub.Push(self._batches(call_over))
                backoff = 0.3
            except grpc.RpcError as e:
                log.debug("push to %s ended: %s", self.peer.id, e.code())
                # The peer is away: what it missed, it pulls when it is back.
                self._drain_queue()
                backoff = min(backoff * 2, 5.0)
            finally:
                call_over.set()
            self._stop.wait(backoff)

    def _drain_queue(self) -> None:
        self._carry = []
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                return

    # ------------------------------------------------------------ anti-entropy
    def _sync_loop(self) -> None:
        next_round = 0.0  # when the next anti-entropy round is due
        pace = self.pacer
        while not self._stop.is_set():
            now = time.monotonic()
            if self.parts.refuses(self.peer.id):
                self._prev_heads = None
                self.parts.gate.unreachable(self.peer.id)
                self._reached = False
                next_round = now + pace.reset()
                self._went(False, "this node refuses the peer (the partition test hook)")
            else:
                try:
                    if now >= next_round:
                        next_round = now + self.sync_interval  # if the round raises
                        pulled = self.sync_once()
                        next_round = now + pace.after(pulled)
                        self._reached = True
                        self._went(True)
                        if pulled:
                            event(log, logging.INFO, "catch-up", peer=self.peer.id,
                                  records=pulled)
                    elif self._reached:  # woken early: evidence to pass on, or a checkpoint
                        self._send_evidence()  # to cosign
                        due = self._take_due()
                        if due:
                            self._cosign_steps(of_log="log" in due, of_view="view" in due)
                    else:
                        # The last round did not reach the peer: an ask now would
                        # fail the same way once the view's checkpoint is made and
                        # signed for it. The evidence and the asks due wait for the
                        # next round (sync_once sends and asks once it reaches it).
                        self.wakes_while_down += 1
                except grpc.RpcError as e:
                    self._reached = False  # (a failure of this node's own, below, is not one)
                    self._prev_heads = None
                    pace.reset()
                    self.parts.gate.unreachable(self.peer.id)
                    log.debug("sync with %s failed: %s", self.peer.id, e.code())
                    self._went(False, _why(e))
                except Exception as e:
                    self._prev_heads = None
                    pace.reset()
                    self.parts.gate.unreachable(self.peer.id)
                    log.exception("sync with %s failed", self.peer.id)
                    self._went(False, f"replication failed here: {type(e).__name__}")
            self._wake.wait(max(0.0, next_round - time.monotonic()))
            self._wake.clear()

    def _went(self, up: bool, why: str = "") -> None:
        """The link is up or down after a round: log and count only a change
        (one "peer-connected" or "peer-lost" line, never one per retry)."""
        if self._state is up:
            return
        first = self._state is None
        self._state = up
        self.parts.metrics.peer(self.peer.id, up)
        if up:
            event(log, logging.INFO, "peer-connected", peer=self.peer.id)
        elif first:  # never reached since start: not lost, not yet there
            event(log, logging.WARNING, "peer-unreachable", peer=self.peer.id, reason=why)
        else:
            event(log, logging.WARNING, "peer-lost", peer=self.peer.id, reason=why)

    def sync_once(self) -> int:
        """An anti-entropy round: pull the feed records the peer has and we
        lack (but for pushes in flight, see the module doc), pass on
        equivocation proofs, and ask for cosignatures. Returns how many
        records were pulled."""
        core = self.core
        heads = self.stub.Heads(pb.FeedHeadsRequest(), timeout=5)
        me = core.participant_id
        claim = next((h for h in heads.heads if h.issuer == me), None)
        proven = claim is not None and claim.seq > core.ledger.feed(me).seq and self._proves(claim)
        # What the peer holds of our own feed goes to the gate (node/feedgate.py).
        if claim is None:
            self.parts.gate.report(self.peer.id, 0, b"")
        else:
            self.parts.gate.report(self.peer.id, claim.seq, claim.head_id, proven)
        prev = self._prev_heads
        pulled = 0
        try:
            for h in heads.heads:
                # A peer names any issuer it likes: only members' feeds are kept or counted.
                if core.consortium.participant(h.issuer) is None:
                    continue
                self.peer_heads[h.issuer] = h.seq
                ours = core.ledger.feed(h.issuer)
                self.parts.metrics.lag(self.peer.id, h.issuer, max(0, h.seq - ours.seq))
                if ours.frozen_at is not None:
                    continue
                if h.seq < ours.seq or (h.seq == ours.seq and h.head_id == ours.head_id):
                    continue
                if prev is not None and h.seq > ours.seq and prev.get(h.issuer, 0) <= ours.seq:
                    continue  # only what is still on its way to us: the next round sees
                # Overlap one record: a different record at our head is an equivocation.
                after = max(0, ours.seq - 1)
                # The next batches are read and verified while the writer commits
                # one, in order (node/pullpipe.py): a catch-up's writer never waits
                # for the network, nor checks the signatures itself.
                for batch in self.stub.Pull(
                    pb.PullRequest(issuer=h.issuer, after=after, max=PULL_MAX), timeout=120
                ):
                    if self._stop.is_set():
                        break
                    self._pulls.put(list(batch.envelopes))
                    pulled += len(batch.envelopes)
                if h.frozen and ours.frozen_at is None:
                    self._pulls.close()  # the feed's records first, then the proof that froze it
                    # The peer froze this feed: fetch and check its proof.
                    self._fetch_evidence()
        except BaseException:
            # The round failed mid-stream: its batches still go to the writer (or
            # are dropped at stop) before the next round reads the feeds again;
            # the pipe's own error, if any, is the same failure seen later.
            with contextlib.suppress(Exception):
                self._pulls.close()
            raise
        self._pulls.close()  # every pulled batch written (or the first error raised)
        self._prev_heads = {
            h.issuer: h.seq for h in heads.heads if core.consortium.participant(h.issuer)
        }
        self._send_evidence()
        due = self._take_due()
        # The view at every round (paced by view_asks); our log when the rota
        # woke this link for it (a wake that lands in a round is served by the
        # round) or when this peer's witness has not cosigned it for
        # IDLE_ROUNDS_MAX intervals: the rota asks a quorum and a spare of each
        # new checkpoint in turn, and a round's ask of every peer at every
        # round was most Cosign calls.
        stale = not self.parts.logs.cosigned_within(
            self.peer.id, self.sync_interval * IDLE_ROUNDS_MAX
        )
        self._cosign_steps(of_log=stale or "log" in due)
        return pulled

    def _proves(self, claim: pb.FeedHead) -> bool:
        """Whether the peer serves the record of our own feed it claims as its
        head: at that seq, with that id, signed with our key."""
        try:
            batches = self.stub.Pull(
                pb.PullRequest(issuer=claim.issuer, after=claim.seq - 1, max=1), timeout=5
            )
            env = next((e for b in batches for e in b.envelopes), None)
            if env is None:
                return False
            rec = verify_envelopes([env], self.core.consortium)[0]
        except (grpc.RpcError, LedgerError):
            return False
        return rec.issuer == claim.issuer and rec.seq == claim.seq and rec.id == claim.head_id

    def _cosign_steps(self, *, of_log: bool = True, of_view: bool = True) -> None:
        # (not `log=`: that name is this module's logger, used below)
        steps = [
            *([lambda: self.parts.logs.request_cosign(self.peer.id, self.stub)] if of_log else []),
            *([self._ask_view] if of_view else []),
        ]
        for step in steps:
            try:
                step()
            except grpc.RpcError as e:
                # A refused cosignature (e.g. the witness holds fork evidence
                # against us) must not stop replication.
                log.debug("cosigning with %s failed: %s %s", self.peer.id, e.code(), e.details())

    def _ask_view(self) -> None:
        if self.view_asks.due():
            self.view_asks.outcome(self.parts.view.request_cosign(self.peer, self.stub))

    def _fetch_evidence(self) -> None:
        """Read the peer's equivocation proofs (GetEvidence pages) and keep
        the ones that check; a bad proof from a peer changes nothing."""
        start = 0
        for _page in range(EVIDENCE_PAGES):  # a peer cannot keep us reading forever
            ev = self._audit.GetEvidence(pb.GetEvidenceRequest(start=start), timeout=5)
            for raw in ev.equivocations:
                try:
                    self.core.add_equivocation(EquivocationProof.decode(raw))
                except Exception as e:
                    log.warning("peer %s sent a bad equivocation proof: %s", self.peer.id, e)
            if ev.next_start <= start or not ev.equivocations:
                return  # the end, or past the equivocations (forks are not ours to keep)
            start = ev.next_start

    def _send_evidence(self) -> None:
        with self._evidence_lock:
            todo, self._pending_evidence = self._pending_evidence, []
        for i, p in enumerate(todo):
            try:
                self.stub.ReportEquivocation(
                    pb.EquivocationProof(first=p.first, second=p.second), timeout=5
                )
            except grpc.RpcError:
                with self._evidence_lock:
                    self._pending_evidence.extend(todo[i:])
                raise


class CosignRota:
    """Which links are asked for cosignatures at a checkpoint tick. Asking
    every peer at every new log checkpoint (four a second under load) cost
    each node 2(n-1) Cosign and CosignView calls out and as many in per
    tick; a quorum needs only `quorum` of them. So a new checkpoint wakes the
    next `quorum + 1` links in turn (one spare for a peer that is away), and
    a tick that finds the log or the view checkpoint short of its quorum
    wakes as many more that were not asked yet, for the short one only: a
    view still short (under load a peer is seldom at this view's vector)
    asked the log's Cosign of every peer at every checkpoint again. Every
    peer still cosigns both in its turn, and a link's anti-entropy round
    asks for the log's cosignature when its peer has not cosigned for
    IDLE_ROUNDS_MAX sync intervals, so each witness keeps checking this
    log's consistency; view asks are paced by each link's ViewAskPacer."""

    def __init__(self, links: Sequence[PeerLink], quorum: int) -> None:
        self.links = list(links)
        self.step = max(1, quorum + 1)
        self._next = 0  # where the next turn starts in `links`
        self._asked: set[int] = set()  # links woken for the current checkpoint

    def new_checkpoint(self) -> None:
        """A new log checkpoint was signed: wake the next links in turn."""
        self._asked = set()
        self._wake(log=True, view=True)

    def short(self, *, log: bool = True, view: bool = True, settled: bool = False) -> None:
        """The current log (`log`) or view (`view`) checkpoint lacks a quorum:
        wake links not asked yet, to cosign that one;
        once every link was asked, ask again in turn. A peer that could not
        cosign the view yet (it did not hold the view's records when asked)
        would otherwise be asked only at its link's next anti-entropy round,
        which backs off on a quiet link to several seconds. `settled`: the
        view did not move for a whole tick, so the peers can be at its vector
        now: the links woken ask for its cosignature whatever their refusals
        before (ViewAskPacer); the others keep their pace."""
        if len(self._asked) >= len(self.links):
            self._asked = set()
        self._wake(log=log, view=view, settled=settled and view)

    def _wake(self, *, log: bool, view: bool, settled: bool = False) -> None:
        n, woken = len(self.links), 0
        for k in [(self._next + i) % n for i in range(n)]:
            if woken == self.step:
                break
            if k not in self._asked:
                self._asked.add(k)
                if settled:
                    self.links[k].view_asks.clear()
                self.links[k].cosign_now(log=log, view=view)
                woken += 1
                self._next = (k + 1) % n


def _why(e: grpc.RpcError) -> str:
    """A failed call to a peer in one sentence, for the log (bounded length)."""
    code = e.code()
    name = code.name.lower().replace("_", " ") if code is not None else "unknown"
    detail = " ".join((e.details() or "").split())[:200]
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"the peer does not answer ({detail or name})."
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "the peer did not answer in time."
    return f"the peer answered {name}" + (f": {detail}." if detail else ".")
