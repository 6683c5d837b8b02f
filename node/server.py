"""A markex node: the ledger behind two gRPC ports.

- member port (mutual TLS, consortium CA): Exchange, Admin, Audit, Holders and Screening;
- public port (TLS, read-only): Public, grpc.health.v1, server reflection.

`Node` is the composition root: it builds the parts (the writer `NodeCore`,
the `LogKeeper` and `ViewKeeper`, the `Witness`, the issue gate, one
`PeerLink` per peer, the servicers), gives each the parts it uses, and wires
the writer's events to them. No part holds the `Node`.

`Node(cfg).start()` binds both ports (port 0 picks a free port, for tests)
and starts replication with every peer named in consortium.json.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keys.consortium import Consortium
from keys.layout import NodeConfig, load_consortium
from keys.signing import SigningKey, read_private
from ledger.errors import LedgerError, StorageFailure
from ledger.holdings import LedgerHoldings
from ledger.log import EquivocationProof
from ledger.record import Record, record_id
from ledger.store import Store
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import ports, tilesrv
from node.complaintkeeper import ComplaintKeeper
from node.consentkeeper import ConsentKeeper
from node.core import NodeCore, max_member_message_bytes, wall_ms
from node.feedgate import gate_at_start
from node.holders import holders_service
from node.limits import ClientTable, PublicGate, PublicLimits
from node.logkeeper import LogKeeper
from node.logs import RecordTally, appeal_events, event
from node.metrics import LatencyInterceptor, NodeMetrics
from node.replication import CosignRota, LinkParts, PeerLink
from node.screen import ScreeningService, add_to_server, make_screener
from node.screenindex import ScreenIndex, forget_rows
from node.services import AdminService, AuditService, ExchangeService
from node.signals import StopSignal
from node.status import DecodeGuard
from node.viewkeeper import ViewKeeper
from node.watch import Watcher, WatchingPublic
from node.witness import Witness
from node.workers import LogNotes, Upstream, WorkerPool

log = logging.getLogger("markex.node")

CHECKPOINT_INTERVAL = 0.25
# A grown log is signed (and its cosignatures asked) at most this often, not
# at every tick: each new checkpoint is a round of Cosign calls (node/logkeeper.py).
LOG_CHECKPOINT_EVERY_S = 1.0
LOG_INTERVAL = 10.0  # seconds between the log's lines of record counts
HEALTH_SERVICES = ("", "markex.v1.Public")


class RefuseFile:
    """The partition test hook: a file listing the peer ids this node
    refuses (re-read at most every 0.1 s). Without a file nobody is refused."""

    def __init__(self, path: Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._refused: frozenset[str] = frozenset()
        self._checked = 0.0

    def refuses(self, peer: str) -> bool:
        if self.path is None:
            return False
        now = time.monotonic()
        if now - self._checked > 0.1:
            self._checked = now
            try:
                self._refused = frozenset(self.path.read_text().split())
            except OSError:
                self._refused = frozenset()
        return peer in self._refused


class Node:
    def __init__(
        self,
        cfg: NodeConfig,
        consortium: Consortium | None = None,
        clock: Callable[[], int] = wall_ms,
        sync_interval: float = 0.5,
        *,
        refuse_file: Path | None = None,
        restored: bool = False,
        public_limits: PublicLimits | None = None,
        log_interval: float = LOG_INTERVAL,
        workers: int = 1,
    ) -> None:
        """`refuse_file` is a test hook (a file listing peer ids this node
        refuses, to simulate partitions): only tests pass it, and the node logs
        that it is on. `restored`: the operator says the store comes from a
        backup, so the node issues only once a quorum of peers agree on its
        own feed's head (node/feedgate.py). `log_interval`: seconds between
        the log lines counting records accepted and refused. `workers` > 1:
        the public port is served by that many worker processes reading this
        node's store (node/workers.py; needs a config read from a file)."""
        self.cfg = cfg
        self.consortium = consortium or load_consortium(cfg)
        self.participant_id = cfg.participant
        self.clock = clock
        self.sync_interval = sync_interval
        key = SigningKey.load(cfg.signing_key)
        self._tls_key = read_private(cfg.tls_key)  # a TLS key others can read is refused
        self._tls_cert = cfg.tls_cert.read_bytes()
        self._ca = cfg.ca_cert.read_bytes()
        if refuse_file is not None:
            event(log, logging.WARNING, "test-hook", hook="refuse-file", path=str(refuse_file),
                  note="this node refuses the peers listed there; tests only")
        self.refuses = RefuseFile(refuse_file).refuses

        # The parts, each given what it uses.
        self.metrics = NodeMetrics(p.id for p in self.consortium.participants)
        self.tally = RecordTally(frozenset(p.id for p in self.consortium.participants))
        self.log_interval = log_interval
        self.store = Store(cfg.data_dir)
        self.core = NodeCore(self.store, self.consortium, self.participant_id, key, clock)
        ledger = self.core.ledger
        self.logs = LogKeeper(ledger, clock, every_s=LOG_CHECKPOINT_EVERY_S)
        self.logs.on_cosigned = self.tally.cosigned
        # The view journals its changes for the screen's rows, when this node keeps them.
        self.view = ViewKeeper(ledger, clock, journal=cfg.screen_rows)
        # node.consent: the ConsentReader the screen asks (ledger/consent)
        self.consent = ConsentKeeper(ledger, self.consortium.members_key)
        # node.complaints: the queues, SLA and bad list (ledger/complaints)
        self.complaints = ComplaintKeeper(ledger, self.consortium)
        self.witness = Witness(self.store, self.consortium, self.participant_id, key, clock)
        self.peers = [
            p for p in self.consortium.participants
            if p.id != self.participant_id and p.member_endpoint
        ]
        self.gate = gate_at_start(
            ledger.feed(self.participant_id).seq,
            restored=restored,
            new_feed=cfg.new_feed,
            peers=[p.id for p in self.peers],
            quorum=self.consortium.policy.restore_quorum,
        )
        self.public_limits = public_limits or PublicLimits()
        self.public_gate = PublicGate(ClientTable(self.public_limits))
        self.link_parts = LinkParts(
            self.core, self.gate, self.logs, self.view, self.metrics, self.refuses
        )
        self.links: dict[str, PeerLink] = {}
        self.exchange = ExchangeService(self.core, self.witness, self.view, self.refuses)
        self.admin = AdminService(self.core, self.gate)
        self.audit = AuditService(ledger, forks=(self.witness, self.view), view=self.view,
                                  complaints=self.complaints)
        self.public_service = WatchingPublic(
            ledger, self.logs, self.view, self.public_gate, self.public_limits,
            complaints=self.complaints, lines=self.consent,
        )
        # WatchView's change log, fed by the view keeper's hook (node/watch.py)
        self.watcher = self.public_service.watcher = Watcher(self.view)
        # the holder's appeal (node/holders.py), sharing Admin's issue gate
        self.holders = holders_service(cfg, self.core, self.view, self.admin, clock)
        # the call-path screen (node/screen.py): this node's view and consent state only
        # its callers' rows, made off the write path (node/screenindex.py), resting
        # while the writer has work: both hold the one GIL
        # (none on a node that serves no call path, `screen_rows = false`: a screen there
        # is answered from the entries, the same answers, slower)
        self.screen_index: ScreenIndex | None = None
        if cfg.screen_rows:
            self.screen_index = ScreenIndex(self.store, self.view.entries_bytes,
                                            self.view.numbers,
                                            yield_to=lambda: self.core.busy,
                                            lock=self.view.write_lock,
                                            fed=lambda: self.core.fed)
            self.view.on_change.append(self.screen_index.changed)
        else:
            forget_rows(self.store)
        self.screening = ScreeningService(
            self.consortium,
            make_screener(self.consortium, self.view, self.consent, self.screen_index, clock),
            clock,
        )
        self.screening.screener.listings = self.complaints  # the bad-list rule (docs/screen.md)

        # The writer's events, to the parts that act on them.
        self.core.observer = self._observe
        self.core.subscribe(self._log_appeals)
        self.core.subscribe(self.logs.grew)
        self.core.subscribe(self._observe_accepted)
        self.core.subscribe(self._push_own)
        self.core.subscribe(self.view.apply)
        self.core.subscribe(self.consent.apply)
        self.core.subscribe(self.complaints.apply)
        self.core.on_equivocation(self._on_equivocation)
        self.core.on_failure(self._on_storage_failure)

        self._watch_metrics()

        self._stop = threading.Event()
        self.member_port = 0
        self.public_port = 0
        self.tiles: tilesrv.TileServer | None = None  # the tlog-tiles endpoint, when configured
        self.workers = workers
        self.pool: WorkerPool | None = None  # the public workers, when workers > 1
        self.upstream: Upstream | None = None  # what they relay to (node/workers.py)
        self.log_notes = LogNotes(self.logs, self.store)
        self.view.publishes = workers > 1  # the workers serve the notes the store holds

    @property
    def issue_wait_s(self) -> float:
        """How long an issuing call waits for the issue gate to open (tests shorten it)."""
        return self.admin.issue_wait_s

    @issue_wait_s.setter
    def issue_wait_s(self, seconds: float) -> None:
        self.admin.issue_wait_s = seconds

    def _watch_metrics(self) -> None:
        """The gauges read from the parts at each scrape: right from the start."""
        led, clock = self.core.ledger, self.clock

        def since(ms: int | None) -> float:
            return float("nan") if ms is None else max(0, clock() - ms) / 1000

        self.metrics.read_from(
            log_size=lambda: led.size,
            checkpoint_age=lambda: since(self.logs.signed_at_ms),
            checkpoint_cosignatures=self.logs.cosignatures,
            equivocations=led.equivocation_count,
            view_lag=self.view.lag_records,
            view_age=lambda: since(self.view.signed_at_ms()),
        )
        for p in self.peers:
            self.metrics.peer(p.id, False)  # down until a first exchange succeeds

    def log_checkpoint_note(self) -> str | None:
        """The log checkpoint the node serves (LogKeeper.checkpoint_note), for tests and tools."""
        return self.logs.checkpoint_note()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Node:
        self.core.start()
        self.view.start()
        self.watcher.start()
        self.consent.start()
        self.core.ledger.consent = self.consent.state  # what check_effect reads
        self.complaints.start()  # sets ledger.complaints, what check_effect reads
        if self.screen_index is not None:
            self.screen_index.start()
        # A member message is at most one full batch (node.core): no 32 MB of tiny envelopes.
        member_bytes = max_member_message_bytes(self.consortium.policy)
        opts = [
            ("grpc.max_receive_message_length", member_bytes),
            ("grpc.max_send_message_length", member_bytes),
            ("grpc.so_reuseport", 0),
        ]
        # DecodeGuard: undecodable request bytes are INVALID_ARGUMENT, not INTERNAL.
        interceptors = [DecodeGuard(), LatencyInterceptor(self.metrics)]
        self.member = grpc.server(
            futures.ThreadPoolExecutor(32, thread_name_prefix="member"),
            options=opts,
            interceptors=interceptors,
        )
        rpc.add_ExchangeServicer_to_server(self.exchange, self.member)
        rpc.add_AdminServicer_to_server(self.admin, self.member)
        rpc.add_AuditServicer_to_server(self.audit, self.member)
        rpc.add_HoldersServicer_to_server(self.holders, self.member)
        add_to_server(self.screening, self.member)
        member_creds = grpc.ssl_server_credentials(
            [(self._tls_key, self._tls_cert)], root_certificates=self._ca, require_client_auth=True
        )
        self.member_port = ports.add_secure_port(self.member, self.cfg, "member_listen",
                                                 member_creds)

        if self.workers > 1:
            self._start_workers()
        else:
            self._start_public(interceptors)
        self.member.start()
        self._start_rest()
        return self

    def _start_workers(self) -> None:
        """The public port served by worker processes (node/workers.py)."""
        if self.cfg.source is None:
            raise ValueError("public workers read the node's config from its file")
        if self.core.ledger.size:
            self.logs.sign_if_grown()
        self.log_notes.publish()
        # What a worker cannot serve (WatchView, GetBadList) it relays here. The
        # public port is the workers', so the service's charges go to the
        # upstream's gate (the workers charged each client already).
        self.upstream = Upstream(self.public_service, self._tls_key, self._tls_cert,
                                 self.public_limits).start()
        self.public_service.gate = self.upstream.gate
        self.pool = WorkerPool(Path(self.cfg.source), self.cfg.data_dir, self.cfg.public_listen,
                               self.workers, upstream=self.upstream.address)
        self.public_port = self.pool.port
        self.pool.start()

    def _start_public(self, interceptors: list) -> None:
        pub_opts = [
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
        lim = self.public_limits
        self.public = grpc.server(
            futures.ThreadPoolExecutor(lim.threads, thread_name_prefix="public"),
            options=pub_opts,
            # Anonymous callers: each gets a bounded share (node/limits.py).
            interceptors=[self.public_gate, *interceptors],
            maximum_concurrent_rpcs=lim.max_calls,
        )
        rpc.add_PublicServicer_to_server(self.public_service, self.public)
        # Non-blocking: an idle Watch holds no thread (the interceptors keep the mark).
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.public)
        reflection.enable_server_reflection(
            (
                pb.DESCRIPTOR.services_by_name["Public"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.public,
        )
        pub_creds = grpc.ssl_server_credentials([(self._tls_key, self._tls_cert)])
        self.public_port = ports.add_secure_port(self.public, self.cfg, "public_listen", pub_creds)
        self.public.start()

    def _start_rest(self) -> None:
        try:
            self.metrics.serve(self.cfg.metrics_listen)
        except OSError as e:
            event(log, logging.WARNING, "metrics-not-started", listen=self.cfg.metrics_listen,
                  reason=e.strerror or str(e))
        self.tiles = tilesrv.start_tiles(
            self.cfg.tiles_listen,
            checkpoint=self.log_checkpoint_note,
            source=self.core.ledger,
            consortium=self.consortium,
            cert_file=self.cfg.tls_cert,
            key_file=self.cfg.tls_key,
            ca_pem=self._ca,
            config_name=f"{self.participant_id}/node.toml",
        )
        if self.core.ledger.size:
            self.logs.sign_if_grown()
        creds = self.client_credentials()
        for p in self.peers:
            link = PeerLink(self.link_parts, p, creds, self.sync_interval)
            self.links[p.id] = link
            link.start()
        self.cosigners = CosignRota(list(self.links.values()), self.consortium.policy.cosign_quorum)
        self._ticker = threading.Thread(target=self._tick_loop, name="checkpoints", daemon=True)
        self._ticker.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        if self.core.failure is not None:  # the store failed while starting
            serving = health_pb2.HealthCheckResponse.NOT_SERVING
        if self.pool is None:
            for service in HEALTH_SERVICES:
                self.health.set(service, serving)
        event(log, logging.INFO, "started", participant=self.participant_id,
              member_port=self.member_port, public_port=self.public_port,
              metrics_port=self.metrics.port, tiles_port=self.tiles_port,
              log_size=self.core.ledger.size, workers=self.workers)

    def stop(self, grace: float = 2.0) -> None:
        """Stop taking requests, finish queued writes, close the store.
        Acknowledged records are already synced; nothing is lost."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.watcher.stop()
        if self.pool is not None:
            self.pool.stop()  # the workers first: they read the store closed below
            if self.upstream is not None:
                self.upstream.stop()
            ev1 = threading.Event()
            ev1.set()
        else:
            with contextlib.suppress(AttributeError):  # older grpcio-health-checking
                self.health.enter_graceful_shutdown()
            ev1 = self.public.stop(grace)
        ev2 = self.member.stop(grace)
        for link in self.links.values():
            link.stop()
        ev1.wait(grace + 1)
        ev2.wait(grace + 1)
        if self.tiles is not None:
            self.tiles.stop()
        self.core.stop()
        if self.screen_index is not None:
            self.screen_index.stop()
        self._log_tally()  # the counts of the interval cut short
        self.metrics.stop()
        self.store.close()

    @property
    def tiles_port(self) -> int:
        """The tlog-tiles HTTPS port, 0 when it is off (node/tilesrv.py)."""
        return 0 if self.tiles is None else self.tiles.port

    def client_credentials(self) -> grpc.ChannelCredentials:
        """This node's member credentials, for its channels to peers."""
        return grpc.ssl_channel_credentials(
            root_certificates=self._ca, private_key=self._tls_key, certificate_chain=self._tls_cert
        )

    # ------------------------------------------------------------ events (writer thread)
    def _observe(self, status: str, reason: str | None, issuer: str | None, n: int) -> None:
        self.metrics.outcome(status, reason, n)
        self.tally.outcome(status, reason, issuer, n)

    def _observe_accepted(self, records: list[Record]) -> None:
        others = [r.issued_at_ms for r in records if r.issuer != self.participant_id]
        self.metrics.accepted(others, self.clock())

    def _log_appeals(self, records: list[Record]) -> None:
        for name, fields in appeal_events(records, LedgerHoldings(self.core.ledger).held):
            event(log, logging.INFO, name, **fields)

    def _log_tally(self) -> None:
        for name, fields in self.tally.take():
            event(log, logging.INFO, name, interval_s=self.log_interval, **fields)

    def _push_own(self, records: list[Record]) -> None:
        own = [r.envelope for r in records if r.issuer == self.participant_id]
        if own:
            for link in self.links.values():
                link.enqueue(own)

    def _on_equivocation(self, proof: EquivocationProof) -> None:
        try:
            rec = Record.from_envelope(proof.first)
            issuer, seq, first = rec.issuer, rec.seq, rec.id.hex()[:16]
        except LedgerError:  # checked before it got here; never trust it to parse twice
            issuer, seq, first = "unknown", 0, record_id_hex(proof.first)
        event(log, logging.WARNING, "equivocation", kind="equivocation", issuer=issuer, seq=seq,
              first=first, second=record_id_hex(proof.second))
        self.view.invalidate()
        self.consent.invalidate()
        self.complaints.invalidate()
        for link in self.links.values():
            link.report(proof)

    def _on_storage_failure(self, err: StorageFailure) -> None:
        """The store failed: the node takes no writes until restarted, and says so."""
        event(log, logging.CRITICAL, "storage-failure", error=str(err))
        if not hasattr(self, "health"):
            return  # start() has not made it yet; it reads core.failure itself
        for service in HEALTH_SERVICES:
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    # ------------------------------------------------------------ checkpoints
    def _tick_loop(self) -> None:
        next_tally = time.monotonic() + self.log_interval
        view_version = self.view.version  # as at the previous tick
        while not self._stop.wait(CHECKPOINT_INTERVAL):
            if time.monotonic() >= next_tally:
                next_tally += self.log_interval
                self._log_tally()
            if self.core.failure is not None:
                continue  # nothing to sign: the log cannot grow until a restart
            try:
                # Cosignatures are asked of a few peers in turn (CosignRota).
                if self.logs.sign_if_grown() is not None:
                    self.cosigners.new_checkpoint()
                else:
                    log_short = self.logs.cosignatures() < self.logs.quorum
                    view_short = not self.view.cosigned()
                    if log_short or view_short:
                        # a view that stood still for a tick: its peers can be at its vector
                        self.cosigners.short(log=log_short, view=view_short,
                                             settled=self.view.version == view_version)
                view_version = self.view.version
                if self.pool is not None:
                    self.log_notes.publish()
                self.view.tick()
                self.consent.tick()
                self.complaints.tick()
            except Exception:
                log.exception("checkpoint tick failed")


# The cyclic collector's thresholds in a node process. With Python's (700, 10,
# 10) a node's per-record objects ran a young collection every few records and
# a full one over the whole heap (the view's objects) every few thousand: 36
# CPU-us of a bulk-issued record's ~330 under the GIL, stalling every thread
# (a one-off measurement with gc.callbacks in the node process, not a
# benchmark). Reference counting frees the records' objects either way; the
# collector is only for cycles.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_collector() -> None:
    """A node process's collector: GC_THRESHOLDS (see there)."""
    gc.set_threshold(*GC_THRESHOLDS)


def settle_collector() -> None:
    """After the node's start (its view built from the log): what the start
    made lives as long as the process, so the collector never scans it again
    (gc.freeze); objects made later are collected as before."""
    gc.collect()
    gc.freeze()


def run_node(cfg: NodeConfig, *, refuse_file: Path | None = None, restored: bool = False,
             log_level: str | None = None, workers: int = 1) -> int:
    """`markex node run`: serve until SIGTERM/SIGINT, then stop cleanly.
    `refuse_file` is the tests' partition hook (`--test-refuse-file`), off
    unless given; `restored` is `--restored` (see Node); `log_level`
    (`--log-level`) wins over node.toml's `log_level`; `workers` (`--workers`)
    processes serve the public port (node/workers.py)."""
    from node import logs

    logs.setup(cfg.participant, logs.parse_level(log_level or cfg.log_level))
    ports.check_free(cfg)  # before the store opens: a taken port says which key to change
    interval = float(os.environ.get("MARKEX_SYNC_INTERVAL", "0.5"))
    tune_collector()
    node = Node(cfg, sync_interval=interval, refuse_file=refuse_file, restored=restored,
                workers=workers).start()
    settle_collector()
    stop = StopSignal()
    print(
        json.dumps(
            {
                "participant": node.participant_id,
                "member_port": node.member_port,
                "public_port": node.public_port,
                "metrics_port": node.metrics.port,
                "tiles_port": node.tiles_port,
                "workers": node.pool.pids() if node.pool is not None else [],
            }
        ),
        flush=True,
    )
    stop.wait()
    node.stop()
    event(log, logging.INFO, "stopped", participant=node.participant_id)
    return 0


def record_id_hex(envelope: bytes) -> str:
    """A record's id as the log names it: its first 16 hex digits."""
    return record_id(envelope).hex()[:16]
