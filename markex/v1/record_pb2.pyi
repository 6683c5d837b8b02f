from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CorrectionAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CORRECTION_ACTION_UNSPECIFIED: _ClassVar[CorrectionAction]
    CORRECTION_ACTION_WITHDRAW: _ClassVar[CorrectionAction]
    CORRECTION_ACTION_RECATEGORIZE: _ClassVar[CorrectionAction]

class AppealOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPEAL_OUTCOME_UNSPECIFIED: _ClassVar[AppealOutcome]
    APPEAL_OUTCOME_UPHOLD: _ClassVar[AppealOutcome]
    APPEAL_OUTCOME_REJECT: _ClassVar[AppealOutcome]

class HandlingFinding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HANDLING_FINDING_UNSPECIFIED: _ClassVar[HandlingFinding]
    HANDLING_FINDING_CONFIRMED: _ClassVar[HandlingFinding]
    HANDLING_FINDING_NOT_CONFIRMED: _ClassVar[HandlingFinding]
    HANDLING_FINDING_NOT_OURS: _ClassVar[HandlingFinding]

class HandlingAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HANDLING_ACTION_UNSPECIFIED: _ClassVar[HandlingAction]
    HANDLING_ACTION_MARK: _ClassVar[HandlingAction]
    HANDLING_ACTION_WARNING: _ClassVar[HandlingAction]
    HANDLING_ACTION_SUSPENDED: _ClassVar[HandlingAction]
CORRECTION_ACTION_UNSPECIFIED: CorrectionAction
CORRECTION_ACTION_WITHDRAW: CorrectionAction
CORRECTION_ACTION_RECATEGORIZE: CorrectionAction
APPEAL_OUTCOME_UNSPECIFIED: AppealOutcome
APPEAL_OUTCOME_UPHOLD: AppealOutcome
APPEAL_OUTCOME_REJECT: AppealOutcome
HANDLING_FINDING_UNSPECIFIED: HandlingFinding
HANDLING_FINDING_CONFIRMED: HandlingFinding
HANDLING_FINDING_NOT_CONFIRMED: HandlingFinding
HANDLING_FINDING_NOT_OURS: HandlingFinding
HANDLING_ACTION_UNSPECIFIED: HandlingAction
HANDLING_ACTION_MARK: HandlingAction
HANDLING_ACTION_WARNING: HandlingAction
HANDLING_ACTION_SUSPENDED: HandlingAction

