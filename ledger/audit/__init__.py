"""The auditor: verify a node's log, checkpoints, store and view without trusting the node.

Two ways in, one set of checks:

- `audit_store(path, consortium, node)` (`offline`): a stopped node's RocksDB
  files (opened read-only), plus a check of the store's own indexes against
  what the records imply (`storepass`).
- `audit_source(source, consortium, node, state)` (`online`): a running node
  through a `LogSource` (node/auditcli.py adapts the gRPC Public service),
  resuming from an `AuditState` (`state`) so a second audit reads only what
  is new.

The modules, one concern each:

    report     Finding, AuditReport: what the audit found
    envelopes  check_envelopes and its process pool: parse, issuer, signature,
               role, time, per envelope
    chain      LogChecker: the order-dependent checks (feeds, duplicates,
               equivocations, Merkle roots, the views recomputed)
    cosign     which members validly cosigned a checkpoint, and when
    offline    audit_store; storepass: its pass over the leaves and indexes
    online     audit_source; state: LogSource and AuditState
    (ledger.evidence: the portable evidence format the audit writes)

Checkpoints: the node's signature and origin (`log_origin`), the root at the
checkpoint's size, cosignatures counted against `policy.cosign_quorum` (a
cosignature that does not verify is a finding, too few is a warning). Two
checkpoints of one log are joined by a consistency proof; when none joins
them the auditor writes *proven* fork evidence (`verify_evidence`).

Results go into an `AuditReport`: `findings` (errors: something is wrong) and
`warnings` (worth knowing, not wrong), each naming kind, leaf index, record
id, issuer and what failed. `report.ok` is True only without errors. Verifiers
elsewhere raise; the auditor collects instead and goes on.
"""

from __future__ import annotations

from ledger.audit.chain import LogChecker
from ledger.audit.envelopes import Checked, check_envelopes
from ledger.audit.offline import audit_store
from ledger.audit.online import audit_source
from ledger.audit.report import MAX_PER_KIND, AuditReport, Finding, Progress
from ledger.audit.state import AuditState, LogSource
from ledger.audit.storepass import CHUNK
from ledger.evidence import (
    EVIDENCE_FORMAT,
    equivocation_evidence,
    fork_evidence,
    log_fork_evidence,
    read_evidence,
    verify_evidence,
    view_fork_evidence,
)
from ledger.names import witness_name
from ledger.payloads import check_issuer as check_role

__all__ = [
    "CHUNK",
    "EVIDENCE_FORMAT",
    "MAX_PER_KIND",
    "AuditReport",
    "AuditState",
    "Checked",
    "Finding",
    "LogChecker",
    "LogSource",
    "Progress",
    "audit_source",
    "audit_store",
    "check_envelopes",
    "check_role",
    "equivocation_evidence",
    "fork_evidence",
    "log_fork_evidence",
    "read_evidence",
    "verify_evidence",
    "view_fork_evidence",
    "witness_name",
]
