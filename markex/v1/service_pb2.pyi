from markex.v1 import record_pb2 as _record_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_MODE_VOICE: _ClassVar[CallMode]
    CALL_MODE_SMS: _ClassVar[CallMode]

class ScreenAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCREEN_ACTION_UNSPECIFIED: _ClassVar[ScreenAction]
    SCREEN_ACTION_ALLOW: _ClassVar[ScreenAction]
    SCREEN_ACTION_LABEL: _ClassVar[ScreenAction]
    SCREEN_ACTION_WARN: _ClassVar[ScreenAction]
    SCREEN_ACTION_BLOCK: _ClassVar[ScreenAction]
CALL_MODE_VOICE: CallMode
CALL_MODE_SMS: CallMode
SCREEN_ACTION_UNSPECIFIED: ScreenAction
SCREEN_ACTION_ALLOW: ScreenAction
SCREEN_ACTION_LABEL: ScreenAction
SCREEN_ACTION_WARN: ScreenAction
SCREEN_ACTION_BLOCK: ScreenAction

class GetLogCheckpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LogCheckpoint(_message.Message):
    __slots__ = ("note", "size", "root")
    NOTE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    note: str
    size: int
    root: bytes
    def __init__(self, note: _Optional[str] = ..., size: _Optional[int] = ..., root: _Optional[bytes] = ...) -> None: ...

