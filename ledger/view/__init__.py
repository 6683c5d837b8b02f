"""The national view: `resolve`, `NationalView`, view entries, the view root and proofs.

The view is a pure function of a *set* of records (every feed up to a vector
V): the same set, in any order and in any split into batches, gives the same
entries and the same root on every node. No clock is read here; an entry
carries the times at which each of its facts holds and `Entry.evaluate(at_ms)`
answers for an explicit time. The rules are written down in docs/view.md.

Layout::

    records ──facts.fact_of──▶ the record index of a state (facts, referrers)
                                   │ update.apply_records: only the touched numbers
                                   ▼
           build.EntryBuilder ──▶ Entry (canonical JSON bytes) ─ entry hash ─▶ leaf
                                   │
        key = SHA-256("markex/v1/view/key" 0x00 number); position = its first 64 bits
        root = sparse Merkle tree of depth 64 over the positions (ledger/viewtree.py)

The modules, one concern each:

    parts.py       the parts of an entry (marks, appeals, protections, ...)
    entries.py     `Entry`, its canonical bytes and strict decoding, `entry_hash`
    resolution.py  an entry evaluated at one time (`Resolution`)
    proof.py       `verify_lookup` (what a client runs), `bucket_of`
    checkpoint.py  view checkpoints: text, parse, sign, open
    facts.py       record -> fact (one builder per payload class), what an entry keeps
    build.py       `EntryBuilder`: one number's entry from its facts
    state.py       the `ViewState` interface and the in-memory state
    stored.py      the state in a node's store (the view* column families)
    update.py      the one apply algorithm, over any `ViewState`
    national.py    `NationalView`, `resolve`, `catch_up`, `rebuild_from_ledger`

A view lives in memory (`NationalView(consortium)`: resolve, tests, auditors)
or in a node's store (`NationalView.open(store, consortium)`: only the tree's
dense top in memory, one atomic unsynced batch per apply, vector included;
`catch_up(view, ledger)` applies what the ledger holds beyond the vector).
Both run the same apply over their state, so bytes and roots are equal.

Errors: `verify_lookup` raises MalformedProof (ill-formed or non-canonical
proof, entry bytes that do not decode) or ProofMismatch (well formed, wrong root);
`Entry.decode` raises BadInput; `parse_view_checkpoint` raises MalformedNote;
`open_view_checkpoint` also BadSignature; `rebuild_from_ledger` and
`catch_up` raise StorageFailure for stored records that do not parse; a
store-backed view raises StorageFailure when its store fails (and then
changes nothing).
"""

from __future__ import annotations

from ledger.names import view_origin
from ledger.view.checkpoint import (
    MAX_SIGNED_AT_MS,
    SIGNED_AT_KEYWORD,
    ViewCheckpoint,
    open_view_checkpoint,
    parse_view_checkpoint,
    sign_view_checkpoint,
    view_checkpoint_text,
)
from ledger.view.entries import Entry, entry_hash
from ledger.view.facts import CorrectionFact as _CorrectionFact  # noqa: F401
from ledger.view.facts import MarkFact as _MarkFact  # noqa: F401
from ledger.view.facts import ReassignmentFact as _ReassignmentFact  # noqa: F401
from ledger.view.national import NationalView, catch_up, rebuild_from_ledger, resolve
from ledger.view.parts import (
    APPEAL_STATUSES,
    APPEAL_UPHELD,
    APPEAL_WITHDRAWN,
    ENTRY_VERSION,
    EXPIRED,
    MAX_NUMBER_BYTES,
    PENDING,
    PROTECTED,
    REASONS,
    REASSIGNED,
    REJECTED,
    RISK_HIGH,
    RISK_MEDIUM,
    RISK_NONE,
    SUPERSEDED,
    UPHELD,
    WITHDRAWN,
    Appeal,
    CategoryInfo,
    EntryMark,
    EntryReassignment,
    Protection,
    Recategorization,
    Rules,
    SetAsideSpan,
)
from ledger.view.proof import bucket_of, verify_lookup
from ledger.view.resolution import AppealState, Marker, Resolution, SetAside
from ledger.view.stored import mark_body as _mark_body  # noqa: F401
from ledger.viewtree import PROOF_VERSION, ViewProof, tree_root, view_key

# Also importable (the noqa lines above): the fact classes and the mark's index
# body under the private names tests have used (_MarkFact, _mark_body, ...).
__all__ = [
    "APPEAL_STATUSES",
    "APPEAL_UPHELD",
    "APPEAL_WITHDRAWN",
    "ENTRY_VERSION",
    "EXPIRED",
    "MAX_NUMBER_BYTES",
    "MAX_SIGNED_AT_MS",
    "PENDING",
    "PROOF_VERSION",
    "PROTECTED",
    "REASONS",
    "REASSIGNED",
    "REJECTED",
    "RISK_HIGH",
    "RISK_MEDIUM",
    "RISK_NONE",
    "SIGNED_AT_KEYWORD",
    "SUPERSEDED",
    "UPHELD",
    "WITHDRAWN",
    "Appeal",
    "AppealState",
    "CategoryInfo",
    "Entry",
    "EntryMark",
    "EntryReassignment",
    "Marker",
    "NationalView",
    "Protection",
    "Recategorization",
    "Resolution",
    "Rules",
    "SetAside",
    "SetAsideSpan",
    "ViewCheckpoint",
    "ViewProof",
    "bucket_of",
    "catch_up",
    "entry_hash",
    "open_view_checkpoint",
    "parse_view_checkpoint",
    "rebuild_from_ledger",
    "resolve",
    "sign_view_checkpoint",
    "tree_root",
    "verify_lookup",
    "view_checkpoint_text",
    "view_key",
    "view_origin",
]
