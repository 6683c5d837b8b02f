"""The online auditor's client side: `ledger.audit` over a node's gRPC
services, and the small state file that lets the next audit start from the
last audited checkpoint. Used by `markex audit` (node/auditcli.py), the demo
and the soak test; it prints nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import grpc

from keys import ConfigError
from keys.consortium import Consortium
from ledger import audit, note
from ledger.errors import BadInput, LedgerError, NotFound
from ledger.names import origin_of, participant_of_log
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
from node.connect import Connect, Dial, TlsConnect, reader_id
from node.status import error_from_rpc

EVIDENCE_PAGES = 1000  # pages of GetEvidence read at most (a node could serve them forever)


class GrpcLogSource:
    """`ledger.audit.LogSource` over a node's gRPC services: checkpoints, proofs
    and feed heads from `Public`; raw entries and evidence from `Audit`, which
    the node serves only to members and auditors (docs/publication.md)."""

    def __init__(
        self, stub: rpc.PublicStub, audit_stub: rpc.AuditStub, timeout: float = 30
    ) -> None:
        self.stub = stub
        self.audit = audit_stub
        self.timeout = timeout

    def _rpc(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from e

    def log_checkpoint(self) -> str:
        return self._rpc(self.stub.GetLogCheckpoint, pb.GetLogCheckpointRequest()).note

    def entries(self, start: int, end: int) -> list[bytes]:
        r = self._rpc(self.audit.GetEntries, pb.GetEntriesRequest(start=start, end=end))
        if r.start != start:
            raise BadInput(f"asked for entries from {start}, the node answered from {r.start}")
        return list(r.envelopes)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        r = self._rpc(
            self.stub.GetConsistencyProof,
            pb.GetConsistencyProofRequest(old_size=old_size, new_size=new_size),
        )
        return list(r.path)

    def view_checkpoint(self) -> str | None:
        try:
            return self._rpc(self.stub.GetViewCheckpoint, pb.GetViewCheckpointRequest()).note
        except NotFound:
            return None

    def feed_heads(self) -> dict[str, tuple[int, bytes, bool]]:
        r = self._rpc(self.stub.GetFeedHeads, pb.FeedHeadsRequest())
        return {h.issuer: (h.seq, h.head_id, h.frozen) for h in r.heads}

    def evidence(self) -> tuple[list[bytes], list[bytes]]:
        """Every page of the node's evidence (GetEvidence is paged)."""
        eqs: list[bytes] = []
        forks: list[bytes] = []
        start = 0
        for _page in range(EVIDENCE_PAGES):
            r = self._rpc(self.audit.GetEvidence, pb.GetEvidenceRequest(start=start))
            eqs.extend(r.equivocations)
            forks.extend(r.forks)
            if r.next_start <= start:  # 0 at the end; never backwards
                return eqs, forks
            start = r.next_start
        raise BadInput(f"the node serves more than {EVIDENCE_PAGES} pages of evidence")


# ------------------------------------------------------------------ state file


def load_state(path: Path, cons: Consortium) -> audit.AuditState | None:
    """The state a previous audit saved at `path` (None when there is none);
    BadInput when it does not parse or is not a verified checkpoint of `cons`."""
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"audit state {path} does not parse: {e}") from e
    try:
        return audit.AuditState.from_json(obj, cons)
    except LedgerError as e:
        raise BadInput(
            f"audit state {path} is not a verified checkpoint of this consortium ({e}); "
            "remove it to start a fresh audit"
        ) from e


def save_state(path: Path, state: audit.AuditState) -> None:
    """Write `state` to `path` whole or not at all (a temporary file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------ the audit


def log_of(cons: Consortium, node: str, src: GrpcLogSource) -> str:
    """The participant whose log `node` serves (an id, or found from the
    checkpoint's origin when the node is given as HOST:PORT)."""
    if cons.participant(node) is not None:
        return node
    origin = origin_of(note.Note.parse(src.log_checkpoint()).text)
    p = participant_of_log(cons.name, cons.participants, origin)
    if p is None:
        raise ConfigError(f"the node at {node} serves log {origin!r}, not one of {cons.name}")
    return p.id


def audit_online(
    directory: Path,
    cons: Consortium,
    node: str,
    state_path: Path | None,
    progress: audit.Progress | None = None,
    as_id: str | None = None,
    *,
    connect: Connect | None = None,
) -> tuple[audit.AuditReport, str]:
    """Audit `node` through its public port and, as member or auditor `as_id`
    (default: the first auditor), its Audit service; keep the state at
    `state_path` (None: a full audit that remembers nothing). `connect`
    reaches the node (default: TLS channels, closed when the audit ends)."""
    ep = client.resolve_node(cons, node)
    reader = reader_id(cons, as_id)
    with TlsConnect() as tls:
        dial = connect or tls
        src = GrpcLogSource(
            dial("public", Dial(directory, ep)), dial("audit", Dial(directory, ep, reader))
        )
        pid = log_of(cons, node, src)
        state = load_state(state_path, cons) if state_path is not None else None
        if state is not None and state.log != pid:
            raise BadInput(f"audit state {state_path} is for {state.log}, not {pid}")
        rep, new_state = audit.audit_source(src, cons, pid, state, progress=progress)
    if state_path is not None and new_state is not None:
        save_state(state_path, new_state)
    return rep, pid


def audit_node_online(directory: Path, cons: Consortium, pid: str) -> dict[str, Any]:
    """A full online audit of one node, as a JSON-ready dict (used by the demo)."""
    rep, _ = audit_online(Path(directory), cons, pid, None)
    return rep.to_json()
