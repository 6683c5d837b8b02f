"""A read replica (`markex replica run`, docs/replica.md): follows one or
more nodes' logs through their Audit service (ledger.follow: every round an
online audit), builds the national view in its own store, and serves the
public port's Lookup, LookupBatch and GetViewCheckpoint under the followed
node's cosigned view checkpoint for exactly the vector it has built, so a
client verifies its answers as a node's (node/lookup.py, unchanged).

Health (grpc.health.v1 on the same port):

    ""  and "markex.v1.Public"   SERVING once a verified checkpoint is served
    "markex.v1.Replica"          SERVING while every round verifies;
                                 NOT_SERVING once a log or a view checkpoint
                                 was refused (the replica is "halted": it
                                 applies nothing more and serves its last
                                 verified state; Replica.GetStatus says why)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from keys import KeysError
from keys.consortium import Consortium
from keys.signing import read_private
from ledger import note
from ledger import view as V
from ledger.errors import Equivocation, LedgerError, NotFound, OutOfOrder
from ledger.follow import (
    FollowedLog,
    LogRefused,
    LogUnavailable,
    ViewFollower,
    ViewRefused,
    findings_json,
)
from ledger.names import view_origin
from ledger.store import Store
from ledger.verify import open_view
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client, replicastate
from node.auditclient import GrpcLogSource, log_of
from node.limits import ClientTable, PublicGate, PublicLimits
from node.logs import event
from node.services import charged_lookup_batch, edge
from node.status import DecodeGuard
from node.viewkeeper import ViewReads
from node.watch import Watcher, WatchingPublic

log = logging.getLogger("markex.replica")
_T = TypeVar("_T")

PUBLIC_HEALTH = ("", "markex.v1.Public")
REPLICA_HEALTH = "markex.v1.Replica"
SYNCING, FOLLOWING, HALTED = "syncing", "following", "halted"


@dataclass
class Followed:
    """One --follow NODE: how it was named, its log, and the last round's failure."""

    name: str
    log: FollowedLog
    source: GrpcLogSource
    error: str = ""
    resumed_size: int = 0  # the verified size read from the replica's store at start


def tls_source(directory: Path, cons: Consortium, as_id: str, node: str) -> GrpcLogSource:
    """Entries and evidence from `node`'s Audit service on its member port,
    with `as_id`'s member certificate; checkpoints and proofs from its
    public port. A node named by id must present that id's certificate."""
    ep = client.resolve_node(cons, node)
    return GrpcLogSource(
        client.public_stub(directory, ep.public, ep.participant),
        client.audit_stub(directory, as_id, ep.member, ep.participant),
        timeout=15,
    )


