from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostIdentity(_message.Message):
    __slots__ = ("hardware_uuid", "hardware_serial", "hostname", "platform", "os_version", "agent_version")
    HARDWARE_UUID_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_SERIAL_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    OS_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    hardware_uuid: str
    hardware_serial: str
    hostname: str
    platform: str
    os_version: str
    agent_version: str
    def __init__(self, hardware_uuid: _Optional[str] = ..., hardware_serial: _Optional[str] = ..., hostname: _Optional[str] = ..., platform: _Optional[str] = ..., os_version: _Optional[str] = ..., agent_version: _Optional[str] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("enroll_secret", "identity", "csr_pem", "request_token")
    ENROLL_SECRET_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    enroll_secret: str
    identity: HostIdentity
    csr_pem: bytes
    request_token: str
    def __init__(self, enroll_secret: _Optional[str] = ..., identity: _Optional[_Union[HostIdentity, _Mapping]] = ..., csr_pem: _Optional[bytes] = ..., request_token: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("host_id", "agent_credential", "plan", "client_certificate_pem", "ca_certificate_pem")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    agent_credential: str
    plan: CollectionPlan
    client_certificate_pem: bytes
    ca_certificate_pem: bytes
    def __init__(self, host_id: _Optional[str] = ..., agent_credential: _Optional[str] = ..., plan: _Optional[_Union[CollectionPlan, _Mapping]] = ..., client_certificate_pem: _Optional[bytes] = ..., ca_certificate_pem: _Optional[bytes] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("client_certificate_pem",)
    CLIENT_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    client_certificate_pem: bytes
    def __init__(self, client_certificate_pem: _Optional[bytes] = ...) -> None: ...

class CollectionPlan(_message.Message):
    __slots__ = ("version", "interval_seconds", "tables")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    version: str
    interval_seconds: int
    tables: _containers.RepeatedCompositeFieldContainer[TableRequest]
    def __init__(self, version: _Optional[str] = ..., interval_seconds: _Optional[int] = ..., tables: _Optional[_Iterable[_Union[TableRequest, _Mapping]]] = ...) -> None: ...

class TableRequest(_message.Message):
    __slots__ = ("name", "paths", "columns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    paths: _containers.RepeatedScalarFieldContainer[str]
    columns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., paths: _Optional[_Iterable[str]] = ..., columns: _Optional[_Iterable[str]] = ...) -> None: ...

class Row(_message.Message):
    __slots__ = ("columns",)
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.ScalarMap[str, str]
    def __init__(self, columns: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Table(_message.Message):
    __slots__ = ("name", "rows", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    rows: _containers.RepeatedCompositeFieldContainer[Row]
    error: str
    def __init__(self, name: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[Row, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: Batch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[Batch, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_version", "plan_version", "spooled_batches")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPOOLED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    plan_version: str
    spooled_batches: int
    def __init__(self, agent_version: _Optional[str] = ..., plan_version: _Optional[str] = ..., spooled_batches: _Optional[int] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("seq", "collected_at_ms", "changed", "digests", "plan_version", "full", "spooled_batches", "gaps", "spool_id")
    class DigestsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    COLLECTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    SPOOLED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    SPOOL_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    collected_at_ms: int
    changed: _containers.RepeatedCompositeFieldContainer[Table]
    digests: _containers.ScalarMap[str, str]
    plan_version: str
    full: bool
    spooled_batches: int
    gaps: _containers.RepeatedCompositeFieldContainer[Gap]
    spool_id: str
    def __init__(self, seq: _Optional[int] = ..., collected_at_ms: _Optional[int] = ..., changed: _Optional[_Iterable[_Union[Table, _Mapping]]] = ..., digests: _Optional[_Mapping[str, str]] = ..., plan_version: _Optional[str] = ..., full: _Optional[bool] = ..., spooled_batches: _Optional[int] = ..., gaps: _Optional[_Iterable[_Union[Gap, _Mapping]]] = ..., spool_id: _Optional[str] = ...) -> None: ...

class Gap(_message.Message):
    __slots__ = ("first_seq", "last_seq", "batches", "first_collected_at_ms", "last_collected_at_ms")
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    FIRST_COLLECTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_COLLECTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    first_seq: int
    last_seq: int
    batches: int
    first_collected_at_ms: int
    last_collected_at_ms: int
    def __init__(self, first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., batches: _Optional[int] = ..., first_collected_at_ms: _Optional[int] = ..., last_collected_at_ms: _Optional[int] = ...) -> None: ...

class CollectorMessage(_message.Message):
    __slots__ = ("ack", "plan", "collect_now", "resend_full")
    ACK_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    COLLECT_NOW_FIELD_NUMBER: _ClassVar[int]
    RESEND_FULL_FIELD_NUMBER: _ClassVar[int]
    ack: Ack
    plan: CollectionPlan
    collect_now: CollectNow
    resend_full: ResendFull
    def __init__(self, ack: _Optional[_Union[Ack, _Mapping]] = ..., plan: _Optional[_Union[CollectionPlan, _Mapping]] = ..., collect_now: _Optional[_Union[CollectNow, _Mapping]] = ..., resend_full: _Optional[_Union[ResendFull, _Mapping]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class CollectNow(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ResendFull(_message.Message):
    __slots__ = ("tables", "reason")
    TABLES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, tables: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...