class SignedRecord(_message.Message):
    __slots__ = ("body", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signature: bytes
    def __init__(self, body: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("issuer", "seq", "prev_id", "issued_at_ms", "mark", "correction", "reassignment", "preference", "marketer_line", "complaint", "handling", "sanction")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PREV_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MARK_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    REASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    MARKETER_LINE_FIELD_NUMBER: _ClassVar[int]
    COMPLAINT_FIELD_NUMBER: _ClassVar[int]
    HANDLING_FIELD_NUMBER: _ClassVar[int]
    SANCTION_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    seq: int
    prev_id: bytes
    issued_at_ms: int
    mark: Mark
    correction: Correction
    reassignment: Reassignment
    preference: Preference
    marketer_line: MarketerLine
    complaint: Complaint
    handling: Handling
    sanction: Sanction
    def __init__(self, issuer: _Optional[str] = ..., seq: _Optional[int] = ..., prev_id: _Optional[bytes] = ..., issued_at_ms: _Optional[int] = ..., mark: _Optional[_Union[Mark, _Mapping]] = ..., correction: _Optional[_Union[Correction, _Mapping]] = ..., reassignment: _Optional[_Union[Reassignment, _Mapping]] = ..., preference: _Optional[_Union[Preference, _Mapping]] = ..., marketer_line: _Optional[_Union[MarketerLine, _Mapping]] = ..., complaint: _Optional[_Union[Complaint, _Mapping]] = ..., handling: _Optional[_Union[Handling, _Mapping]] = ..., sanction: _Optional[_Union[Sanction, _Mapping]] = ...) -> None: ...

class Mark(_message.Message):
    __slots__ = ("number", "category", "score", "reports", "observed_at_ms", "expires_at_ms", "evidence_digest")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    number: str
    category: str
    score: int
    reports: int
    observed_at_ms: int
    expires_at_ms: int
    evidence_digest: bytes
    def __init__(self, number: _Optional[str] = ..., category: _Optional[str] = ..., score: _Optional[int] = ..., reports: _Optional[int] = ..., observed_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., evidence_digest: _Optional[bytes] = ...) -> None: ...

class Correction(_message.Message):
    __slots__ = ("targets", "action", "category", "reason", "appeal_id", "outcome")
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    APPEAL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedScalarFieldContainer[bytes]
    action: CorrectionAction
    category: str
    reason: str
    appeal_id: bytes
    outcome: AppealOutcome
    def __init__(self, targets: _Optional[_Iterable[bytes]] = ..., action: _Optional[_Union[CorrectionAction, str]] = ..., category: _Optional[str] = ..., reason: _Optional[str] = ..., appeal_id: _Optional[bytes] = ..., outcome: _Optional[_Union[AppealOutcome, str]] = ...) -> None: ...

class Reassignment(_message.Message):
    __slots__ = ("number", "effective_at_ms")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    number: str
    effective_at_ms: int
    def __init__(self, number: _Optional[str] = ..., effective_at_ms: _Optional[int] = ...) -> None: ...

class TimeBand(_message.Message):
    __slots__ = ("start_minute", "end_minute")
    START_MINUTE_FIELD_NUMBER: _ClassVar[int]
    END_MINUTE_FIELD_NUMBER: _ClassVar[int]
    start_minute: int
    end_minute: int
    def __init__(self, start_minute: _Optional[int] = ..., end_minute: _Optional[int] = ...) -> None: ...

class Preference(_message.Message):
    __slots__ = ("subscriber", "key_id", "refuse", "modes", "allowed", "days", "effective_from_ms", "until_ms")
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REFUSE_FIELD_NUMBER: _ClassVar[int]
    MODES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FROM_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    subscriber: bytes
    key_id: bytes
    refuse: _containers.RepeatedScalarFieldContainer[str]
    modes: _containers.RepeatedScalarFieldContainer[str]
    allowed: _containers.RepeatedCompositeFieldContainer[TimeBand]
    days: _containers.RepeatedScalarFieldContainer[str]
    effective_from_ms: int
    until_ms: int
    def __init__(self, subscriber: _Optional[bytes] = ..., key_id: _Optional[bytes] = ..., refuse: _Optional[_Iterable[str]] = ..., modes: _Optional[_Iterable[str]] = ..., allowed: _Optional[_Iterable[_Union[TimeBand, _Mapping]]] = ..., days: _Optional[_Iterable[str]] = ..., effective_from_ms: _Optional[int] = ..., until_ms: _Optional[int] = ...) -> None: ...

class MarketerLine(_message.Message):
    __slots__ = ("number", "prefix", "enterprise", "uscc", "industry", "deregisters")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_FIELD_NUMBER: _ClassVar[int]
    USCC_FIELD_NUMBER: _ClassVar[int]
    INDUSTRY_FIELD_NUMBER: _ClassVar[int]
    DEREGISTERS_FIELD_NUMBER: _ClassVar[int]
    number: str
    prefix: bool
    enterprise: str
    uscc: str
    industry: str
    deregisters: bytes
    def __init__(self, number: _Optional[str] = ..., prefix: _Optional[bool] = ..., enterprise: _Optional[str] = ..., uscc: _Optional[str] = ..., industry: _Optional[str] = ..., deregisters: _Optional[bytes] = ...) -> None: ...

class Complaint(_message.Message):
    __slots__ = ("number", "category", "call_at_ms", "channel", "complainant", "key_id", "description_digest", "addressed_to")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CALL_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    COMPLAINANT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ADDRESSED_TO_FIELD_NUMBER: _ClassVar[int]
    number: str
    category: str
    call_at_ms: int
    channel: str
    complainant: bytes
    key_id: bytes
    description_digest: bytes
    addressed_to: str
    def __init__(self, number: _Optional[str] = ..., category: _Optional[str] = ..., call_at_ms: _Optional[int] = ..., channel: _Optional[str] = ..., complainant: _Optional[bytes] = ..., key_id: _Optional[bytes] = ..., description_digest: _Optional[bytes] = ..., addressed_to: _Optional[str] = ...) -> None: ...

class Handling(_message.Message):
    __slots__ = ("complaints", "finding", "forward_to", "action", "mark_id", "feedback_reported_at_ms", "feedback_complainant_at_ms")
    COMPLAINTS_FIELD_NUMBER: _ClassVar[int]
    FINDING_FIELD_NUMBER: _ClassVar[int]
    FORWARD_TO_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MARK_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_REPORTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_COMPLAINANT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    complaints: _containers.RepeatedScalarFieldContainer[bytes]
    finding: HandlingFinding
    forward_to: str
    action: HandlingAction
    mark_id: bytes
    feedback_reported_at_ms: int
    feedback_complainant_at_ms: int
    def __init__(self, complaints: _Optional[_Iterable[bytes]] = ..., finding: _Optional[_Union[HandlingFinding, str]] = ..., forward_to: _Optional[str] = ..., action: _Optional[_Union[HandlingAction, str]] = ..., mark_id: _Optional[bytes] = ..., feedback_reported_at_ms: _Optional[int] = ..., feedback_complainant_at_ms: _Optional[int] = ...) -> None: ...

class Sanction(_message.Message):
    __slots__ = ("enterprise", "uscc", "licence", "reason", "document", "listed_at_ms", "delist")
    ENTERPRISE_FIELD_NUMBER: _ClassVar[int]
    USCC_FIELD_NUMBER: _ClassVar[int]
    LICENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    LISTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DELIST_FIELD_NUMBER: _ClassVar[int]
    enterprise: str
    uscc: str
    licence: str
    reason: str
    document: str
    listed_at_ms: int
    delist: bool
    def __init__(self, enterprise: _Optional[str] = ..., uscc: _Optional[str] = ..., licence: _Optional[str] = ..., reason: _Optional[str] = ..., document: _Optional[str] = ..., listed_at_ms: _Optional[int] = ..., delist: _Optional[bool] = ...) -> None: ...