class Replica(ViewReads):
    """The follower loop and the state the public port serves."""

    def __init__(
        self,
        cons: Consortium,
        store: Store,
        sources: Sequence[tuple[str, GrpcLogSource]],
        interval: float = 0.5,
    ) -> None:
        self.cons = cons
        self.store = store
        self.interval = interval
        self.view = V.NationalView.open(store, cons)
        self.follower = ViewFollower(self.view)
        self.followed = [
            Followed(name, FollowedLog(name, "", src, cons), src) for name, src in sources
        ]
        self._lock = threading.Lock()  # the view and the note it serves change together
        self._note: str | None = None
        self._signed_at = 0
        self._signer = ""  # who signed _note
        self.state = SYNCING
        self.reason = ""
        self.evidence: list[str] = []
        self.findings: list[str] = []
        self.lookups = 0
        self.health = health.HealthServicer(experimental_non_blocking=True)
        for service in (*PUBLIC_HEALTH, REPLICA_HEALTH):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # What node/watch.py's Watcher reads of a view keeper: told the
        # numbers each advance changed, under the lock, after the view moved.
        self.consortium = cons
        self.on_change: list[Callable[[set[str] | None], None]] = []
        self.watcher = Watcher(self)  # type: ignore[arg-type]
        self.watcher.start()
        self._resume()

    def _resume(self) -> None:
        """Take up the following where the last run left it (node/replicastate.py):
        each log's audit, the records waiting for a checkpoint, and the note
        served, if it still verifies and signs the view as stored."""
        self._saved = self._progress()
        if not replicastate.still_holds(self.store, self.view.vector):
            event(log, logging.WARNING, "replica-state-dropped",
                  error="the view is behind the stored following: auditing from entry 0")
            replicastate.forget(self.store)
            return
        replicastate.load_audits(self.store, self.cons, [f.log for f in self.followed])
        for f in self.followed:
            f.resumed_size = f.log.size
        self.follower.add(replicastate.load_pending(self.store))
        self._saved = self._progress()
        text = replicastate.load_note(self.store)
        if text is None:
            return
        try:
            cv = open_view(self.cons, text)
        except LedgerError as e:
            event(log, logging.WARNING, "replica-note-dropped", error=str(e)[:300])
            return
        # what _offer asks of a note, asked again: a followed node's own, with its quorum
        if cv.signer not in {f.name for f in self.followed} or \
                len(cv.cosigned_at) < self.cons.policy.cosign_quorum:
            return
        if self.follower.matches(cv.checkpoint):
            with self._lock:
                self._serve(text, cv.checkpoint, cv.signer)

    def _progress(self) -> tuple[object, ...]:
        return (tuple(f.log.size for f in self.followed), len(self.follower.pending), self._note)

    def _save(self) -> None:
        """Keep what this round moved (after the view applied its records)."""
        progress = self._progress()
        if progress == self._saved or self.state == HALTED:
            return
        with self._lock:
            note_text = self._note
            pending = list(self.follower.pending.values())
            vector = dict(self.view.vector)
        replicastate.save(self.store, [f.log for f in self.followed], pending, note_text, vector)
        self._saved = progress

    # ------------------------------------------------------------ following
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.watcher.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set() and self.state != HALTED:
            self.round()
            self._stop.wait(self.interval)

    def round(self) -> None:
        """One pass over the followed nodes: audit what is new in each log,
        then move the view to the newest view checkpoint it can verify."""
        for f in self.followed:
            if self.state == HALTED or self._stop.is_set():
                return
            try:
                self._follow(f)
                f.error = ""
            except LogUnavailable as e:
                f.error = str(e)
                event(log, logging.WARNING, "follow-unavailable", node=f.name, error=str(e)[:300])
            except (LogRefused, ViewRefused, Equivocation) as e:
                f.error = f"{type(e).__name__}: {e}"
                self._halt(f, e)
            except (LedgerError, KeysError) as e:  # a call outside the audit failed, or
                # the address serves no log of this consortium (yet): try again
                f.error = f"{type(e).__name__}: {e}"
                event(log, logging.WARNING, "follow-failed", node=f.name, error=f.error[:300])
            except Exception as e:  # never let the follower die while health says SERVING
                f.error = f"{type(e).__name__}: {e}"
                log.exception("follow round failed", extra={"node": f.name})
        self._save()

    def _follow(self, f: Followed) -> None:
        if not f.log.log:
            f.log.log = log_of(self.cons, f.name, f.source)
        # Asked before the log is audited, so the log is likely to hold its vector.
        vnote = f.source.view_checkpoint()
        envelopes = f.log.round()
        self.follower.add(envelopes)
        if vnote is not None:
            self._offer(f, vnote)

    def _offer(self, f: Followed, text: str) -> None:
        """Serve `text` (f's cosigned view checkpoint) if it signs the view as
        the verified records give it: now, or after applying what waits."""
        try:
            cv = open_view(self.cons, text)
        except LedgerError as e:
            raise ViewRefused(f"the view checkpoint of {f.name} does not verify: {e}") from e
        if cv.signer != f.log.log:
            raise ViewRefused(f"{f.name} serves {cv.signer}'s view checkpoint, not its own")
        if len(cv.cosigned_at) < self.cons.policy.cosign_quorum:
            return  # clients would refuse it: keep the last one until it has its quorum
        cp = cv.checkpoint
        with self._lock:
            if self.follower.matches(cp):
                if cp.signed_at_ms > self._signed_at:  # the node signed the same view again
                    self._serve(text, cp, cv.signer)
                return
            if not self.follower.covers(cp):
                return  # behind this view, or records not verified yet: a later round
            try:
                changed = self.follower.advance(cp)
            except OutOfOrder:
                return
            self._serve(text, cp, cv.signer)
            for fn in self.on_change:  # WatchView's change log (node/watch.py)
                fn(changed)
        event(log, logging.INFO, "view-advanced", node=f.name, changed=len(changed),
              entries=cp.count, root=cp.root.hex()[:16])

    def _serve(self, text: str, cp: V.ViewCheckpoint, signer: str) -> None:
        self._note, self._signed_at, self._signer = text, cp.signed_at_ms, signer
        if self.state == SYNCING:
            self.state = FOLLOWING
            for service in (*PUBLIC_HEALTH, REPLICA_HEALTH):
                self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def _halt(self, f: Followed, err: LedgerError) -> None:
        """Stop applying; keep serving the last verified state; say why."""
        moved: tuple[str, V.ViewCheckpoint] | None = None
        with self._lock:
            if isinstance(err, ViewRefused) and self._note is not None:
                cp = V.parse_view_checkpoint(_body(self._note))
                if not self.follower.matches(cp):
                    # The view moved past the note it served: its answers would
                    # not prove against it; nothing is served until it is restored.
                    moved = (self._note, cp)
                    self._note = None
                    for service in PUBLIC_HEALTH:
                        self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
            self.state = HALTED
            self.reason = f"{f.name}: {type(err).__name__}: {err}"
            if isinstance(err, LogRefused):
                self.findings = [x.line() for x in err.report.findings][:50]
                self.evidence = [json.dumps(ev, sort_keys=True) for ev in err.report.evidence]
        self.health.set(REPLICA_HEALTH, health_pb2.HealthCheckResponse.NOT_SERVING)
        event(log, logging.ERROR, "replica-halted", node=f.name, reason=self.reason[:500],
              findings=findings_json(f.log.last)[:5], evidence=len(self.evidence))
        if moved is not None:
            self._restore(*moved)

    def _restore(self, text: str, cp: V.ViewCheckpoint) -> None:
        """Rebuild the view up to the vector of the note last served, from
        the followed logs audited again from the start, and serve that note
        again (the last verified state). Memory: every record of the log."""
        replicastate.forget(self.store)  # the audits stored stand on the view cleared here
        self.view.clear()
        self.follower.pending.clear()
        for f in self.followed:
            if self.follower.covers(cp):
                break
            try:
                self.follower.add(FollowedLog(f.name, f.log.log, f.source, self.cons).round())
            except (LedgerError, KeysError) as e:
                event(log, logging.WARNING, "restore-read-failed", node=f.name,
                      error=f"{type(e).__name__}: {e}"[:300])
        with self._lock:
            try:
                self.follower.advance(cp)
            except LedgerError as e:
                event(log, logging.ERROR, "restore-failed", error=f"{type(e).__name__}: {e}"[:300])
                return
            self.follower.pending.clear()  # halted: nothing more is applied
            self._note = text
            for fn in self.on_change:  # any number may have changed
                fn(None)
            for service in PUBLIC_HEALTH:
                self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        event(log, logging.INFO, "restored", entries=cp.count, root=cp.root.hex()[:16])

    # ------------------------------------------------------------ reads
    def _lookup_read(
        self, read: Callable[[V.NationalView], list[pb.LookupResponse]]
    ) -> tuple[str, list[pb.LookupResponse]]:
        """Lookups (ViewReads) are read under the lock, of the served note's
        state; NotFound before the first verified note; each answer counted."""
        with self._lock:
            if self._note is None:
                raise NotFound("this replica has not verified a view checkpoint yet")
            # The node's own answer builder: the same bytes and proofs as a node's.
            got = read(self.view)
            self.lookups += len(got)
            return self._note, got

    def note(self) -> str | None:
        with self._lock:
            return self._note

    # What node/watch.py's Watcher reads of a view keeper.
    @property
    def participant_id(self) -> str:
        """Whose view checkpoints a WatchView `since` must be: the signer of
        the note served (before the first, the first followed log's)."""
        with self._lock:
            if self._signer:
                return self._signer
        return next((f.log.log for f in self.followed if f.log.log), "")

    @property
    def origin(self) -> str:
        return view_origin(self.cons.name, self.participant_id)

    def checkpoint_note(self) -> str | None:
        return self.note()

    def clock(self) -> int:
        return int(time.time() * 1000)

    def _consistent(self, read: Callable[[V.NationalView], _T]) -> tuple[str, _T]:
        """The served note and `read(view)` of the same state."""
        with self._lock:
            return self._note or "", read(self.view)

    def status(self) -> pb.ReplicaStatus:
        with self._lock:
            out = pb.ReplicaStatus(
                state=self.state, reason=self.reason, view_checkpoint=self._note or "",
                evidence=self.evidence, findings=self.findings, lookups=self.lookups,
            )
        for f in self.followed:
            out.logs.add(node=f.name, log=f.log.log, verified_size=f.log.size, error=f.error,
                         resumed_size=f.resumed_size)
        return out