class GetEntriesRequest(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Entries(_message.Message):
    __slots__ = ("start", "envelopes")
    START_FIELD_NUMBER: _ClassVar[int]
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    start: int
    envelopes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, start: _Optional[int] = ..., envelopes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("index", "size")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    index: int
    size: int
    def __init__(self, index: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class InclusionProof(_message.Message):
    __slots__ = ("index", "size", "leaf_hash", "path")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    index: int
    size: int
    leaf_hash: bytes
    path: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, index: _Optional[int] = ..., size: _Optional[int] = ..., leaf_hash: _Optional[bytes] = ..., path: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("old_size", "new_size")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    new_size: int
    def __init__(self, old_size: _Optional[int] = ..., new_size: _Optional[int] = ...) -> None: ...

class ConsistencyProof(_message.Message):
    __slots__ = ("old_size", "new_size", "path")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    new_size: int
    path: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, old_size: _Optional[int] = ..., new_size: _Optional[int] = ..., path: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetRecordRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    def __init__(self, id: _Optional[bytes] = ...) -> None: ...

class RecordEnvelope(_message.Message):
    __slots__ = ("envelope", "index")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    index: int
    def __init__(self, envelope: _Optional[bytes] = ..., index: _Optional[int] = ...) -> None: ...

class FeedHeadsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FeedHead(_message.Message):
    __slots__ = ("issuer", "seq", "head_id", "frozen", "frozen_at")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HEAD_ID_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    FROZEN_AT_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    seq: int
    head_id: bytes
    frozen: bool
    frozen_at: int
    def __init__(self, issuer: _Optional[str] = ..., seq: _Optional[int] = ..., head_id: _Optional[bytes] = ..., frozen: _Optional[bool] = ..., frozen_at: _Optional[int] = ...) -> None: ...

class FeedHeads(_message.Message):
    __slots__ = ("heads",)
    HEADS_FIELD_NUMBER: _ClassVar[int]
    heads: _containers.RepeatedCompositeFieldContainer[FeedHead]
    def __init__(self, heads: _Optional[_Iterable[_Union[FeedHead, _Mapping]]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("number", "at_ms")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    number: str
    at_ms: int
    def __init__(self, number: _Optional[str] = ..., at_ms: _Optional[int] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("entry", "proof", "view_checkpoint", "number")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    VIEW_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    entry: bytes
    proof: bytes
    view_checkpoint: str
    number: str
    def __init__(self, entry: _Optional[bytes] = ..., proof: _Optional[bytes] = ..., view_checkpoint: _Optional[str] = ..., number: _Optional[str] = ...) -> None: ...

class LookupBatchRequest(_message.Message):
    __slots__ = ("numbers", "at_ms", "with_proofs")
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    WITH_PROOFS_FIELD_NUMBER: _ClassVar[int]
    numbers: _containers.RepeatedScalarFieldContainer[str]
    at_ms: int
    with_proofs: bool
    def __init__(self, numbers: _Optional[_Iterable[str]] = ..., at_ms: _Optional[int] = ..., with_proofs: _Optional[bool] = ...) -> None: ...

class LookupBatchResponse(_message.Message):
    __slots__ = ("results", "view_checkpoint")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    VIEW_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LookupResponse]
    view_checkpoint: str
    def __init__(self, results: _Optional[_Iterable[_Union[LookupResponse, _Mapping]]] = ..., view_checkpoint: _Optional[str] = ...) -> None: ...

class GetViewCheckpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ViewCheckpoint(_message.Message):
    __slots__ = ("note",)
    NOTE_FIELD_NUMBER: _ClassVar[int]
    note: str
    def __init__(self, note: _Optional[str] = ...) -> None: ...

class BadListRequest(_message.Message):
    __slots__ = ("at_ms", "size", "check")
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    size: int
    check: str
    def __init__(self, at_ms: _Optional[int] = ..., size: _Optional[int] = ..., check: _Optional[str] = ...) -> None: ...

class ProvenRecord(_message.Message):
    __slots__ = ("envelope", "index", "path")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    index: int
    path: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, envelope: _Optional[bytes] = ..., index: _Optional[int] = ..., path: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BadList(_message.Message):
    __slots__ = ("sanctions", "lines", "size", "at_ms", "number")
    SANCTIONS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    sanctions: _containers.RepeatedCompositeFieldContainer[ProvenRecord]
    lines: _containers.RepeatedCompositeFieldContainer[ProvenRecord]
    size: int
    at_ms: int
    number: str
    def __init__(self, sanctions: _Optional[_Iterable[_Union[ProvenRecord, _Mapping]]] = ..., lines: _Optional[_Iterable[_Union[ProvenRecord, _Mapping]]] = ..., size: _Optional[int] = ..., at_ms: _Optional[int] = ..., number: _Optional[str] = ...) -> None: ...

class WatchViewRequest(_message.Message):
    __slots__ = ("since",)
    SINCE_FIELD_NUMBER: _ClassVar[int]
    since: str
    def __init__(self, since: _Optional[str] = ...) -> None: ...

class WatchedEntry(_message.Message):
    __slots__ = ("number", "entry")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    number: str
    entry: bytes
    def __init__(self, number: _Optional[str] = ..., entry: _Optional[bytes] = ...) -> None: ...

class WatchViewMessage(_message.Message):
    __slots__ = ("entries", "checkpoint", "snapshot", "reason")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[WatchedEntry]
    checkpoint: str
    snapshot: bool
    reason: str
    def __init__(self, entries: _Optional[_Iterable[_Union[WatchedEntry, _Mapping]]] = ..., checkpoint: _Optional[str] = ..., snapshot: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class GetEvidenceRequest(_message.Message):
    __slots__ = ("start", "limit")
    START_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    start: int
    limit: int
    def __init__(self, start: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("equivocations", "forks", "next_start")
    EQUIVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    FORKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_START_FIELD_NUMBER: _ClassVar[int]
    equivocations: _containers.RepeatedScalarFieldContainer[bytes]
    forks: _containers.RepeatedScalarFieldContainer[bytes]
    next_start: int
    def __init__(self, equivocations: _Optional[_Iterable[bytes]] = ..., forks: _Optional[_Iterable[bytes]] = ..., next_start: _Optional[int] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("issuer", "after", "max")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    after: int
    max: int
    def __init__(self, issuer: _Optional[str] = ..., after: _Optional[int] = ..., max: _Optional[int] = ...) -> None: ...

class RecordBatch(_message.Message):
    __slots__ = ("envelopes",)
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, envelopes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PushAck(_message.Message):
    __slots__ = ("accepted", "duplicates", "buffered")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    buffered: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., buffered: _Optional[int] = ...) -> None: ...

class EquivocationProof(_message.Message):
    __slots__ = ("first", "second")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    first: bytes
    second: bytes
    def __init__(self, first: _Optional[bytes] = ..., second: _Optional[bytes] = ...) -> None: ...

class CosignRequest(_message.Message):
    __slots__ = ("note", "consistency_from", "proof", "old_size")
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FROM_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    note: str
    consistency_from: bytes
    proof: _containers.RepeatedScalarFieldContainer[bytes]
    old_size: int
    def __init__(self, note: _Optional[str] = ..., consistency_from: _Optional[bytes] = ..., proof: _Optional[_Iterable[bytes]] = ..., old_size: _Optional[int] = ...) -> None: ...

class CosignResponse(_message.Message):
    __slots__ = ("signature_line",)
    SIGNATURE_LINE_FIELD_NUMBER: _ClassVar[int]
    signature_line: str
    def __init__(self, signature_line: _Optional[str] = ...) -> None: ...

class ListComplaintsRequest(_message.Message):
    __slots__ = ("open_only", "overdue_only", "at_ms", "carrier")
    OPEN_ONLY_FIELD_NUMBER: _ClassVar[int]
    OVERDUE_ONLY_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    CARRIER_FIELD_NUMBER: _ClassVar[int]
    open_only: bool
    overdue_only: bool
    at_ms: int
    carrier: str
    def __init__(self, open_only: _Optional[bool] = ..., overdue_only: _Optional[bool] = ..., at_ms: _Optional[int] = ..., carrier: _Optional[str] = ...) -> None: ...

class ComplaintSummary(_message.Message):
    __slots__ = ("id", "number", "category", "call_at_ms", "filed_at_ms", "channel", "status", "ack_due_ms", "close_due_ms", "overdue", "forwarded_from", "addressed_to", "acknowledged_at_ms", "closed_at_ms", "closed_by", "finding", "issuer", "description_digest")
    ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CALL_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FILED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACK_DUE_MS_FIELD_NUMBER: _ClassVar[int]
    CLOSE_DUE_MS_FIELD_NUMBER: _ClassVar[int]
    OVERDUE_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FROM_FIELD_NUMBER: _ClassVar[int]
    ADDRESSED_TO_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_BY_FIELD_NUMBER: _ClassVar[int]
    FINDING_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_DIGEST_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    number: str
    category: str
    call_at_ms: int
    filed_at_ms: int
    channel: str
    status: str
    ack_due_ms: int
    close_due_ms: int
    overdue: bool
    forwarded_from: _containers.RepeatedScalarFieldContainer[str]
    addressed_to: str
    acknowledged_at_ms: int
    closed_at_ms: int
    closed_by: bytes
    finding: str
    issuer: str
    description_digest: bytes
    def __init__(self, id: _Optional[bytes] = ..., number: _Optional[str] = ..., category: _Optional[str] = ..., call_at_ms: _Optional[int] = ..., filed_at_ms: _Optional[int] = ..., channel: _Optional[str] = ..., status: _Optional[str] = ..., ack_due_ms: _Optional[int] = ..., close_due_ms: _Optional[int] = ..., overdue: _Optional[bool] = ..., forwarded_from: _Optional[_Iterable[str]] = ..., addressed_to: _Optional[str] = ..., acknowledged_at_ms: _Optional[int] = ..., closed_at_ms: _Optional[int] = ..., closed_by: _Optional[bytes] = ..., finding: _Optional[str] = ..., issuer: _Optional[str] = ..., description_digest: _Optional[bytes] = ...) -> None: ...

class ComplaintList(_message.Message):
    __slots__ = ("carrier", "at_ms", "complaints")
    CARRIER_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    COMPLAINTS_FIELD_NUMBER: _ClassVar[int]
    carrier: str
    at_ms: int
    complaints: _containers.RepeatedCompositeFieldContainer[ComplaintSummary]
    def __init__(self, carrier: _Optional[str] = ..., at_ms: _Optional[int] = ..., complaints: _Optional[_Iterable[_Union[ComplaintSummary, _Mapping]]] = ...) -> None: ...

class TrailRequest(_message.Message):
    __slots__ = ("number", "size", "at_ms")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    number: str
    size: int
    at_ms: int
    def __init__(self, number: _Optional[str] = ..., size: _Optional[int] = ..., at_ms: _Optional[int] = ...) -> None: ...

class TrailRecord(_message.Message):
    __slots__ = ("envelope", "index", "path")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    index: int
    path: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, envelope: _Optional[bytes] = ..., index: _Optional[int] = ..., path: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Trail(_message.Message):
    __slots__ = ("lookup", "records", "size")
    LOOKUP_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    lookup: LookupResponse
    records: _containers.RepeatedCompositeFieldContainer[TrailRecord]
    size: int
    def __init__(self, lookup: _Optional[_Union[LookupResponse, _Mapping]] = ..., records: _Optional[_Iterable[_Union[TrailRecord, _Mapping]]] = ..., size: _Optional[int] = ...) -> None: ...

class FindRecordsRequest(_message.Message):
    __slots__ = ("id_prefix", "limit")
    ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    id_prefix: str
    limit: int
    def __init__(self, id_prefix: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class FoundRecords(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ExportViewRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ViewExportPage(_message.Message):
    __slots__ = ("view_checkpoint", "entries")
    VIEW_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    view_checkpoint: str
    entries: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, view_checkpoint: _Optional[str] = ..., entries: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ComplaintRequest(_message.Message):
    __slots__ = ("number", "category", "call_at_ms", "channel", "complainant", "description")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CALL_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    COMPLAINANT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    number: str
    category: str
    call_at_ms: int
    channel: str
    complainant: str
    description: str
    def __init__(self, number: _Optional[str] = ..., category: _Optional[str] = ..., call_at_ms: _Optional[int] = ..., channel: _Optional[str] = ..., complainant: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class IssueBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[IssueItem]
    def __init__(self, items: _Optional[_Iterable[_Union[IssueItem, _Mapping]]] = ...) -> None: ...

class IssueResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[IssueResult]
    def __init__(self, results: _Optional[_Iterable[_Union[IssueResult, _Mapping]]] = ...) -> None: ...

class IssueItem(_message.Message):
    __slots__ = ("key", "mark", "correction", "reassignment", "preference", "line", "complaint", "handling", "sanction", "expires_after_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    MARK_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    REASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COMPLAINT_FIELD_NUMBER: _ClassVar[int]
    HANDLING_FIELD_NUMBER: _ClassVar[int]
    SANCTION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    mark: _record_pb2.Mark
    correction: CorrectionRequest
    reassignment: _record_pb2.Reassignment
    preference: PreferenceRequest
    line: _record_pb2.MarketerLine
    complaint: ComplaintRequest
    handling: _record_pb2.Handling
    sanction: _record_pb2.Sanction
    expires_after_ms: int
    def __init__(self, key: _Optional[bytes] = ..., mark: _Optional[_Union[_record_pb2.Mark, _Mapping]] = ..., correction: _Optional[_Union[CorrectionRequest, _Mapping]] = ..., reassignment: _Optional[_Union[_record_pb2.Reassignment, _Mapping]] = ..., preference: _Optional[_Union[PreferenceRequest, _Mapping]] = ..., line: _Optional[_Union[_record_pb2.MarketerLine, _Mapping]] = ..., complaint: _Optional[_Union[ComplaintRequest, _Mapping]] = ..., handling: _Optional[_Union[_record_pb2.Handling, _Mapping]] = ..., sanction: _Optional[_Union[_record_pb2.Sanction, _Mapping]] = ..., expires_after_ms: _Optional[int] = ...) -> None: ...

class IssueResult(_message.Message):
    __slots__ = ("item", "id", "issuer", "seq", "index", "appeal", "duplicate", "code", "error")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    APPEAL_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    item: int
    id: bytes
    issuer: str
    seq: int
    index: int
    appeal: bool
    duplicate: bool
    code: str
    error: str
    def __init__(self, item: _Optional[int] = ..., id: _Optional[bytes] = ..., issuer: _Optional[str] = ..., seq: _Optional[int] = ..., index: _Optional[int] = ..., appeal: _Optional[bool] = ..., duplicate: _Optional[bool] = ..., code: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class PreferenceRequest(_message.Message):
    __slots__ = ("number", "refuse", "modes", "allowed", "days", "effective_from_ms", "until_ms")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    REFUSE_FIELD_NUMBER: _ClassVar[int]
    MODES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FROM_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    number: str
    refuse: _containers.RepeatedScalarFieldContainer[str]
    modes: _containers.RepeatedScalarFieldContainer[str]
    allowed: _containers.RepeatedCompositeFieldContainer[_record_pb2.TimeBand]
    days: _containers.RepeatedScalarFieldContainer[str]
    effective_from_ms: int
    until_ms: int
    def __init__(self, number: _Optional[str] = ..., refuse: _Optional[_Iterable[str]] = ..., modes: _Optional[_Iterable[str]] = ..., allowed: _Optional[_Iterable[_Union[_record_pb2.TimeBand, _Mapping]]] = ..., days: _Optional[_Iterable[str]] = ..., effective_from_ms: _Optional[int] = ..., until_ms: _Optional[int] = ...) -> None: ...

class CorrectionRequest(_message.Message):
    __slots__ = ("targets", "action", "category", "reason", "appeal_id", "outcome", "wait_for_target")
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    APPEAL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_TARGET_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedScalarFieldContainer[bytes]
    action: _record_pb2.CorrectionAction
    category: str
    reason: str
    appeal_id: bytes
    outcome: _record_pb2.AppealOutcome
    wait_for_target: bool
    def __init__(self, targets: _Optional[_Iterable[bytes]] = ..., action: _Optional[_Union[_record_pb2.CorrectionAction, str]] = ..., category: _Optional[str] = ..., reason: _Optional[str] = ..., appeal_id: _Optional[bytes] = ..., outcome: _Optional[_Union[_record_pb2.AppealOutcome, str]] = ..., wait_for_target: _Optional[bool] = ...) -> None: ...

class Issued(_message.Message):
    __slots__ = ("id", "issuer", "seq", "appeal", "index")
    ID_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    APPEAL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    issuer: str
    seq: int
    appeal: bool
    index: int
    def __init__(self, id: _Optional[bytes] = ..., issuer: _Optional[str] = ..., seq: _Optional[int] = ..., appeal: _Optional[bool] = ..., index: _Optional[int] = ...) -> None: ...

class CodeRequest(_message.Message):
    __slots__ = ("number", "client_address")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    number: str
    client_address: str
    def __init__(self, number: _Optional[str] = ..., client_address: _Optional[str] = ...) -> None: ...

class CodeSent(_message.Message):
    __slots__ = ("number", "carrier", "expires_at_ms")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CARRIER_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    number: str
    carrier: str
    expires_at_ms: int
    def __init__(self, number: _Optional[str] = ..., carrier: _Optional[str] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class HolderAppeal(_message.Message):
    __slots__ = ("number", "code", "statement", "client_address")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    number: str
    code: str
    statement: str
    client_address: str
    def __init__(self, number: _Optional[str] = ..., code: _Optional[str] = ..., statement: _Optional[str] = ..., client_address: _Optional[str] = ...) -> None: ...

class ListAppealsRequest(_message.Message):
    __slots__ = ("pending_only",)
    PENDING_ONLY_FIELD_NUMBER: _ClassVar[int]
    pending_only: bool
    def __init__(self, pending_only: _Optional[bool] = ...) -> None: ...

class GetAppealRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    def __init__(self, id: _Optional[bytes] = ...) -> None: ...

class AppealSummary(_message.Message):
    __slots__ = ("id", "number", "appellant", "status", "filed_at_ms", "closed_at_ms", "closed_by", "closed_by_issuer", "closed_by_seq", "statement", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    APPELLANT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FILED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_BY_FIELD_NUMBER: _ClassVar[int]
    CLOSED_BY_ISSUER_FIELD_NUMBER: _ClassVar[int]
    CLOSED_BY_SEQ_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    number: str
    appellant: str
    status: str
    filed_at_ms: int
    closed_at_ms: int
    closed_by: bytes
    closed_by_issuer: str
    closed_by_seq: int
    statement: str
    reason: str
    def __init__(self, id: _Optional[bytes] = ..., number: _Optional[str] = ..., appellant: _Optional[str] = ..., status: _Optional[str] = ..., filed_at_ms: _Optional[int] = ..., closed_at_ms: _Optional[int] = ..., closed_by: _Optional[bytes] = ..., closed_by_issuer: _Optional[str] = ..., closed_by_seq: _Optional[int] = ..., statement: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AppealList(_message.Message):
    __slots__ = ("appeals",)
    APPEALS_FIELD_NUMBER: _ClassVar[int]
    appeals: _containers.RepeatedCompositeFieldContainer[AppealSummary]
    def __init__(self, appeals: _Optional[_Iterable[_Union[AppealSummary, _Mapping]]] = ...) -> None: ...

class ScreenRequest(_message.Message):
    __slots__ = ("caller", "callee", "at_ms", "mode", "tag")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    CALLEE_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    caller: str
    callee: str
    at_ms: int
    mode: CallMode
    tag: int
    def __init__(self, caller: _Optional[str] = ..., callee: _Optional[str] = ..., at_ms: _Optional[int] = ..., mode: _Optional[_Union[CallMode, str]] = ..., tag: _Optional[int] = ...) -> None: ...

class ScreenReason(_message.Message):
    __slots__ = ("code", "records", "detail")
    CODE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    code: str
    records: _containers.RepeatedScalarFieldContainer[bytes]
    detail: str
    def __init__(self, code: _Optional[str] = ..., records: _Optional[_Iterable[bytes]] = ..., detail: _Optional[str] = ...) -> None: ...

class ScreenDecision(_message.Message):
    __slots__ = ("action", "category", "reasons", "redress", "tag", "caller", "callee", "at_ms", "risk", "error")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    REDRESS_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    CALLEE_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    action: ScreenAction
    category: str
    reasons: _containers.RepeatedCompositeFieldContainer[ScreenReason]
    redress: str
    tag: int
    caller: str
    callee: str
    at_ms: int
    risk: str
    error: str
    def __init__(self, action: _Optional[_Union[ScreenAction, str]] = ..., category: _Optional[str] = ..., reasons: _Optional[_Iterable[_Union[ScreenReason, _Mapping]]] = ..., redress: _Optional[str] = ..., tag: _Optional[int] = ..., caller: _Optional[str] = ..., callee: _Optional[str] = ..., at_ms: _Optional[int] = ..., risk: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ScreenBatchRequest(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[ScreenRequest]
    def __init__(self, calls: _Optional[_Iterable[_Union[ScreenRequest, _Mapping]]] = ...) -> None: ...

class ScreenBatchResponse(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[ScreenDecision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[ScreenDecision, _Mapping]]] = ...) -> None: ...

class ReplicaStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FollowedLog(_message.Message):
    __slots__ = ("node", "log", "verified_size", "error", "resumed_size")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_SIZE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESUMED_SIZE_FIELD_NUMBER: _ClassVar[int]
    node: str
    log: str
    verified_size: int
    error: str
    resumed_size: int
    def __init__(self, node: _Optional[str] = ..., log: _Optional[str] = ..., verified_size: _Optional[int] = ..., error: _Optional[str] = ..., resumed_size: _Optional[int] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("state", "reason", "logs", "view_checkpoint", "evidence", "findings", "lookups")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    VIEW_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    state: str
    reason: str
    logs: _containers.RepeatedCompositeFieldContainer[FollowedLog]
    view_checkpoint: str
    evidence: _containers.RepeatedScalarFieldContainer[str]
    findings: _containers.RepeatedScalarFieldContainer[str]
    lookups: int
    def __init__(self, state: _Optional[str] = ..., reason: _Optional[str] = ..., logs: _Optional[_Iterable[_Union[FollowedLog, _Mapping]]] = ..., view_checkpoint: _Optional[str] = ..., evidence: _Optional[_Iterable[str]] = ..., findings: _Optional[_Iterable[str]] = ..., lookups: _Optional[int] = ...) -> None: ...
