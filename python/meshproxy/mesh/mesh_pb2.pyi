from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class BundleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BundleResponse(_message.Message):
    __slots__ = ("trust_domain", "bundle_pem")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    bundle_pem: str
    def __init__(self, trust_domain: _Optional[str] = ..., bundle_pem: _Optional[str] = ...) -> None: ...

class CertifyRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: str
    def __init__(self, csr_pem: _Optional[str] = ...) -> None: ...

class CertifyResponse(_message.Message):
    __slots__ = ("certificate_pem", "bundle_pem", "spiffe_id", "not_after")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: str
    bundle_pem: str
    spiffe_id: str
    not_after: int
    def __init__(self, certificate_pem: _Optional[str] = ..., bundle_pem: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., not_after: _Optional[int] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("node_id", "wait_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    wait_ms: int
    def __init__(self, node_id: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ("acknowledged", "pending")
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    acknowledged: int
    pending: int
    def __init__(self, acknowledged: _Optional[int] = ..., pending: _Optional[int] = ...) -> None: ...