def _body(text: str) -> str:
    return note.Note.parse(text).text


class ReplicaPublic(rpc.PublicServicer):
    """The public port's reads, from the replica; the log's own RPCs are the
    followed nodes' to serve (UNIMPLEMENTED here)."""

    def __init__(self, replica: Replica, limits: PublicLimits | None = None) -> None:
        self.replica = replica
        # Anonymous callers get the bounded share a node's public port gives
        # (node/limits.py); WatchView charges its snapshots through the gate too.
        self.limits = limits or PublicLimits()
        self.gate = PublicGate(ClientTable(self.limits))

    @edge
    def Lookup(self, request, context):  # noqa: N802
        return self.replica.lookup(request.number, True)

    @edge
    def LookupBatch(self, request, context):  # noqa: N802
        return charged_lookup_batch(self.replica, self.gate, self.limits, request, context)

    @edge
    def GetViewCheckpoint(self, request, context):  # noqa: N802
        text = self.replica.note()
        if text is None:
            raise NotFound("this replica has not verified a view checkpoint yet")
        return pb.ViewCheckpoint(note=text)

    # The node's own WatchView handler, over the replica's Watcher.
    WatchView = WatchingPublic.WatchView

    @property
    def watcher(self) -> Watcher:
        return self.replica.watcher


