"""A markex node: the ledger behind two gRPC ports.

- member port (mutual TLS, consortium CA): Exchange, Admin and Audit;
- public port (TLS, read-only): Public, grpc.health.v1, server reflection.

`Node(cfg).start()` binds both (port 0 picks a free port, for tests) and
starts replication with every peer named in consortium.json.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keys.consortium import Consortium, Participant
from keys.layout import NodeConfig, load_consortium
from keys.signing import SigningKey, read_private
from keys.tls import participant_dns_name
from ledger import note
from ledger.errors import StorageFailure
from ledger.log import EquivocationProof
from ledger.record import Record
from ledger.store import Store
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import ports, tilesrv
from node.core import NodeCore, max_member_message_bytes, wall_ms
from node.feedgate import NEW_FEED, OWN_STORE, RESTORE, IssueGate
from node.limits import ClientTable, PublicGate, PublicLimits
from node.metrics import LatencyInterceptor, NodeMetrics
from node.replication import PeerLink
from node.services import AdminService, AuditService, ExchangeService, PublicService
from node.status import DecodeGuard
from node.viewkeeper import ViewKeeper
from node.witness import Witness

log = logging.getLogger("markex.node")

CHECKPOINT_INTERVAL = 0.25
EVIDENCE_PAGES = 100  # GetEvidence pages read from one peer at most, per fetch


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
    ) -> None:
        """`refuse_file` is a test hook (a file listing peer ids this node
        refuses, to simulate partitions): only tests pass it, and the node logs
        that it is on. `restored`: the operator says the store comes from a
        backup, so the node issues only once a quorum of peers agree on its
        own feed's head (node/feedgate.py)."""
        self.cfg = cfg
        self.public_limits = public_limits or PublicLimits()
        self.public_gate = PublicGate(ClientTable(self.public_limits))
        self.consortium = consortium or load_consortium(cfg)
        self.participant_id = cfg.participant
        self.key = SigningKey.load(cfg.signing_key)
        self.clock = clock
        self.sync_interval = sync_interval
        self.metrics = NodeMetrics(p.id for p in self.consortium.participants)
        self.store = Store(cfg.data_dir)
        self.core = NodeCore(self.store, self.consortium, self.participant_id, self.key, clock)
        self.witness = Witness(self.store, self.consortium, self.participant_id, self.key, clock)
        self.view = ViewKeeper(self)
        self._tls_key = read_private(cfg.tls_key)  # a TLS key others can read is refused
        self._tls_cert = cfg.tls_cert.read_bytes()
        self._ca = cfg.ca_cert.read_bytes()
        self.links: dict[str, PeerLink] = {}
        self._cosig_lock = threading.Lock()
        self._cosigs: dict[str, str] = {}  # peer -> line, for _cosig_text
        self._cosig_text: str | None = None
        self._stop = threading.Event()
        self._refuse_file = refuse_file
        if refuse_file is not None:
            log.warning(
                json.dumps(
                    {
                        "event": "test-hook",
                        "hook": "refuse-file",
                        "path": str(refuse_file),
                        "note": "this node refuses the peers listed there; tests only",
                    }
                )
            )
        self._refused: frozenset[str] = frozenset()
        self._refuse_checked = 0.0
        self.member_port = 0
        self.public_port = 0
        self.tiles: tilesrv.TileServer | None = None  # the tlog-tiles endpoint, when configured
        self._restored = restored
        # How long an issuing call waits for the gate (node/feedgate.py) to open.
        self.issue_wait_s = 10.0
        self.gate = self._issue_gate()
        self.core.observer = self._observe
        self.core.subscribe(self._on_accepted)
        self.core.on_equivocation(self._on_equivocation)
        self.core.on_failure(self._on_storage_failure)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Node:
        self.core.start()
        self.view.start()
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
        rpc.add_ExchangeServicer_to_server(ExchangeService(self), self.member)
        rpc.add_AdminServicer_to_server(AdminService(self), self.member)
        rpc.add_AuditServicer_to_server(AuditService(self), self.member)
        member_creds = grpc.ssl_server_credentials(
            [(self._tls_key, self._tls_cert)], root_certificates=self._ca, require_client_auth=True
        )
        self.member_port = ports.add_secure_port(self.member, self.cfg, "member_listen",
                                                 member_creds)

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
        rpc.add_PublicServicer_to_server(PublicService(self), self.public)
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
        self.member.start()
        self.public.start()
        try:
            self.metrics.serve(self.cfg.metrics_listen)
        except OSError as e:
            log.warning("metrics endpoint not started: %s", e)
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
        self.core.checkpoint_if_changed() if self.core.ledger.size else None
        creds = self.client_credentials()
        for p in self.consortium.participants:
            if p.id == self.participant_id or not p.member_endpoint:
                continue
            link = PeerLink(self, p, creds, self.sync_interval)
            self.links[p.id] = link
            link.start()
        self._ticker = threading.Thread(target=self._tick_loop, name="checkpoints", daemon=True)
        self._ticker.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        if self.core.failure is not None:  # the store failed while starting
            serving = health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set("", serving)
        self.health.set("markex.v1.Public", serving)
        log.info(
            json.dumps(
                {
                    "event": "started",
                    "participant": self.participant_id,
                    "member_port": self.member_port,
                    "public_port": self.public_port,
                    "metrics_port": self.metrics.port,
                    "tiles_port": self.tiles_port,
                    "log_size": self.core.ledger.size,
                }
            )
        )
        return self

    def stop(self, grace: float = 2.0) -> None:
        """Stop taking requests, finish queued writes, close the store.
        Acknowledged records are already synced; nothing is lost."""
        if self._stop.is_set():
            return
        self._stop.set()
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
        self.view.stop()
        self.metrics.stop()
        self.store.close()

    @property
    def tiles_port(self) -> int:
        """The tlog-tiles HTTPS port, 0 when it is off (node/tilesrv.py)."""
        return 0 if self.tiles is None else self.tiles.port

    def client_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._ca, private_key=self._tls_key, certificate_chain=self._tls_cert
        )

    # ------------------------------------------------------------ events
    def _on_accepted(self, records: list[Record]) -> None:
        now = self.clock()
        own = [r.envelope for r in records if r.issuer == self.participant_id]
        for r in records:
            if r.issuer != self.participant_id:
                self.metrics.propagation.observe(max(0, now - r.issued_at_ms) / 1000)
        self.metrics.log_size.set(self.core.ledger.size)
        if own:
            for link in self.links.values():
                link.enqueue(own)
        self.view.apply(records)

    def _issue_gate(self) -> IssueGate:
        """Which case of node/feedgate.py this start is, from the store and the operator."""
        peers = [
            p.id
            for p in self.consortium.participants
            if p.id != self.participant_id and p.member_endpoint
        ]
        quorum = self.consortium.policy.restore_quorum
        own = self.core.ledger.feed(self.participant_id).seq
        if self._restored:
            why = "the operator marked this node's store as restored from a backup"
            return IssueGate(RESTORE, peers, quorum, why)
        if own > 0:
            return IssueGate(OWN_STORE, peers, quorum)
        if self.cfg.new_feed:
            return IssueGate(NEW_FEED, peers, quorum)
        why = "this node's store holds none of its own feed and node.toml does not state it is new"
        return IssueGate(RESTORE, peers, quorum, why)

    def issue_refusal(self) -> str | None:
        """None when this node may sign its next own record now; else why not."""
        feed = self.core.ledger.feed(self.participant_id)
        return self.gate.refusal(feed.seq, feed.head_id)

    def _on_storage_failure(self, err: StorageFailure) -> None:
        """The store failed: the node takes no writes until restarted, and says so."""
        log.critical(json.dumps({"event": "storage-failure", "error": str(err)}))
        if not hasattr(self, "health"):
            return  # start() has not made it yet; it reads core.failure itself
        for service in ("", "markex.v1.Public"):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    def peer_heads(self, peer: str, heads: pb.FeedHeads, proven: bool = False) -> None:
        """A peer's answer to Heads: what it holds of our own feed goes to the
        gate; `proven` when it also served that head record (PeerLink)."""
        for h in heads.heads:
            if h.issuer == self.participant_id:
                self.gate.report(peer, h.seq, h.head_id, proven)
                return
        self.gate.report(peer, 0, b"")

    def peer_unreachable(self, peer: str) -> None:
        self.gate.unreachable(peer)

    def _observe(self, status: str, reason: str | None) -> None:
        self.metrics.records.labels(status).inc()
        if reason is not None:
            self.metrics.rejected.labels(reason).inc()

    def _on_equivocation(self, proof: EquivocationProof) -> None:
        log.warning(json.dumps({"event": "equivocation", "first": proof.first.hex()[:64]}))
        self.view.invalidate()
        for link in self.links.values():
            link.report(proof)

    def fetch_evidence_from(self, peer: Participant) -> None:
        # Evidence is on the peer's member port (docs/publication.md), asked as a member;
        # only the peer's own certificate is accepted (its participant DNS name).
        channel = grpc.secure_channel(
            peer.member_endpoint,
            self.client_credentials(),
            options=[("grpc.ssl_target_name_override", participant_dns_name(peer.id))],
        )
        try:
            stub = rpc.AuditStub(channel)
            start = 0
            for _page in range(EVIDENCE_PAGES):  # a peer cannot keep us reading forever
                ev = stub.GetEvidence(pb.GetEvidenceRequest(start=start), timeout=5)
                for raw in ev.equivocations:
                    try:
                        self.core.add_equivocation(EquivocationProof.decode(raw))
                    except Exception as e:  # a bad proof from a peer changes nothing
                        log.warning("peer %s sent a bad equivocation proof: %s", peer.id, e)
                if ev.next_start <= start or not ev.equivocations:
                    return  # the end, or past the equivocations (forks are not ours to keep)
                start = ev.next_start
        finally:
            channel.close()

    # ------------------------------------------------------------ partitions (test hook)
    def refuses(self, peer: str) -> bool:
        if not self._refuse_file:
            return False
        now = time.monotonic()
        if now - self._refuse_checked > 0.1:
            self._refuse_checked = now
            try:
                text = Path(self._refuse_file).read_text()
                self._refused = frozenset(text.split())
            except OSError:
                self._refused = frozenset()
        return peer in self._refused

    # ------------------------------------------------------------ checkpoints
    def _tick_loop(self) -> None:
        while not self._stop.wait(CHECKPOINT_INTERVAL):
            if self.core.failure is not None:
                continue  # nothing to sign: the log cannot grow until a restart
            try:
                if self.core.checkpoint_if_changed() is not None:
                    for link in self.links.values():
                        link.cosign_now()
                self.view.tick()
            except Exception:
                log.exception("checkpoint tick failed")

    def current_log_checkpoint(self) -> tuple[str | None, int]:
        text = self.core.ledger.latest_checkpoint()
        if text is None:
            return None, 0
        cp = note.Checkpoint.parse_body(note.Note.parse(text).text)
        return text, cp.size

    def has_cosignature(self, peer: str, text: str) -> bool:
        with self._cosig_lock:
            return self._cosig_text == text and peer in self._cosigs

    def add_cosignature(self, peer: str, text: str, line: str) -> None:
        p = self.consortium.participant(peer)
        if p is None:
            return
        from node.witness import witness_name

        body = note.Note.parse(text).text
        sig = note.NoteSignature.from_line(line.rstrip("\n"))
        note.verify_cosignature(body, sig, witness_name(self.consortium.name, peer), p.public_key)
        with self._cosig_lock:
            if self._cosig_text != text:
                # A newer checkpoint: keep the quorum-cosigned one until it has its own.
                if self._cosig_text is not None and len(self._cosigs) >= self.quorum():
                    self._store_cosigned()
                self._cosig_text, self._cosigs = text, {}
            self._cosigs[peer] = line if line.endswith("\n") else line + "\n"
            if len(self._cosigs) >= self.quorum():
                self._store_cosigned()

    def _store_cosigned(self) -> None:
        assert self._cosig_text is not None
        full = note.add_signature_lines(self._cosig_text, sorted(self._cosigs.values()))
        # Not synced: lost in a crash, the cosignatures are collected again.
        self.store.put("checkpoints", b"log/cosigned", full.encode(), sync=False)

    def quorum(self) -> int:
        return self.consortium.policy.cosign_quorum

    def log_checkpoint_note(self) -> str | None:
        """The newest checkpoint with a quorum of cosignatures; else the newest
        signed one with what cosignatures it has so far."""
        with self._cosig_lock:
            latest = self.core.ledger.latest_checkpoint()
            partial = latest
            if latest is not None and latest == self._cosig_text and self._cosigs:
                partial = note.add_signature_lines(latest, sorted(self._cosigs.values()))
                if len(self._cosigs) >= self.quorum():
                    return partial
        v = self.store.get("checkpoints", b"log/cosigned")
        if v is not None:
            return v.decode()
        return partial

    def fork_evidence(self) -> list[bytes]:
        return self.witness.forks() + self.view.forks()

    # ------------------------------------------------------------ reads
    def feed_heads_pb(self) -> pb.FeedHeads:
        heads = []
        for issuer, st in sorted(self.core.ledger.feeds().items()):
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

    def lookup(self, number: str, at_ms: int, with_proof: bool) -> pb.LookupResponse:
        return self.view.lookup(number, at_ms or self.clock(), with_proof)

    def lookup_batch(
        self, numbers: list[str], at_ms: int, with_proofs: bool
    ) -> pb.LookupBatchResponse:
        return self.view.lookup_batch(numbers, at_ms or self.clock(), with_proofs)

    def view_checkpoint_note(self) -> str | None:
        return self.view.checkpoint_note()

    def cosign_view(self, peer: str, text: str) -> str:
        return self.view.cosign(peer, text)

    def view_cosign_with(self, link: PeerLink) -> None:
        self.view.request_cosign(link)


def run_node(cfg: NodeConfig, *, refuse_file: Path | None = None, restored: bool = False) -> int:
    """`markex node run`: serve until SIGTERM/SIGINT, then stop cleanly.
    `refuse_file` is the tests' partition hook (`--test-refuse-file`), off
    unless given; `restored` is `--restored` (see Node)."""
    from node import logs

    logs.setup(cfg.participant)
    ports.check_free(cfg)  # before the store opens: a taken port says which key to change
    interval = float(os.environ.get("MARKEX_SYNC_INTERVAL", "0.5"))
    node = Node(cfg, sync_interval=interval, refuse_file=refuse_file, restored=restored).start()
    done = threading.Event()

    def _term(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    print(
        json.dumps(
            {
                "participant": node.participant_id,
                "member_port": node.member_port,
                "public_port": node.public_port,
                "metrics_port": node.metrics.port,
                "tiles_port": node.tiles_port,
            }
        ),
        flush=True,
    )
    done.wait()
    node.stop()
    log.info(json.dumps({"event": "stopped", "participant": node.participant_id}))
    return 0