class ReplicaStatusService(rpc.ReplicaServicer):
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def GetStatus(self, request, context):  # noqa: N802
        return self.replica.status()


def serve(
    replica: Replica, directory: Path, as_id: str, listen: str, threads: int = PublicLimits.threads
) -> tuple[grpc.Server, int]:
    """The replica's public port (TLS with `as_id`'s certificate: a replica
    is run by a participant), started. Returns the server and its port."""
    pdir = directory / as_id
    key = read_private(pdir / "tls.key")
    cert = (pdir / "tls.pem").read_bytes()
    public = ReplicaPublic(replica)
    server = grpc.server(
        futures.ThreadPoolExecutor(threads, thread_name_prefix="replica"),
        options=[("grpc.max_send_message_length", 64 * 1024 * 1024), ("grpc.so_reuseport", 0)],
        interceptors=[public.gate, DecodeGuard()],
        maximum_concurrent_rpcs=public.limits.max_calls,
    )
    rpc.add_PublicServicer_to_server(public, server)
    rpc.add_ReplicaServicer_to_server(ReplicaStatusService(replica), server)
    health_pb2_grpc.add_HealthServicer_to_server(replica.health, server)
    try:
        port = server.add_secure_port(listen, grpc.ssl_server_credentials([(key, cert)]))
    except RuntimeError as e:
        raise OSError(f"cannot listen on {listen}: gRPC could not bind it") from e
    server.start()
    return server, port

