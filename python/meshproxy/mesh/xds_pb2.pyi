import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import wrappers_pb2 as _wrappers_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CodecClientType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HTTP1: _ClassVar[CodecClientType]
    HTTP2: _ClassVar[CodecClientType]
    HTTP3: _ClassVar[CodecClientType]

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[HealthStatus]
    HEALTHY: _ClassVar[HealthStatus]
    UNHEALTHY: _ClassVar[HealthStatus]
    DRAINING: _ClassVar[HealthStatus]
    TIMEOUT: _ClassVar[HealthStatus]
    DEGRADED: _ClassVar[HealthStatus]

class RequestMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[RequestMethod]
    GET: _ClassVar[RequestMethod]
    HEAD: _ClassVar[RequestMethod]
    POST: _ClassVar[RequestMethod]
    PUT: _ClassVar[RequestMethod]
    DELETE: _ClassVar[RequestMethod]
    CONNECT: _ClassVar[RequestMethod]
    OPTIONS: _ClassVar[RequestMethod]
    TRACE: _ClassVar[RequestMethod]
    PATCH: _ClassVar[RequestMethod]

class RoutingPriority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEFAULT: _ClassVar[RoutingPriority]
    HIGH: _ClassVar[RoutingPriority]

class TrafficDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNSPECIFIED: _ClassVar[TrafficDirection]
    INBOUND: _ClassVar[TrafficDirection]
    OUTBOUND: _ClassVar[TrafficDirection]

class UpstreamConnectMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMMEDIATE: _ClassVar[UpstreamConnectMode]
    ON_DOWNSTREAM_DATA: _ClassVar[UpstreamConnectMode]
    ON_DOWNSTREAM_TLS_HANDSHAKE: _ClassVar[UpstreamConnectMode]

class VhRateLimitsOptions(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OVERRIDE: _ClassVar[VhRateLimitsOptions]
    INCLUDE: _ClassVar[VhRateLimitsOptions]
    IGNORE: _ClassVar[VhRateLimitsOptions]

class XRateLimitHeadersRFCVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OFF: _ClassVar[XRateLimitHeadersRFCVersion]
    DRAFT_VERSION_03: _ClassVar[XRateLimitHeadersRFCVersion]
HTTP1: CodecClientType
HTTP2: CodecClientType
HTTP3: CodecClientType
UNKNOWN: HealthStatus
HEALTHY: HealthStatus
UNHEALTHY: HealthStatus
DRAINING: HealthStatus
TIMEOUT: HealthStatus
DEGRADED: HealthStatus
METHOD_UNSPECIFIED: RequestMethod
GET: RequestMethod
HEAD: RequestMethod
POST: RequestMethod
PUT: RequestMethod
DELETE: RequestMethod
CONNECT: RequestMethod
OPTIONS: RequestMethod
TRACE: RequestMethod
PATCH: RequestMethod
DEFAULT: RoutingPriority
HIGH: RoutingPriority
UNSPECIFIED: TrafficDirection
INBOUND: TrafficDirection
OUTBOUND: TrafficDirection
IMMEDIATE: UpstreamConnectMode
ON_DOWNSTREAM_DATA: UpstreamConnectMode
ON_DOWNSTREAM_TLS_HANDSHAKE: UpstreamConnectMode
OVERRIDE: VhRateLimitsOptions
INCLUDE: VhRateLimitsOptions
IGNORE: VhRateLimitsOptions
OFF: XRateLimitHeadersRFCVersion
DRAFT_VERSION_03: XRateLimitHeadersRFCVersion

class DiscoveryRequest(_message.Message):
    __slots__ = ("version_info", "node", "resource_names", "resource_locators", "type_url", "response_nonce", "error_detail")
    VERSION_INFO_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAMES_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_LOCATORS_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_NONCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_DETAIL_FIELD_NUMBER: _ClassVar[int]
    version_info: str
    node: Node
    resource_names: _containers.RepeatedScalarFieldContainer[str]
    resource_locators: _containers.RepeatedScalarFieldContainer[bytes]
    type_url: str
    response_nonce: str
    error_detail: Status
    def __init__(self, version_info: _Optional[str] = ..., node: _Optional[_Union[Node, _Mapping]] = ..., resource_names: _Optional[_Iterable[str]] = ..., resource_locators: _Optional[_Iterable[bytes]] = ..., type_url: _Optional[str] = ..., response_nonce: _Optional[str] = ..., error_detail: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class DiscoveryResponse(_message.Message):
    __slots__ = ("version_info", "resources", "canary", "type_url", "nonce", "control_plane", "resource_errors")
    VERSION_INFO_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CONTROL_PLANE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    version_info: str
    resources: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    canary: bool
    type_url: str
    nonce: str
    control_plane: bytes
    resource_errors: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, version_info: _Optional[str] = ..., resources: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ..., canary: _Optional[bool] = ..., type_url: _Optional[str] = ..., nonce: _Optional[str] = ..., control_plane: _Optional[bytes] = ..., resource_errors: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("name", "resource_name", "aliases", "version", "resource", "ttl", "cache_control", "metadata")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    CACHE_CONTROL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    resource_name: bytes
    aliases: _containers.RepeatedScalarFieldContainer[str]
    version: str
    resource: _any_pb2.Any
    ttl: _duration_pb2.Duration
    cache_control: bytes
    metadata: Metadata
    def __init__(self, name: _Optional[str] = ..., resource_name: _Optional[bytes] = ..., aliases: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., resource: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cache_control: _Optional[bytes] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "cluster", "metadata", "dynamic_parameters", "locality", "user_agent_name", "extensions", "client_features", "listening_addresses", "user_agent_version", "user_agent_build_version")
    class DynamicParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FEATURES_FIELD_NUMBER: _ClassVar[int]
    LISTENING_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_BUILD_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    cluster: str
    metadata: _struct_pb2.Struct
    dynamic_parameters: _containers.ScalarMap[str, bytes]
    locality: bytes
    user_agent_name: str
    extensions: _containers.RepeatedScalarFieldContainer[bytes]
    client_features: _containers.RepeatedScalarFieldContainer[str]
    listening_addresses: _containers.RepeatedCompositeFieldContainer[Address]
    user_agent_version: str
    user_agent_build_version: bytes
    def __init__(self, id: _Optional[str] = ..., cluster: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., dynamic_parameters: _Optional[_Mapping[str, bytes]] = ..., locality: _Optional[bytes] = ..., user_agent_name: _Optional[str] = ..., extensions: _Optional[_Iterable[bytes]] = ..., client_features: _Optional[_Iterable[str]] = ..., listening_addresses: _Optional[_Iterable[_Union[Address, _Mapping]]] = ..., user_agent_version: _Optional[str] = ..., user_agent_build_version: _Optional[bytes] = ...) -> None: ...

class Metadata(_message.Message):
    __slots__ = ("filter_metadata", "typed_filter_metadata")
    class FilterMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Struct
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
    class TypedFilterMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _any_pb2.Any
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...
    FILTER_METADATA_FIELD_NUMBER: _ClassVar[int]
    TYPED_FILTER_METADATA_FIELD_NUMBER: _ClassVar[int]
    filter_metadata: _containers.MessageMap[str, _struct_pb2.Struct]
    typed_filter_metadata: _containers.MessageMap[str, _any_pb2.Any]
    def __init__(self, filter_metadata: _Optional[_Mapping[str, _struct_pb2.Struct]] = ..., typed_filter_metadata: _Optional[_Mapping[str, _any_pb2.Any]] = ...) -> None: ...

class Address(_message.Message):
    __slots__ = ("socket_address", "pipe", "envoy_internal_address")
    SOCKET_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PIPE_FIELD_NUMBER: _ClassVar[int]
    ENVOY_INTERNAL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    socket_address: SocketAddress
    pipe: bytes
    envoy_internal_address: bytes
    def __init__(self, socket_address: _Optional[_Union[SocketAddress, _Mapping]] = ..., pipe: _Optional[bytes] = ..., envoy_internal_address: _Optional[bytes] = ...) -> None: ...

class SocketAddress(_message.Message):
    __slots__ = ("protocol", "address", "resolver_name", "ipv4_compat", "network_namespace_filepath", "port_value", "named_port")
    class Protocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TCP: _ClassVar[SocketAddress.Protocol]
        UDP: _ClassVar[SocketAddress.Protocol]
    TCP: SocketAddress.Protocol
    UDP: SocketAddress.Protocol
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RESOLVER_NAME_FIELD_NUMBER: _ClassVar[int]
    IPV4_COMPAT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_NAMESPACE_FILEPATH_FIELD_NUMBER: _ClassVar[int]
    PORT_VALUE_FIELD_NUMBER: _ClassVar[int]
    NAMED_PORT_FIELD_NUMBER: _ClassVar[int]
    protocol: SocketAddress.Protocol
    address: str
    resolver_name: str
    ipv4_compat: bool
    network_namespace_filepath: str
    port_value: int
    named_port: str
    def __init__(self, protocol: _Optional[_Union[SocketAddress.Protocol, str]] = ..., address: _Optional[str] = ..., resolver_name: _Optional[str] = ..., ipv4_compat: _Optional[bool] = ..., network_namespace_filepath: _Optional[str] = ..., port_value: _Optional[int] = ..., named_port: _Optional[str] = ...) -> None: ...

class CidrRange(_message.Message):
    __slots__ = ("address_prefix", "prefix_len")
    ADDRESS_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    address_prefix: str
    prefix_len: _wrappers_pb2.UInt32Value
    def __init__(self, address_prefix: _Optional[str] = ..., prefix_len: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ...) -> None: ...

class TransportSocket(_message.Message):
    __slots__ = ("name", "typed_config")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    name: str
    typed_config: _any_pb2.Any
    def __init__(self, name: _Optional[str] = ..., typed_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class DataSource(_message.Message):
    __slots__ = ("watched_directory", "filename", "inline_bytes", "inline_string", "environment_variable")
    WATCHED_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    INLINE_BYTES_FIELD_NUMBER: _ClassVar[int]
    INLINE_STRING_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    watched_directory: bytes
    filename: str
    inline_bytes: bytes
    inline_string: str
    environment_variable: str
    def __init__(self, watched_directory: _Optional[bytes] = ..., filename: _Optional[str] = ..., inline_bytes: _Optional[bytes] = ..., inline_string: _Optional[str] = ..., environment_variable: _Optional[str] = ...) -> None: ...

class Listener(_message.Message):
    __slots__ = ("name", "address", "additional_addresses", "stat_prefix", "filter_chains", "fcds_config", "filter_chain_matcher", "use_original_dst", "default_filter_chain", "per_connection_buffer_limit_bytes", "metadata", "deprecated_v1", "drain_type", "listener_filters", "listener_filters_timeout", "continue_on_listener_filters_timeout", "transparent", "freebind", "socket_options", "tcp_fast_open_queue_length", "traffic_direction", "udp_listener_config", "api_listener", "connection_balance_config", "reuse_port", "enable_reuse_port", "access_log", "tcp_backlog_size", "max_connections_to_accept_per_socket_event", "bind_to_port", "enable_mptcp", "ignore_global_conn_limit", "bypass_overload_manager", "internal_listener")
    class DrainType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DEFAULT: _ClassVar[Listener.DrainType]
        MODIFY_ONLY: _ClassVar[Listener.DrainType]
    DEFAULT: Listener.DrainType
    MODIFY_ONLY: Listener.DrainType
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    STAT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    FILTER_CHAINS_FIELD_NUMBER: _ClassVar[int]
    FCDS_CONFIG_FIELD_NUMBER: _ClassVar[int]
    FILTER_CHAIN_MATCHER_FIELD_NUMBER: _ClassVar[int]
    USE_ORIGINAL_DST_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FILTER_CHAIN_FIELD_NUMBER: _ClassVar[int]
    PER_CONNECTION_BUFFER_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DEPRECATED_V1_FIELD_NUMBER: _ClassVar[int]
    DRAIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    LISTENER_FILTERS_FIELD_NUMBER: _ClassVar[int]
    LISTENER_FILTERS_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_ON_LISTENER_FILTERS_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    TRANSPARENT_FIELD_NUMBER: _ClassVar[int]
    FREEBIND_FIELD_NUMBER: _ClassVar[int]
    SOCKET_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TCP_FAST_OPEN_QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_DIRECTION_FIELD_NUMBER: _ClassVar[int]
    UDP_LISTENER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    API_LISTENER_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_BALANCE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    REUSE_PORT_FIELD_NUMBER: _ClassVar[int]
    ENABLE_REUSE_PORT_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LOG_FIELD_NUMBER: _ClassVar[int]
    TCP_BACKLOG_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECTIONS_TO_ACCEPT_PER_SOCKET_EVENT_FIELD_NUMBER: _ClassVar[int]
    BIND_TO_PORT_FIELD_NUMBER: _ClassVar[int]
    ENABLE_MPTCP_FIELD_NUMBER: _ClassVar[int]
    IGNORE_GLOBAL_CONN_LIMIT_FIELD_NUMBER: _ClassVar[int]
    BYPASS_OVERLOAD_MANAGER_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_LISTENER_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: Address
    additional_addresses: _containers.RepeatedCompositeFieldContainer[AdditionalAddress]
    stat_prefix: str
    filter_chains: _containers.RepeatedCompositeFieldContainer[FilterChain]
    fcds_config: bytes
    filter_chain_matcher: bytes
    use_original_dst: _wrappers_pb2.BoolValue
    default_filter_chain: FilterChain
    per_connection_buffer_limit_bytes: _wrappers_pb2.UInt32Value
    metadata: Metadata
    deprecated_v1: bytes
    drain_type: Listener.DrainType
    listener_filters: _containers.RepeatedCompositeFieldContainer[ListenerFilter]
    listener_filters_timeout: _duration_pb2.Duration
    continue_on_listener_filters_timeout: bool
    transparent: _wrappers_pb2.BoolValue
    freebind: _wrappers_pb2.BoolValue
    socket_options: _containers.RepeatedScalarFieldContainer[bytes]
    tcp_fast_open_queue_length: _wrappers_pb2.UInt32Value
    traffic_direction: TrafficDirection
    udp_listener_config: bytes
    api_listener: bytes
    connection_balance_config: bytes
    reuse_port: bool
    enable_reuse_port: _wrappers_pb2.BoolValue
    access_log: _containers.RepeatedScalarFieldContainer[bytes]
    tcp_backlog_size: _wrappers_pb2.UInt32Value
    max_connections_to_accept_per_socket_event: _wrappers_pb2.UInt32Value
    bind_to_port: _wrappers_pb2.BoolValue
    enable_mptcp: bool
    ignore_global_conn_limit: bool
    bypass_overload_manager: bool
    internal_listener: bytes
    def __init__(self, name: _Optional[str] = ..., address: _Optional[_Union[Address, _Mapping]] = ..., additional_addresses: _Optional[_Iterable[_Union[AdditionalAddress, _Mapping]]] = ..., stat_prefix: _Optional[str] = ..., filter_chains: _Optional[_Iterable[_Union[FilterChain, _Mapping]]] = ..., fcds_config: _Optional[bytes] = ..., filter_chain_matcher: _Optional[bytes] = ..., use_original_dst: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., default_filter_chain: _Optional[_Union[FilterChain, _Mapping]] = ..., per_connection_buffer_limit_bytes: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., deprecated_v1: _Optional[bytes] = ..., drain_type: _Optional[_Union[Listener.DrainType, str]] = ..., listener_filters: _Optional[_Iterable[_Union[ListenerFilter, _Mapping]]] = ..., listener_filters_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., continue_on_listener_filters_timeout: _Optional[bool] = ..., transparent: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., freebind: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., socket_options: _Optional[_Iterable[bytes]] = ..., tcp_fast_open_queue_length: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., traffic_direction: _Optional[_Union[TrafficDirection, str]] = ..., udp_listener_config: _Optional[bytes] = ..., api_listener: _Optional[bytes] = ..., connection_balance_config: _Optional[bytes] = ..., reuse_port: _Optional[bool] = ..., enable_reuse_port: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., access_log: _Optional[_Iterable[bytes]] = ..., tcp_backlog_size: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_connections_to_accept_per_socket_event: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., bind_to_port: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., enable_mptcp: _Optional[bool] = ..., ignore_global_conn_limit: _Optional[bool] = ..., bypass_overload_manager: _Optional[bool] = ..., internal_listener: _Optional[bytes] = ...) -> None: ...

class FilterChain(_message.Message):
    __slots__ = ("filter_chain_match", "filters", "use_proxy_proto", "metadata", "transport_socket", "transport_socket_connect_timeout", "name")
    FILTER_CHAIN_MATCH_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    USE_PROXY_PROTO_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_SOCKET_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_SOCKET_CONNECT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    filter_chain_match: FilterChainMatch
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    use_proxy_proto: _wrappers_pb2.BoolValue
    metadata: Metadata
    transport_socket: TransportSocket
    transport_socket_connect_timeout: _duration_pb2.Duration
    name: str
    def __init__(self, filter_chain_match: _Optional[_Union[FilterChainMatch, _Mapping]] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., use_proxy_proto: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., transport_socket: _Optional[_Union[TransportSocket, _Mapping]] = ..., transport_socket_connect_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class FilterChainMatch(_message.Message):
    __slots__ = ("destination_port", "prefix_ranges", "address_suffix", "suffix_len", "direct_source_prefix_ranges", "source_type", "source_prefix_ranges", "source_ports", "server_names", "transport_protocol", "application_protocols")
    class ConnectionSourceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ANY: _ClassVar[FilterChainMatch.ConnectionSourceType]
        SAME_IP_OR_LOOPBACK: _ClassVar[FilterChainMatch.ConnectionSourceType]
        EXTERNAL: _ClassVar[FilterChainMatch.ConnectionSourceType]
    ANY: FilterChainMatch.ConnectionSourceType
    SAME_IP_OR_LOOPBACK: FilterChainMatch.ConnectionSourceType
    EXTERNAL: FilterChainMatch.ConnectionSourceType
    DESTINATION_PORT_FIELD_NUMBER: _ClassVar[int]
    PREFIX_RANGES_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_SUFFIX_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    DIRECT_SOURCE_PREFIX_RANGES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PREFIX_RANGES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PORTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAMES_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_PROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    destination_port: _wrappers_pb2.UInt32Value
    prefix_ranges: _containers.RepeatedCompositeFieldContainer[CidrRange]
    address_suffix: str
    suffix_len: _wrappers_pb2.UInt32Value
    direct_source_prefix_ranges: _containers.RepeatedCompositeFieldContainer[CidrRange]
    source_type: FilterChainMatch.ConnectionSourceType
    source_prefix_ranges: _containers.RepeatedCompositeFieldContainer[CidrRange]
    source_ports: _containers.RepeatedScalarFieldContainer[int]
    server_names: _containers.RepeatedScalarFieldContainer[str]
    transport_protocol: str
    application_protocols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, destination_port: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., prefix_ranges: _Optional[_Iterable[_Union[CidrRange, _Mapping]]] = ..., address_suffix: _Optional[str] = ..., suffix_len: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., direct_source_prefix_ranges: _Optional[_Iterable[_Union[CidrRange, _Mapping]]] = ..., source_type: _Optional[_Union[FilterChainMatch.ConnectionSourceType, str]] = ..., source_prefix_ranges: _Optional[_Iterable[_Union[CidrRange, _Mapping]]] = ..., source_ports: _Optional[_Iterable[int]] = ..., server_names: _Optional[_Iterable[str]] = ..., transport_protocol: _Optional[str] = ..., application_protocols: _Optional[_Iterable[str]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("name", "typed_config", "config_discovery")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DISCOVERY_FIELD_NUMBER: _ClassVar[int]
    name: str
    typed_config: _any_pb2.Any
    config_discovery: bytes
    def __init__(self, name: _Optional[str] = ..., typed_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., config_discovery: _Optional[bytes] = ...) -> None: ...

class ListenerFilter(_message.Message):
    __slots__ = ("name", "filter_disabled", "typed_config", "config_discovery")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_DISABLED_FIELD_NUMBER: _ClassVar[int]
    TYPED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DISCOVERY_FIELD_NUMBER: _ClassVar[int]
    name: str
    filter_disabled: bytes
    typed_config: _any_pb2.Any
    config_discovery: bytes
    def __init__(self, name: _Optional[str] = ..., filter_disabled: _Optional[bytes] = ..., typed_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., config_discovery: _Optional[bytes] = ...) -> None: ...

class AdditionalAddress(_message.Message):
    __slots__ = ("address", "socket_options")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SOCKET_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    address: Address
    socket_options: bytes
    def __init__(self, address: _Optional[_Union[Address, _Mapping]] = ..., socket_options: _Optional[bytes] = ...) -> None: ...

class HttpConnectionManager(_message.Message):
    __slots__ = ("codec_type", "stat_prefix", "http_filters", "add_user_agent", "tracing", "common_http_protocol_options", "http1_safe_max_connection_duration", "http_protocol_options", "http2_protocol_options", "http3_protocol_options", "server_name", "server_header_transformation", "scheme_header_transformation", "max_request_headers_kb", "stream_idle_timeout", "stream_flush_timeout", "request_timeout", "request_headers_timeout", "drain_timeout", "delayed_close_timeout", "access_log", "access_log_flush_interval", "flush_access_log_on_new_request", "access_log_options", "use_remote_address", "xff_num_trusted_hops", "original_ip_detection_extensions", "early_header_mutation_extensions", "internal_address_config", "skip_xff_append", "via", "generate_request_id", "preserve_external_request_id", "always_set_request_id_in_response", "forward_client_cert_details", "set_current_client_cert_details", "forward_client_cert_matcher", "proxy_100_continue", "represent_ipv4_remote_address_as_ipv4_mapped_ipv6", "upgrade_configs", "normalize_path", "merge_slashes", "path_with_escaped_slashes_action", "request_id_extension", "local_reply_config", "strip_matching_host_port", "stream_error_on_invalid_http_message", "path_normalization_options", "strip_trailing_host_dot", "proxy_status_config", "typed_header_validation_config", "append_x_forwarded_port", "append_local_overload", "add_proxy_protocol_connection_state", "rds", "route_config", "scoped_routes", "strip_any_host_port")
    class CodecType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        AUTO: _ClassVar[HttpConnectionManager.CodecType]
        HTTP1: _ClassVar[HttpConnectionManager.CodecType]
        HTTP2: _ClassVar[HttpConnectionManager.CodecType]
        HTTP3: _ClassVar[HttpConnectionManager.CodecType]
    AUTO: HttpConnectionManager.CodecType
    HTTP1: HttpConnectionManager.CodecType
    HTTP2: HttpConnectionManager.CodecType
    HTTP3: HttpConnectionManager.CodecType
    class ServerHeaderTransformation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OVERWRITE: _ClassVar[HttpConnectionManager.ServerHeaderTransformation]
        APPEND_IF_ABSENT: _ClassVar[HttpConnectionManager.ServerHeaderTransformation]
        PASS_THROUGH: _ClassVar[HttpConnectionManager.ServerHeaderTransformation]
    OVERWRITE: HttpConnectionManager.ServerHeaderTransformation
    APPEND_IF_ABSENT: HttpConnectionManager.ServerHeaderTransformation
    PASS_THROUGH: HttpConnectionManager.ServerHeaderTransformation
    class ForwardClientCertDetails(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SANITIZE: _ClassVar[HttpConnectionManager.ForwardClientCertDetails]
        FORWARD_ONLY: _ClassVar[HttpConnectionManager.ForwardClientCertDetails]
        APPEND_FORWARD: _ClassVar[HttpConnectionManager.ForwardClientCertDetails]
        SANITIZE_SET: _ClassVar[HttpConnectionManager.ForwardClientCertDetails]
        ALWAYS_FORWARD_ONLY: _ClassVar[HttpConnectionManager.ForwardClientCertDetails]
    SANITIZE: HttpConnectionManager.ForwardClientCertDetails
    FORWARD_ONLY: HttpConnectionManager.ForwardClientCertDetails
    APPEND_FORWARD: HttpConnectionManager.ForwardClientCertDetails
    SANITIZE_SET: HttpConnectionManager.ForwardClientCertDetails
    ALWAYS_FORWARD_ONLY: HttpConnectionManager.ForwardClientCertDetails
    class PathWithEscapedSlashesAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        IMPLEMENTATION_SPECIFIC_DEFAULT: _ClassVar[HttpConnectionManager.PathWithEscapedSlashesAction]
        KEEP_UNCHANGED: _ClassVar[HttpConnectionManager.PathWithEscapedSlashesAction]
        REJECT_REQUEST: _ClassVar[HttpConnectionManager.PathWithEscapedSlashesAction]
        UNESCAPE_AND_REDIRECT: _ClassVar[HttpConnectionManager.PathWithEscapedSlashesAction]
        UNESCAPE_AND_FORWARD: _ClassVar[HttpConnectionManager.PathWithEscapedSlashesAction]
    IMPLEMENTATION_SPECIFIC_DEFAULT: HttpConnectionManager.PathWithEscapedSlashesAction
    KEEP_UNCHANGED: HttpConnectionManager.PathWithEscapedSlashesAction
    REJECT_REQUEST: HttpConnectionManager.PathWithEscapedSlashesAction
    UNESCAPE_AND_REDIRECT: HttpConnectionManager.PathWithEscapedSlashesAction
    UNESCAPE_AND_FORWARD: HttpConnectionManager.PathWithEscapedSlashesAction
    CODEC_TYPE_FIELD_NUMBER: _ClassVar[int]
    STAT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    HTTP_FILTERS_FIELD_NUMBER: _ClassVar[int]
    ADD_USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    TRACING_FIELD_NUMBER: _ClassVar[int]
    COMMON_HTTP_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HTTP1_SAFE_MAX_CONNECTION_DURATION_FIELD_NUMBER: _ClassVar[int]
    HTTP_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HTTP2_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HTTP3_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVER_HEADER_TRANSFORMATION_FIELD_NUMBER: _ClassVar[int]
    SCHEME_HEADER_TRANSFORMATION_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_HEADERS_KB_FIELD_NUMBER: _ClassVar[int]
    STREAM_IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    STREAM_FLUSH_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HEADERS_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    DRAIN_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    DELAYED_CLOSE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LOG_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LOG_FLUSH_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    FLUSH_ACCESS_LOG_ON_NEW_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LOG_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    USE_REMOTE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    XFF_NUM_TRUSTED_HOPS_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_IP_DETECTION_EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    EARLY_HEADER_MUTATION_EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_ADDRESS_CONFIG_FIELD_NUMBER: _ClassVar[int]
    SKIP_XFF_APPEND_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    GENERATE_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_EXTERNAL_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_SET_REQUEST_ID_IN_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    FORWARD_CLIENT_CERT_DETAILS_FIELD_NUMBER: _ClassVar[int]
    SET_CURRENT_CLIENT_CERT_DETAILS_FIELD_NUMBER: _ClassVar[int]
    FORWARD_CLIENT_CERT_MATCHER_FIELD_NUMBER: _ClassVar[int]
    PROXY_100_CONTINUE_FIELD_NUMBER: _ClassVar[int]
    REPRESENT_IPV4_REMOTE_ADDRESS_AS_IPV4_MAPPED_IPV6_FIELD_NUMBER: _ClassVar[int]
    UPGRADE_CONFIGS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_PATH_FIELD_NUMBER: _ClassVar[int]
    MERGE_SLASHES_FIELD_NUMBER: _ClassVar[int]
    PATH_WITH_ESCAPED_SLASHES_ACTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_REPLY_CONFIG_FIELD_NUMBER: _ClassVar[int]
    STRIP_MATCHING_HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    STREAM_ERROR_ON_INVALID_HTTP_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PATH_NORMALIZATION_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STRIP_TRAILING_HOST_DOT_FIELD_NUMBER: _ClassVar[int]
    PROXY_STATUS_CONFIG_FIELD_NUMBER: _ClassVar[int]
    TYPED_HEADER_VALIDATION_CONFIG_FIELD_NUMBER: _ClassVar[int]
    APPEND_X_FORWARDED_PORT_FIELD_NUMBER: _ClassVar[int]
    APPEND_LOCAL_OVERLOAD_FIELD_NUMBER: _ClassVar[int]
    ADD_PROXY_PROTOCOL_CONNECTION_STATE_FIELD_NUMBER: _ClassVar[int]
    RDS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    SCOPED_ROUTES_FIELD_NUMBER: _ClassVar[int]
    STRIP_ANY_HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    codec_type: HttpConnectionManager.CodecType
    stat_prefix: str
    http_filters: _containers.RepeatedCompositeFieldContainer[HttpFilter]
    add_user_agent: _wrappers_pb2.BoolValue
    tracing: bytes
    common_http_protocol_options: CommonHttpProtocolOptions
    http1_safe_max_connection_duration: bool
    http_protocol_options: bytes
    http2_protocol_options: Http2ProtocolOptions
    http3_protocol_options: bytes
    server_name: str
    server_header_transformation: HttpConnectionManager.ServerHeaderTransformation
    scheme_header_transformation: bytes
    max_request_headers_kb: _wrappers_pb2.UInt32Value
    stream_idle_timeout: _duration_pb2.Duration
    stream_flush_timeout: _duration_pb2.Duration
    request_timeout: _duration_pb2.Duration
    request_headers_timeout: _duration_pb2.Duration
    drain_timeout: _duration_pb2.Duration
    delayed_close_timeout: _duration_pb2.Duration
    access_log: _containers.RepeatedScalarFieldContainer[bytes]
    access_log_flush_interval: _duration_pb2.Duration
    flush_access_log_on_new_request: bool
    access_log_options: bytes
    use_remote_address: _wrappers_pb2.BoolValue
    xff_num_trusted_hops: int
    original_ip_detection_extensions: _containers.RepeatedScalarFieldContainer[bytes]
    early_header_mutation_extensions: _containers.RepeatedScalarFieldContainer[bytes]
    internal_address_config: bytes
    skip_xff_append: bool
    via: str
    generate_request_id: _wrappers_pb2.BoolValue
    preserve_external_request_id: bool
    always_set_request_id_in_response: bool
    forward_client_cert_details: HttpConnectionManager.ForwardClientCertDetails
    set_current_client_cert_details: bytes
    forward_client_cert_matcher: bytes
    proxy_100_continue: bool
    represent_ipv4_remote_address_as_ipv4_mapped_ipv6: bool
    upgrade_configs: _containers.RepeatedScalarFieldContainer[bytes]
    normalize_path: _wrappers_pb2.BoolValue
    merge_slashes: bool
    path_with_escaped_slashes_action: HttpConnectionManager.PathWithEscapedSlashesAction
    request_id_extension: bytes
    local_reply_config: bytes
    strip_matching_host_port: bool
    stream_error_on_invalid_http_message: _wrappers_pb2.BoolValue
    path_normalization_options: bytes
    strip_trailing_host_dot: bool
    proxy_status_config: bytes
    typed_header_validation_config: bytes
    append_x_forwarded_port: bool
    append_local_overload: bool
    add_proxy_protocol_connection_state: _wrappers_pb2.BoolValue
    rds: Rds
    route_config: RouteConfiguration
    scoped_routes: bytes
    strip_any_host_port: bool
    def __init__(self, codec_type: _Optional[_Union[HttpConnectionManager.CodecType, str]] = ..., stat_prefix: _Optional[str] = ..., http_filters: _Optional[_Iterable[_Union[HttpFilter, _Mapping]]] = ..., add_user_agent: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., tracing: _Optional[bytes] = ..., common_http_protocol_options: _Optional[_Union[CommonHttpProtocolOptions, _Mapping]] = ..., http1_safe_max_connection_duration: _Optional[bool] = ..., http_protocol_options: _Optional[bytes] = ..., http2_protocol_options: _Optional[_Union[Http2ProtocolOptions, _Mapping]] = ..., http3_protocol_options: _Optional[bytes] = ..., server_name: _Optional[str] = ..., server_header_transformation: _Optional[_Union[HttpConnectionManager.ServerHeaderTransformation, str]] = ..., scheme_header_transformation: _Optional[bytes] = ..., max_request_headers_kb: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., stream_idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stream_flush_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_headers_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., drain_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., delayed_close_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., access_log: _Optional[_Iterable[bytes]] = ..., access_log_flush_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., flush_access_log_on_new_request: _Optional[bool] = ..., access_log_options: _Optional[bytes] = ..., use_remote_address: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., xff_num_trusted_hops: _Optional[int] = ..., original_ip_detection_extensions: _Optional[_Iterable[bytes]] = ..., early_header_mutation_extensions: _Optional[_Iterable[bytes]] = ..., internal_address_config: _Optional[bytes] = ..., skip_xff_append: _Optional[bool] = ..., via: _Optional[str] = ..., generate_request_id: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., preserve_external_request_id: _Optional[bool] = ..., always_set_request_id_in_response: _Optional[bool] = ..., forward_client_cert_details: _Optional[_Union[HttpConnectionManager.ForwardClientCertDetails, str]] = ..., set_current_client_cert_details: _Optional[bytes] = ..., forward_client_cert_matcher: _Optional[bytes] = ..., proxy_100_continue: _Optional[bool] = ..., represent_ipv4_remote_address_as_ipv4_mapped_ipv6: _Optional[bool] = ..., upgrade_configs: _Optional[_Iterable[bytes]] = ..., normalize_path: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., merge_slashes: _Optional[bool] = ..., path_with_escaped_slashes_action: _Optional[_Union[HttpConnectionManager.PathWithEscapedSlashesAction, str]] = ..., request_id_extension: _Optional[bytes] = ..., local_reply_config: _Optional[bytes] = ..., strip_matching_host_port: _Optional[bool] = ..., stream_error_on_invalid_http_message: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., path_normalization_options: _Optional[bytes] = ..., strip_trailing_host_dot: _Optional[bool] = ..., proxy_status_config: _Optional[bytes] = ..., typed_header_validation_config: _Optional[bytes] = ..., append_x_forwarded_port: _Optional[bool] = ..., append_local_overload: _Optional[bool] = ..., add_proxy_protocol_connection_state: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., rds: _Optional[_Union[Rds, _Mapping]] = ..., route_config: _Optional[_Union[RouteConfiguration, _Mapping]] = ..., scoped_routes: _Optional[bytes] = ..., strip_any_host_port: _Optional[bool] = ...) -> None: ...

class Rds(_message.Message):
    __slots__ = ("config_source", "route_config_name")
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_CONFIG_NAME_FIELD_NUMBER: _ClassVar[int]
    config_source: bytes
    route_config_name: str
    def __init__(self, config_source: _Optional[bytes] = ..., route_config_name: _Optional[str] = ...) -> None: ...

class HttpFilter(_message.Message):
    __slots__ = ("name", "is_optional", "disabled", "typed_config", "config_discovery")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IS_OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    TYPED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DISCOVERY_FIELD_NUMBER: _ClassVar[int]
    name: str
    is_optional: bool
    disabled: bool
    typed_config: _any_pb2.Any
    config_discovery: bytes
    def __init__(self, name: _Optional[str] = ..., is_optional: _Optional[bool] = ..., disabled: _Optional[bool] = ..., typed_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., config_discovery: _Optional[bytes] = ...) -> None: ...

class TcpProxy(_message.Message):
    __slots__ = ("stat_prefix", "on_demand", "metadata_match", "idle_timeout", "downstream_idle_timeout", "upstream_idle_timeout", "access_log", "max_connect_attempts", "backoff_options", "hash_policy", "tunneling_config", "max_downstream_connection_duration", "max_downstream_connection_duration_jitter_percentage", "access_log_flush_interval", "flush_access_log_on_connected", "access_log_options", "proxy_protocol_tlvs", "upstream_connect_mode", "max_early_data_bytes", "cluster", "weighted_clusters")
    STAT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    ON_DEMAND_FIELD_NUMBER: _ClassVar[int]
    METADATA_MATCH_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LOG_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECT_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HASH_POLICY_FIELD_NUMBER: _ClassVar[int]
    TUNNELING_CONFIG_FIELD_NUMBER: _ClassVar[int]
    MAX_DOWNSTREAM_CONNECTION_DURATION_FIELD_NUMBER: _ClassVar[int]
    MAX_DOWNSTREAM_CONNECTION_DURATION_JITTER_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LOG_FLUSH_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    FLUSH_ACCESS_LOG_ON_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LOG_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PROXY_PROTOCOL_TLVS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_CONNECT_MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_EARLY_DATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    stat_prefix: str
    on_demand: bytes
    metadata_match: Metadata
    idle_timeout: _duration_pb2.Duration
    downstream_idle_timeout: _duration_pb2.Duration
    upstream_idle_timeout: _duration_pb2.Duration
    access_log: _containers.RepeatedScalarFieldContainer[bytes]
    max_connect_attempts: _wrappers_pb2.UInt32Value
    backoff_options: bytes
    hash_policy: _containers.RepeatedScalarFieldContainer[bytes]
    tunneling_config: bytes
    max_downstream_connection_duration: _duration_pb2.Duration
    max_downstream_connection_duration_jitter_percentage: Percent
    access_log_flush_interval: _duration_pb2.Duration
    flush_access_log_on_connected: bool
    access_log_options: bytes
    proxy_protocol_tlvs: _containers.RepeatedScalarFieldContainer[bytes]
    upstream_connect_mode: UpstreamConnectMode
    max_early_data_bytes: _wrappers_pb2.UInt32Value
    cluster: str
    weighted_clusters: bytes
    def __init__(self, stat_prefix: _Optional[str] = ..., on_demand: _Optional[bytes] = ..., metadata_match: _Optional[_Union[Metadata, _Mapping]] = ..., idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., downstream_idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., upstream_idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., access_log: _Optional[_Iterable[bytes]] = ..., max_connect_attempts: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., backoff_options: _Optional[bytes] = ..., hash_policy: _Optional[_Iterable[bytes]] = ..., tunneling_config: _Optional[bytes] = ..., max_downstream_connection_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_downstream_connection_duration_jitter_percentage: _Optional[_Union[Percent, _Mapping]] = ..., access_log_flush_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., flush_access_log_on_connected: _Optional[bool] = ..., access_log_options: _Optional[bytes] = ..., proxy_protocol_tlvs: _Optional[_Iterable[bytes]] = ..., upstream_connect_mode: _Optional[_Union[UpstreamConnectMode, str]] = ..., max_early_data_bytes: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., cluster: _Optional[str] = ..., weighted_clusters: _Optional[bytes] = ...) -> None: ...

class NetworkRbacFilter(_message.Message):
    __slots__ = ("rules", "matcher", "shadow_rules", "shadow_matcher", "shadow_rules_stat_prefix", "stat_prefix", "enforcement_type", "delay_deny")
    class EnforcementType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ONE_TIME_ON_FIRST_BYTE: _ClassVar[NetworkRbacFilter.EnforcementType]
        CONTINUOUS: _ClassVar[NetworkRbacFilter.EnforcementType]
    ONE_TIME_ON_FIRST_BYTE: NetworkRbacFilter.EnforcementType
    CONTINUOUS: NetworkRbacFilter.EnforcementType
    RULES_FIELD_NUMBER: _ClassVar[int]
    MATCHER_FIELD_NUMBER: _ClassVar[int]
    SHADOW_RULES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MATCHER_FIELD_NUMBER: _ClassVar[int]
    SHADOW_RULES_STAT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    STAT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    ENFORCEMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DELAY_DENY_FIELD_NUMBER: _ClassVar[int]
    rules: RBAC
    matcher: bytes
    shadow_rules: RBAC
    shadow_matcher: bytes
    shadow_rules_stat_prefix: str
    stat_prefix: str
    enforcement_type: NetworkRbacFilter.EnforcementType
    delay_deny: _duration_pb2.Duration
    def __init__(self, rules: _Optional[_Union[RBAC, _Mapping]] = ..., matcher: _Optional[bytes] = ..., shadow_rules: _Optional[_Union[RBAC, _Mapping]] = ..., shadow_matcher: _Optional[bytes] = ..., shadow_rules_stat_prefix: _Optional[str] = ..., stat_prefix: _Optional[str] = ..., enforcement_type: _Optional[_Union[NetworkRbacFilter.EnforcementType, str]] = ..., delay_deny: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class NetworkLocalRateLimit(_message.Message):
    __slots__ = ("stat_prefix", "token_bucket", "runtime_enabled", "share_key")
    STAT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_BUCKET_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ENABLED_FIELD_NUMBER: _ClassVar[int]
    SHARE_KEY_FIELD_NUMBER: _ClassVar[int]
    stat_prefix: str
    token_bucket: TokenBucket
    runtime_enabled: bytes
    share_key: str
    def __init__(self, stat_prefix: _Optional[str] = ..., token_bucket: _Optional[_Union[TokenBucket, _Mapping]] = ..., runtime_enabled: _Optional[bytes] = ..., share_key: _Optional[str] = ...) -> None: ...

class RouteConfiguration(_message.Message):
    __slots__ = ("name", "virtual_hosts", "vhds", "internal_only_headers", "response_headers_to_add", "response_headers_to_remove", "request_headers_to_add", "request_headers_to_remove", "most_specific_header_mutations_wins", "validate_clusters", "max_direct_response_body_size_bytes", "cluster_specifier_plugins", "request_mirror_policies", "ignore_port_in_host_matching", "vhost_header", "ignore_path_parameters_in_path_matching", "typed_per_filter_config", "metadata")
    class TypedPerFilterConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _any_pb2.Any
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_HOSTS_FIELD_NUMBER: _ClassVar[int]
    VHDS_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_ONLY_HEADERS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_HEADERS_TO_ADD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_HEADERS_TO_REMOVE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HEADERS_TO_ADD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HEADERS_TO_REMOVE_FIELD_NUMBER: _ClassVar[int]
    MOST_SPECIFIC_HEADER_MUTATIONS_WINS_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    MAX_DIRECT_RESPONSE_BODY_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_SPECIFIER_PLUGINS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_MIRROR_POLICIES_FIELD_NUMBER: _ClassVar[int]
    IGNORE_PORT_IN_HOST_MATCHING_FIELD_NUMBER: _ClassVar[int]
    VHOST_HEADER_FIELD_NUMBER: _ClassVar[int]
    IGNORE_PATH_PARAMETERS_IN_PATH_MATCHING_FIELD_NUMBER: _ClassVar[int]
    TYPED_PER_FILTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    virtual_hosts: _containers.RepeatedCompositeFieldContainer[VirtualHost]
    vhds: bytes
    internal_only_headers: _containers.RepeatedScalarFieldContainer[str]
    response_headers_to_add: _containers.RepeatedScalarFieldContainer[bytes]
    response_headers_to_remove: _containers.RepeatedScalarFieldContainer[str]
    request_headers_to_add: _containers.RepeatedScalarFieldContainer[bytes]
    request_headers_to_remove: _containers.RepeatedScalarFieldContainer[str]
    most_specific_header_mutations_wins: bool
    validate_clusters: _wrappers_pb2.BoolValue
    max_direct_response_body_size_bytes: _wrappers_pb2.UInt32Value
    cluster_specifier_plugins: _containers.RepeatedScalarFieldContainer[bytes]
    request_mirror_policies: _containers.RepeatedCompositeFieldContainer[RouteAction.RequestMirrorPolicy]
    ignore_port_in_host_matching: bool
    vhost_header: str
    ignore_path_parameters_in_path_matching: bool
    typed_per_filter_config: _containers.MessageMap[str, _any_pb2.Any]
    metadata: Metadata
    def __init__(self, name: _Optional[str] = ..., virtual_hosts: _Optional[_Iterable[_Union[VirtualHost, _Mapping]]] = ..., vhds: _Optional[bytes] = ..., internal_only_headers: _Optional[_Iterable[str]] = ..., response_headers_to_add: _Optional[_Iterable[bytes]] = ..., response_headers_to_remove: _Optional[_Iterable[str]] = ..., request_headers_to_add: _Optional[_Iterable[bytes]] = ..., request_headers_to_remove: _Optional[_Iterable[str]] = ..., most_specific_header_mutations_wins: _Optional[bool] = ..., validate_clusters: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., max_direct_response_body_size_bytes: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., cluster_specifier_plugins: _Optional[_Iterable[bytes]] = ..., request_mirror_policies: _Optional[_Iterable[_Union[RouteAction.RequestMirrorPolicy, _Mapping]]] = ..., ignore_port_in_host_matching: _Optional[bool] = ..., vhost_header: _Optional[str] = ..., ignore_path_parameters_in_path_matching: _Optional[bool] = ..., typed_per_filter_config: _Optional[_Mapping[str, _any_pb2.Any]] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ...) -> None: ...

class VirtualHost(_message.Message):
    __slots__ = ("name", "domains", "routes", "matcher", "require_tls", "virtual_clusters", "rate_limits", "request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove", "cors", "typed_per_filter_config", "include_request_attempt_count", "include_attempt_count_in_response", "retry_policy", "retry_policy_typed_config", "hedge_policy", "include_is_timeout_retry_header", "per_request_buffer_limit_bytes", "request_body_buffer_limit", "request_mirror_policies", "metadata")
    class TlsRequirementType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        NONE: _ClassVar[VirtualHost.TlsRequirementType]
        EXTERNAL_ONLY: _ClassVar[VirtualHost.TlsRequirementType]
        ALL: _ClassVar[VirtualHost.TlsRequirementType]
    NONE: VirtualHost.TlsRequirementType
    EXTERNAL_ONLY: VirtualHost.TlsRequirementType
    ALL: VirtualHost.TlsRequirementType
    class TypedPerFilterConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _any_pb2.Any
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    MATCHER_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_TLS_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HEADERS_TO_ADD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HEADERS_TO_REMOVE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_HEADERS_TO_ADD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_HEADERS_TO_REMOVE_FIELD_NUMBER: _ClassVar[int]
    CORS_FIELD_NUMBER: _ClassVar[int]
    TYPED_PER_FILTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REQUEST_ATTEMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ATTEMPT_COUNT_IN_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_TYPED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    HEDGE_POLICY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_IS_TIMEOUT_RETRY_HEADER_FIELD_NUMBER: _ClassVar[int]
    PER_REQUEST_BUFFER_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_BODY_BUFFER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_MIRROR_POLICIES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    matcher: bytes
    require_tls: VirtualHost.TlsRequirementType
    virtual_clusters: _containers.RepeatedScalarFieldContainer[bytes]
    rate_limits: _containers.RepeatedScalarFieldContainer[bytes]
    request_headers_to_add: _containers.RepeatedScalarFieldContainer[bytes]
    request_headers_to_remove: _containers.RepeatedScalarFieldContainer[str]
    response_headers_to_add: _containers.RepeatedScalarFieldContainer[bytes]
    response_headers_to_remove: _containers.RepeatedScalarFieldContainer[str]
    cors: bytes
    typed_per_filter_config: _containers.MessageMap[str, _any_pb2.Any]
    include_request_attempt_count: bool
    include_attempt_count_in_response: bool
    retry_policy: RetryPolicy
    retry_policy_typed_config: _any_pb2.Any
    hedge_policy: bytes
    include_is_timeout_retry_header: bool
    per_request_buffer_limit_bytes: _wrappers_pb2.UInt32Value
    request_body_buffer_limit: bytes
    request_mirror_policies: _containers.RepeatedCompositeFieldContainer[RouteAction.RequestMirrorPolicy]
    metadata: Metadata
    def __init__(self, name: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., matcher: _Optional[bytes] = ..., require_tls: _Optional[_Union[VirtualHost.TlsRequirementType, str]] = ..., virtual_clusters: _Optional[_Iterable[bytes]] = ..., rate_limits: _Optional[_Iterable[bytes]] = ..., request_headers_to_add: _Optional[_Iterable[bytes]] = ..., request_headers_to_remove: _Optional[_Iterable[str]] = ..., response_headers_to_add: _Optional[_Iterable[bytes]] = ..., response_headers_to_remove: _Optional[_Iterable[str]] = ..., cors: _Optional[bytes] = ..., typed_per_filter_config: _Optional[_Mapping[str, _any_pb2.Any]] = ..., include_request_attempt_count: _Optional[bool] = ..., include_attempt_count_in_response: _Optional[bool] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., retry_policy_typed_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., hedge_policy: _Optional[bytes] = ..., include_is_timeout_retry_header: _Optional[bool] = ..., per_request_buffer_limit_bytes: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., request_body_buffer_limit: _Optional[bytes] = ..., request_mirror_policies: _Optional[_Iterable[_Union[RouteAction.RequestMirrorPolicy, _Mapping]]] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("name", "match", "metadata", "decorator", "typed_per_filter_config", "request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove", "tracing", "per_request_buffer_limit_bytes", "stat_prefix", "request_body_buffer_limit", "route", "redirect", "direct_response", "filter_action", "non_forwarding_action")
    class TypedPerFilterConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _any_pb2.Any
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DECORATOR_FIELD_NUMBER: _ClassVar[int]
    TYPED_PER_FILTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HEADERS_TO_ADD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HEADERS_TO_REMOVE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_HEADERS_TO_ADD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_HEADERS_TO_REMOVE_FIELD_NUMBER: _ClassVar[int]
    TRACING_FIELD_NUMBER: _ClassVar[int]
    PER_REQUEST_BUFFER_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STAT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    REQUEST_BODY_BUFFER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_FIELD_NUMBER: _ClassVar[int]
    DIRECT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    FILTER_ACTION_FIELD_NUMBER: _ClassVar[int]
    NON_FORWARDING_ACTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    match: RouteMatch
    metadata: Metadata
    decorator: bytes
    typed_per_filter_config: _containers.MessageMap[str, _any_pb2.Any]
    request_headers_to_add: _containers.RepeatedScalarFieldContainer[bytes]
    request_headers_to_remove: _containers.RepeatedScalarFieldContainer[str]
    response_headers_to_add: _containers.RepeatedScalarFieldContainer[bytes]
    response_headers_to_remove: _containers.RepeatedScalarFieldContainer[str]
    tracing: bytes
    per_request_buffer_limit_bytes: _wrappers_pb2.UInt32Value
    stat_prefix: str
    request_body_buffer_limit: bytes
    route: RouteAction
    redirect: RedirectAction
    direct_response: DirectResponseAction
    filter_action: bytes
    non_forwarding_action: bytes
    def __init__(self, name: _Optional[str] = ..., match: _Optional[_Union[RouteMatch, _Mapping]] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., decorator: _Optional[bytes] = ..., typed_per_filter_config: _Optional[_Mapping[str, _any_pb2.Any]] = ..., request_headers_to_add: _Optional[_Iterable[bytes]] = ..., request_headers_to_remove: _Optional[_Iterable[str]] = ..., response_headers_to_add: _Optional[_Iterable[bytes]] = ..., response_headers_to_remove: _Optional[_Iterable[str]] = ..., tracing: _Optional[bytes] = ..., per_request_buffer_limit_bytes: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., stat_prefix: _Optional[str] = ..., request_body_buffer_limit: _Optional[bytes] = ..., route: _Optional[_Union[RouteAction, _Mapping]] = ..., redirect: _Optional[_Union[RedirectAction, _Mapping]] = ..., direct_response: _Optional[_Union[DirectResponseAction, _Mapping]] = ..., filter_action: _Optional[bytes] = ..., non_forwarding_action: _Optional[bytes] = ...) -> None: ...

class RouteMatch(_message.Message):
    __slots__ = ("case_sensitive", "runtime_fraction", "headers", "query_parameters", "grpc", "tls_context", "dynamic_metadata", "filter_state", "prefix", "path", "safe_regex", "connect_matcher", "path_separated_prefix", "path_match_policy")
    CASE_SENSITIVE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FRACTION_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    QUERY_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    GRPC_FIELD_NUMBER: _ClassVar[int]
    TLS_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_METADATA_FIELD_NUMBER: _ClassVar[int]
    FILTER_STATE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SAFE_REGEX_FIELD_NUMBER: _ClassVar[int]
    CONNECT_MATCHER_FIELD_NUMBER: _ClassVar[int]
    PATH_SEPARATED_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PATH_MATCH_POLICY_FIELD_NUMBER: _ClassVar[int]
    case_sensitive: _wrappers_pb2.BoolValue
    runtime_fraction: RuntimeFractionalPercent
    headers: _containers.RepeatedCompositeFieldContainer[HeaderMatcher]
    query_parameters: _containers.RepeatedScalarFieldContainer[bytes]
    grpc: bytes
    tls_context: bytes
    dynamic_metadata: _containers.RepeatedScalarFieldContainer[bytes]
    filter_state: _containers.RepeatedScalarFieldContainer[bytes]
    prefix: str
    path: str
    safe_regex: RegexMatcher
    connect_matcher: bytes
    path_separated_prefix: str
    path_match_policy: bytes
    def __init__(self, case_sensitive: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., runtime_fraction: _Optional[_Union[RuntimeFractionalPercent, _Mapping]] = ..., headers: _Optional[_Iterable[_Union[HeaderMatcher, _Mapping]]] = ..., query_parameters: _Optional[_Iterable[bytes]] = ..., grpc: _Optional[bytes] = ..., tls_context: _Optional[bytes] = ..., dynamic_metadata: _Optional[_Iterable[bytes]] = ..., filter_state: _Optional[_Iterable[bytes]] = ..., prefix: _Optional[str] = ..., path: _Optional[str] = ..., safe_regex: _Optional[_Union[RegexMatcher, _Mapping]] = ..., connect_matcher: _Optional[bytes] = ..., path_separated_prefix: _Optional[str] = ..., path_match_policy: _Optional[bytes] = ...) -> None: ...

class RouteAction(_message.Message):
    __slots__ = ("cluster_not_found_response_code", "metadata_match", "prefix_rewrite", "regex_rewrite", "path_rewrite_policy", "path_rewrite", "append_x_forwarded_host", "timeout", "idle_timeout", "flush_timeout", "early_data_policy", "retry_policy", "retry_policy_typed_config", "request_mirror_policies", "priority", "rate_limits", "include_vh_rate_limits", "hash_policy", "cors", "max_grpc_timeout", "grpc_timeout_offset", "upgrade_configs", "internal_redirect_policy", "internal_redirect_action", "max_internal_redirects", "hedge_policy", "max_stream_duration", "cluster", "cluster_header", "weighted_clusters", "cluster_specifier_plugin", "inline_cluster_specifier_plugin", "host_rewrite_literal", "auto_host_rewrite", "host_rewrite_header", "host_rewrite_path_regex", "host_rewrite")
    class ClusterNotFoundResponseCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SERVICE_UNAVAILABLE: _ClassVar[RouteAction.ClusterNotFoundResponseCode]
        NOT_FOUND: _ClassVar[RouteAction.ClusterNotFoundResponseCode]
        INTERNAL_SERVER_ERROR: _ClassVar[RouteAction.ClusterNotFoundResponseCode]
    SERVICE_UNAVAILABLE: RouteAction.ClusterNotFoundResponseCode
    NOT_FOUND: RouteAction.ClusterNotFoundResponseCode
    INTERNAL_SERVER_ERROR: RouteAction.ClusterNotFoundResponseCode
    class InternalRedirectAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PASS_THROUGH_INTERNAL_REDIRECT: _ClassVar[RouteAction.InternalRedirectAction]
        HANDLE_INTERNAL_REDIRECT: _ClassVar[RouteAction.InternalRedirectAction]
    PASS_THROUGH_INTERNAL_REDIRECT: RouteAction.InternalRedirectAction
    HANDLE_INTERNAL_REDIRECT: RouteAction.InternalRedirectAction
    class RequestMirrorPolicy(_message.Message):
        __slots__ = ("cluster", "cluster_header", "runtime_fraction", "trace_sampled", "disable_shadow_host_suffix_append", "request_headers_mutations", "host_rewrite_literal")
        CLUSTER_FIELD_NUMBER: _ClassVar[int]
        CLUSTER_HEADER_FIELD_NUMBER: _ClassVar[int]
        RUNTIME_FRACTION_FIELD_NUMBER: _ClassVar[int]
        TRACE_SAMPLED_FIELD_NUMBER: _ClassVar[int]
        DISABLE_SHADOW_HOST_SUFFIX_APPEND_FIELD_NUMBER: _ClassVar[int]
        REQUEST_HEADERS_MUTATIONS_FIELD_NUMBER: _ClassVar[int]
        HOST_REWRITE_LITERAL_FIELD_NUMBER: _ClassVar[int]
        cluster: str
        cluster_header: str
        runtime_fraction: RuntimeFractionalPercent
        trace_sampled: _wrappers_pb2.BoolValue
        disable_shadow_host_suffix_append: bool
        request_headers_mutations: _containers.RepeatedScalarFieldContainer[bytes]
        host_rewrite_literal: str
        def __init__(self, cluster: _Optional[str] = ..., cluster_header: _Optional[str] = ..., runtime_fraction: _Optional[_Union[RuntimeFractionalPercent, _Mapping]] = ..., trace_sampled: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., disable_shadow_host_suffix_append: _Optional[bool] = ..., request_headers_mutations: _Optional[_Iterable[bytes]] = ..., host_rewrite_literal: _Optional[str] = ...) -> None: ...
    class HashPolicy(_message.Message):
        __slots__ = ("terminal", "header", "cookie", "connection_properties", "query_parameter", "filter_state")
        class Header(_message.Message):
            __slots__ = ("header_name", "regex_rewrite")
            HEADER_NAME_FIELD_NUMBER: _ClassVar[int]
            REGEX_REWRITE_FIELD_NUMBER: _ClassVar[int]
            header_name: str
            regex_rewrite: RegexMatchAndSubstitute
            def __init__(self, header_name: _Optional[str] = ..., regex_rewrite: _Optional[_Union[RegexMatchAndSubstitute, _Mapping]] = ...) -> None: ...
        class Cookie(_message.Message):
            __slots__ = ("name", "ttl", "path", "attributes")
            NAME_FIELD_NUMBER: _ClassVar[int]
            TTL_FIELD_NUMBER: _ClassVar[int]
            PATH_FIELD_NUMBER: _ClassVar[int]
            ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
            name: str
            ttl: _duration_pb2.Duration
            path: str
            attributes: _containers.RepeatedScalarFieldContainer[bytes]
            def __init__(self, name: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., path: _Optional[str] = ..., attributes: _Optional[_Iterable[bytes]] = ...) -> None: ...
        class ConnectionProperties(_message.Message):
            __slots__ = ("source_ip",)
            SOURCE_IP_FIELD_NUMBER: _ClassVar[int]
            source_ip: bool
            def __init__(self, source_ip: _Optional[bool] = ...) -> None: ...
        TERMINAL_FIELD_NUMBER: _ClassVar[int]
        HEADER_FIELD_NUMBER: _ClassVar[int]
        COOKIE_FIELD_NUMBER: _ClassVar[int]
        CONNECTION_PROPERTIES_FIELD_NUMBER: _ClassVar[int]
        QUERY_PARAMETER_FIELD_NUMBER: _ClassVar[int]
        FILTER_STATE_FIELD_NUMBER: _ClassVar[int]
        terminal: bool
        header: RouteAction.HashPolicy.Header
        cookie: RouteAction.HashPolicy.Cookie
        connection_properties: RouteAction.HashPolicy.ConnectionProperties
        query_parameter: bytes
        filter_state: bytes
        def __init__(self, terminal: _Optional[bool] = ..., header: _Optional[_Union[RouteAction.HashPolicy.Header, _Mapping]] = ..., cookie: _Optional[_Union[RouteAction.HashPolicy.Cookie, _Mapping]] = ..., connection_properties: _Optional[_Union[RouteAction.HashPolicy.ConnectionProperties, _Mapping]] = ..., query_parameter: _Optional[bytes] = ..., filter_state: _Optional[bytes] = ...) -> None: ...
    CLUSTER_NOT_FOUND_RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    METADATA_MATCH_FIELD_NUMBER: _ClassVar[int]
    PREFIX_REWRITE_FIELD_NUMBER: _ClassVar[int]
    REGEX_REWRITE_FIELD_NUMBER: _ClassVar[int]
    PATH_REWRITE_POLICY_FIELD_NUMBER: _ClassVar[int]
    PATH_REWRITE_FIELD_NUMBER: _ClassVar[int]
    APPEND_X_FORWARDED_HOST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    FLUSH_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    EARLY_DATA_POLICY_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_TYPED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_MIRROR_POLICIES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VH_RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    HASH_POLICY_FIELD_NUMBER: _ClassVar[int]
    CORS_FIELD_NUMBER: _ClassVar[int]
    MAX_GRPC_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    GRPC_TIMEOUT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    UPGRADE_CONFIGS_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_REDIRECT_POLICY_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_REDIRECT_ACTION_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERNAL_REDIRECTS_FIELD_NUMBER: _ClassVar[int]
    HEDGE_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_DURATION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_HEADER_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_SPECIFIER_PLUGIN_FIELD_NUMBER: _ClassVar[int]
    INLINE_CLUSTER_SPECIFIER_PLUGIN_FIELD_NUMBER: _ClassVar[int]
    HOST_REWRITE_LITERAL_FIELD_NUMBER: _ClassVar[int]
    AUTO_HOST_REWRITE_FIELD_NUMBER: _ClassVar[int]
    HOST_REWRITE_HEADER_FIELD_NUMBER: _ClassVar[int]
    HOST_REWRITE_PATH_REGEX_FIELD_NUMBER: _ClassVar[int]
    HOST_REWRITE_FIELD_NUMBER: _ClassVar[int]
    cluster_not_found_response_code: RouteAction.ClusterNotFoundResponseCode
    metadata_match: Metadata
    prefix_rewrite: str
    regex_rewrite: RegexMatchAndSubstitute
    path_rewrite_policy: bytes
    path_rewrite: str
    append_x_forwarded_host: bool
    timeout: _duration_pb2.Duration
    idle_timeout: _duration_pb2.Duration
    flush_timeout: _duration_pb2.Duration
    early_data_policy: bytes
    retry_policy: RetryPolicy
    retry_policy_typed_config: _any_pb2.Any
    request_mirror_policies: _containers.RepeatedCompositeFieldContainer[RouteAction.RequestMirrorPolicy]
    priority: RoutingPriority
    rate_limits: _containers.RepeatedScalarFieldContainer[bytes]
    include_vh_rate_limits: _wrappers_pb2.BoolValue
    hash_policy: _containers.RepeatedCompositeFieldContainer[RouteAction.HashPolicy]
    cors: bytes
    max_grpc_timeout: _duration_pb2.Duration
    grpc_timeout_offset: _duration_pb2.Duration
    upgrade_configs: _containers.RepeatedScalarFieldContainer[bytes]
    internal_redirect_policy: bytes
    internal_redirect_action: RouteAction.InternalRedirectAction
    max_internal_redirects: _wrappers_pb2.UInt32Value
    hedge_policy: bytes
    max_stream_duration: bytes
    cluster: str
    cluster_header: str
    weighted_clusters: WeightedCluster
    cluster_specifier_plugin: str
    inline_cluster_specifier_plugin: bytes
    host_rewrite_literal: str
    auto_host_rewrite: _wrappers_pb2.BoolValue
    host_rewrite_header: str
    host_rewrite_path_regex: RegexMatchAndSubstitute
    host_rewrite: str
    def __init__(self, cluster_not_found_response_code: _Optional[_Union[RouteAction.ClusterNotFoundResponseCode, str]] = ..., metadata_match: _Optional[_Union[Metadata, _Mapping]] = ..., prefix_rewrite: _Optional[str] = ..., regex_rewrite: _Optional[_Union[RegexMatchAndSubstitute, _Mapping]] = ..., path_rewrite_policy: _Optional[bytes] = ..., path_rewrite: _Optional[str] = ..., append_x_forwarded_host: _Optional[bool] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., flush_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., early_data_policy: _Optional[bytes] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., retry_policy_typed_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., request_mirror_policies: _Optional[_Iterable[_Union[RouteAction.RequestMirrorPolicy, _Mapping]]] = ..., priority: _Optional[_Union[RoutingPriority, str]] = ..., rate_limits: _Optional[_Iterable[bytes]] = ..., include_vh_rate_limits: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., hash_policy: _Optional[_Iterable[_Union[RouteAction.HashPolicy, _Mapping]]] = ..., cors: _Optional[bytes] = ..., max_grpc_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., grpc_timeout_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., upgrade_configs: _Optional[_Iterable[bytes]] = ..., internal_redirect_policy: _Optional[bytes] = ..., internal_redirect_action: _Optional[_Union[RouteAction.InternalRedirectAction, str]] = ..., max_internal_redirects: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., hedge_policy: _Optional[bytes] = ..., max_stream_duration: _Optional[bytes] = ..., cluster: _Optional[str] = ..., cluster_header: _Optional[str] = ..., weighted_clusters: _Optional[_Union[WeightedCluster, _Mapping]] = ..., cluster_specifier_plugin: _Optional[str] = ..., inline_cluster_specifier_plugin: _Optional[bytes] = ..., host_rewrite_literal: _Optional[str] = ..., auto_host_rewrite: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., host_rewrite_header: _Optional[str] = ..., host_rewrite_path_regex: _Optional[_Union[RegexMatchAndSubstitute, _Mapping]] = ..., host_rewrite: _Optional[str] = ...) -> None: ...

class RedirectAction(_message.Message):
    __slots__ = ("host_redirect", "port_redirect", "response_code", "strip_query", "https_redirect", "scheme_redirect", "path_redirect", "prefix_rewrite", "regex_rewrite")
    class RedirectResponseCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MOVED_PERMANENTLY: _ClassVar[RedirectAction.RedirectResponseCode]
        FOUND: _ClassVar[RedirectAction.RedirectResponseCode]
        SEE_OTHER: _ClassVar[RedirectAction.RedirectResponseCode]
        TEMPORARY_REDIRECT: _ClassVar[RedirectAction.RedirectResponseCode]
        PERMANENT_REDIRECT: _ClassVar[RedirectAction.RedirectResponseCode]
    MOVED_PERMANENTLY: RedirectAction.RedirectResponseCode
    FOUND: RedirectAction.RedirectResponseCode
    SEE_OTHER: RedirectAction.RedirectResponseCode
    TEMPORARY_REDIRECT: RedirectAction.RedirectResponseCode
    PERMANENT_REDIRECT: RedirectAction.RedirectResponseCode
    HOST_REDIRECT_FIELD_NUMBER: _ClassVar[int]
    PORT_REDIRECT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_CODE_FIELD_NUMBER: _ClassVar[int]
    STRIP_QUERY_FIELD_NUMBER: _ClassVar[int]
    HTTPS_REDIRECT_FIELD_NUMBER: _ClassVar[int]
    SCHEME_REDIRECT_FIELD_NUMBER: _ClassVar[int]
    PATH_REDIRECT_FIELD_NUMBER: _ClassVar[int]
    PREFIX_REWRITE_FIELD_NUMBER: _ClassVar[int]
    REGEX_REWRITE_FIELD_NUMBER: _ClassVar[int]
    host_redirect: str
    port_redirect: int
    response_code: RedirectAction.RedirectResponseCode
    strip_query: bool
    https_redirect: bool
    scheme_redirect: str
    path_redirect: str
    prefix_rewrite: str
    regex_rewrite: RegexMatchAndSubstitute
    def __init__(self, host_redirect: _Optional[str] = ..., port_redirect: _Optional[int] = ..., response_code: _Optional[_Union[RedirectAction.RedirectResponseCode, str]] = ..., strip_query: _Optional[bool] = ..., https_redirect: _Optional[bool] = ..., scheme_redirect: _Optional[str] = ..., path_redirect: _Optional[str] = ..., prefix_rewrite: _Optional[str] = ..., regex_rewrite: _Optional[_Union[RegexMatchAndSubstitute, _Mapping]] = ...) -> None: ...

class DirectResponseAction(_message.Message):
    __slots__ = ("status", "body", "body_format")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    BODY_FORMAT_FIELD_NUMBER: _ClassVar[int]
    status: int
    body: DataSource
    body_format: bytes
    def __init__(self, status: _Optional[int] = ..., body: _Optional[_Union[DataSource, _Mapping]] = ..., body_format: _Optional[bytes] = ...) -> None: ...

class RuntimeFractionalPercent(_message.Message):
    __slots__ = ("default_value", "runtime_key")
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_KEY_FIELD_NUMBER: _ClassVar[int]
    default_value: FractionalPercent
    runtime_key: str
    def __init__(self, default_value: _Optional[_Union[FractionalPercent, _Mapping]] = ..., runtime_key: _Optional[str] = ...) -> None: ...

class FractionalPercent(_message.Message):
    __slots__ = ("numerator", "denominator")
    class DenominatorType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        HUNDRED: _ClassVar[FractionalPercent.DenominatorType]
        TEN_THOUSAND: _ClassVar[FractionalPercent.DenominatorType]
        MILLION: _ClassVar[FractionalPercent.DenominatorType]
    HUNDRED: FractionalPercent.DenominatorType
    TEN_THOUSAND: FractionalPercent.DenominatorType
    MILLION: FractionalPercent.DenominatorType
    NUMERATOR_FIELD_NUMBER: _ClassVar[int]
    DENOMINATOR_FIELD_NUMBER: _ClassVar[int]
    numerator: int
    denominator: FractionalPercent.DenominatorType
    def __init__(self, numerator: _Optional[int] = ..., denominator: _Optional[_Union[FractionalPercent.DenominatorType, str]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("retry_on", "num_retries", "per_try_timeout", "per_try_idle_timeout", "retry_priority", "retry_host_predicate", "retry_options_predicates", "host_selection_retry_max_attempts", "retriable_status_codes", "retry_back_off", "rate_limited_retry_back_off", "retriable_headers", "retriable_request_headers")
    class ResetHeaderFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SECONDS: _ClassVar[RetryPolicy.ResetHeaderFormat]
        UNIX_TIMESTAMP: _ClassVar[RetryPolicy.ResetHeaderFormat]
    SECONDS: RetryPolicy.ResetHeaderFormat
    UNIX_TIMESTAMP: RetryPolicy.ResetHeaderFormat
    class RetryHostPredicate(_message.Message):
        __slots__ = ("name", "typed_config")
        NAME_FIELD_NUMBER: _ClassVar[int]
        TYPED_CONFIG_FIELD_NUMBER: _ClassVar[int]
        name: str
        typed_config: _any_pb2.Any
        def __init__(self, name: _Optional[str] = ..., typed_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...
    class RetryBackOff(_message.Message):
        __slots__ = ("base_interval", "max_interval")
        BASE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
        MAX_INTERVAL_FIELD_NUMBER: _ClassVar[int]
        base_interval: _duration_pb2.Duration
        max_interval: _duration_pb2.Duration
        def __init__(self, base_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    RETRY_ON_FIELD_NUMBER: _ClassVar[int]
    NUM_RETRIES_FIELD_NUMBER: _ClassVar[int]
    PER_TRY_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PER_TRY_IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRY_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RETRY_HOST_PREDICATE_FIELD_NUMBER: _ClassVar[int]
    RETRY_OPTIONS_PREDICATES_FIELD_NUMBER: _ClassVar[int]
    HOST_SELECTION_RETRY_MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RETRIABLE_STATUS_CODES_FIELD_NUMBER: _ClassVar[int]
    RETRY_BACK_OFF_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITED_RETRY_BACK_OFF_FIELD_NUMBER: _ClassVar[int]
    RETRIABLE_HEADERS_FIELD_NUMBER: _ClassVar[int]
    RETRIABLE_REQUEST_HEADERS_FIELD_NUMBER: _ClassVar[int]
    retry_on: str
    num_retries: _wrappers_pb2.UInt32Value
    per_try_timeout: _duration_pb2.Duration
    per_try_idle_timeout: _duration_pb2.Duration
    retry_priority: bytes
    retry_host_predicate: _containers.RepeatedCompositeFieldContainer[RetryPolicy.RetryHostPredicate]
    retry_options_predicates: _containers.RepeatedScalarFieldContainer[bytes]
    host_selection_retry_max_attempts: int
    retriable_status_codes: _containers.RepeatedScalarFieldContainer[int]
    retry_back_off: RetryPolicy.RetryBackOff
    rate_limited_retry_back_off: bytes
    retriable_headers: _containers.RepeatedCompositeFieldContainer[HeaderMatcher]
    retriable_request_headers: _containers.RepeatedCompositeFieldContainer[HeaderMatcher]
    def __init__(self, retry_on: _Optional[str] = ..., num_retries: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., per_try_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., per_try_idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_priority: _Optional[bytes] = ..., retry_host_predicate: _Optional[_Iterable[_Union[RetryPolicy.RetryHostPredicate, _Mapping]]] = ..., retry_options_predicates: _Optional[_Iterable[bytes]] = ..., host_selection_retry_max_attempts: _Optional[int] = ..., retriable_status_codes: _Optional[_Iterable[int]] = ..., retry_back_off: _Optional[_Union[RetryPolicy.RetryBackOff, _Mapping]] = ..., rate_limited_retry_back_off: _Optional[bytes] = ..., retriable_headers: _Optional[_Iterable[_Union[HeaderMatcher, _Mapping]]] = ..., retriable_request_headers: _Optional[_Iterable[_Union[HeaderMatcher, _Mapping]]] = ...) -> None: ...

class WeightedCluster(_message.Message):
    __slots__ = ("clusters", "total_weight", "runtime_key_prefix", "header_name", "use_hash_policy")
    class ClusterWeight(_message.Message):
        __slots__ = ("name", "cluster_header", "weight", "metadata_match", "request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove", "typed_per_filter_config", "host_rewrite_literal")
        class TypedPerFilterConfigEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: _any_pb2.Any
            def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...
        NAME_FIELD_NUMBER: _ClassVar[int]
        CLUSTER_HEADER_FIELD_NUMBER: _ClassVar[int]
        WEIGHT_FIELD_NUMBER: _ClassVar[int]
        METADATA_MATCH_FIELD_NUMBER: _ClassVar[int]
        REQUEST_HEADERS_TO_ADD_FIELD_NUMBER: _ClassVar[int]
        REQUEST_HEADERS_TO_REMOVE_FIELD_NUMBER: _ClassVar[int]
        RESPONSE_HEADERS_TO_ADD_FIELD_NUMBER: _ClassVar[int]
        RESPONSE_HEADERS_TO_REMOVE_FIELD_NUMBER: _ClassVar[int]
        TYPED_PER_FILTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
        HOST_REWRITE_LITERAL_FIELD_NUMBER: _ClassVar[int]
        name: str
        cluster_header: str
        weight: _wrappers_pb2.UInt32Value
        metadata_match: Metadata
        request_headers_to_add: _containers.RepeatedScalarFieldContainer[bytes]
        request_headers_to_remove: _containers.RepeatedScalarFieldContainer[str]
        response_headers_to_add: _containers.RepeatedScalarFieldContainer[bytes]
        response_headers_to_remove: _containers.RepeatedScalarFieldContainer[str]
        typed_per_filter_config: _containers.MessageMap[str, _any_pb2.Any]
        host_rewrite_literal: str
        def __init__(self, name: _Optional[str] = ..., cluster_header: _Optional[str] = ..., weight: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., metadata_match: _Optional[_Union[Metadata, _Mapping]] = ..., request_headers_to_add: _Optional[_Iterable[bytes]] = ..., request_headers_to_remove: _Optional[_Iterable[str]] = ..., response_headers_to_add: _Optional[_Iterable[bytes]] = ..., response_headers_to_remove: _Optional[_Iterable[str]] = ..., typed_per_filter_config: _Optional[_Mapping[str, _any_pb2.Any]] = ..., host_rewrite_literal: _Optional[str] = ...) -> None: ...
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    HEADER_NAME_FIELD_NUMBER: _ClassVar[int]
    USE_HASH_POLICY_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedCompositeFieldContainer[WeightedCluster.ClusterWeight]
    total_weight: _wrappers_pb2.UInt32Value
    runtime_key_prefix: str
    header_name: str
    use_hash_policy: _wrappers_pb2.BoolValue
    def __init__(self, clusters: _Optional[_Iterable[_Union[WeightedCluster.ClusterWeight, _Mapping]]] = ..., total_weight: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., runtime_key_prefix: _Optional[str] = ..., header_name: _Optional[str] = ..., use_hash_policy: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ...) -> None: ...

class HeaderMatcher(_message.Message):
    __slots__ = ("name", "invert_match", "treat_missing_header_as_empty", "exact_match", "safe_regex_match", "range_match", "present_match", "prefix_match", "suffix_match", "contains_match", "string_match")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INVERT_MATCH_FIELD_NUMBER: _ClassVar[int]
    TREAT_MISSING_HEADER_AS_EMPTY_FIELD_NUMBER: _ClassVar[int]
    EXACT_MATCH_FIELD_NUMBER: _ClassVar[int]
    SAFE_REGEX_MATCH_FIELD_NUMBER: _ClassVar[int]
    RANGE_MATCH_FIELD_NUMBER: _ClassVar[int]
    PRESENT_MATCH_FIELD_NUMBER: _ClassVar[int]
    PREFIX_MATCH_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_MATCH_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_MATCH_FIELD_NUMBER: _ClassVar[int]
    STRING_MATCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    invert_match: bool
    treat_missing_header_as_empty: bool
    exact_match: str
    safe_regex_match: RegexMatcher
    range_match: Int64Range
    present_match: bool
    prefix_match: str
    suffix_match: str
    contains_match: str
    string_match: StringMatcher
    def __init__(self, name: _Optional[str] = ..., invert_match: _Optional[bool] = ..., treat_missing_header_as_empty: _Optional[bool] = ..., exact_match: _Optional[str] = ..., safe_regex_match: _Optional[_Union[RegexMatcher, _Mapping]] = ..., range_match: _Optional[_Union[Int64Range, _Mapping]] = ..., present_match: _Optional[bool] = ..., prefix_match: _Optional[str] = ..., suffix_match: _Optional[str] = ..., contains_match: _Optional[str] = ..., string_match: _Optional[_Union[StringMatcher, _Mapping]] = ...) -> None: ...

class StringMatcher(_message.Message):
    __slots__ = ("ignore_case", "exact", "prefix", "suffix", "safe_regex", "contains", "custom")
    IGNORE_CASE_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_FIELD_NUMBER: _ClassVar[int]
    SAFE_REGEX_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    ignore_case: bool
    exact: str
    prefix: str
    suffix: str
    safe_regex: RegexMatcher
    contains: str
    custom: bytes
    def __init__(self, ignore_case: _Optional[bool] = ..., exact: _Optional[str] = ..., prefix: _Optional[str] = ..., suffix: _Optional[str] = ..., safe_regex: _Optional[_Union[RegexMatcher, _Mapping]] = ..., contains: _Optional[str] = ..., custom: _Optional[bytes] = ...) -> None: ...

class RegexMatcher(_message.Message):
    __slots__ = ("regex", "google_re2")
    REGEX_FIELD_NUMBER: _ClassVar[int]
    GOOGLE_RE2_FIELD_NUMBER: _ClassVar[int]
    regex: str
    google_re2: bytes
    def __init__(self, regex: _Optional[str] = ..., google_re2: _Optional[bytes] = ...) -> None: ...

class RegexMatchAndSubstitute(_message.Message):
    __slots__ = ("pattern", "substitution")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    SUBSTITUTION_FIELD_NUMBER: _ClassVar[int]
    pattern: RegexMatcher
    substitution: str
    def __init__(self, pattern: _Optional[_Union[RegexMatcher, _Mapping]] = ..., substitution: _Optional[str] = ...) -> None: ...

class PathMatcher(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: StringMatcher
    def __init__(self, path: _Optional[_Union[StringMatcher, _Mapping]] = ...) -> None: ...

class RbacFilter(_message.Message):
    __slots__ = ("rules", "rules_stat_prefix", "matcher", "shadow_rules", "shadow_matcher", "shadow_rules_stat_prefix", "track_per_rule_stats")
    RULES_FIELD_NUMBER: _ClassVar[int]
    RULES_STAT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    MATCHER_FIELD_NUMBER: _ClassVar[int]
    SHADOW_RULES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MATCHER_FIELD_NUMBER: _ClassVar[int]
    SHADOW_RULES_STAT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    TRACK_PER_RULE_STATS_FIELD_NUMBER: _ClassVar[int]
    rules: RBAC
    rules_stat_prefix: str
    matcher: bytes
    shadow_rules: RBAC
    shadow_matcher: bytes
    shadow_rules_stat_prefix: str
    track_per_rule_stats: bool
    def __init__(self, rules: _Optional[_Union[RBAC, _Mapping]] = ..., rules_stat_prefix: _Optional[str] = ..., matcher: _Optional[bytes] = ..., shadow_rules: _Optional[_Union[RBAC, _Mapping]] = ..., shadow_matcher: _Optional[bytes] = ..., shadow_rules_stat_prefix: _Optional[str] = ..., track_per_rule_stats: _Optional[bool] = ...) -> None: ...

class HttpFault(_message.Message):
    __slots__ = ("delay", "abort", "upstream_cluster", "headers", "downstream_nodes", "max_active_faults", "response_rate_limit", "delay_percent_runtime", "abort_percent_runtime", "delay_duration_runtime", "abort_http_status_runtime", "max_active_faults_runtime", "response_rate_limit_percent_runtime", "abort_grpc_status_runtime", "disable_downstream_cluster_stats", "filter_metadata")
    DELAY_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_NODES_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIVE_FAULTS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DELAY_PERCENT_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    ABORT_PERCENT_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    DELAY_DURATION_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    ABORT_HTTP_STATUS_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIVE_FAULTS_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_RATE_LIMIT_PERCENT_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    ABORT_GRPC_STATUS_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    DISABLE_DOWNSTREAM_CLUSTER_STATS_FIELD_NUMBER: _ClassVar[int]
    FILTER_METADATA_FIELD_NUMBER: _ClassVar[int]
    delay: FaultDelay
    abort: FaultAbort
    upstream_cluster: str
    headers: _containers.RepeatedCompositeFieldContainer[HeaderMatcher]
    downstream_nodes: _containers.RepeatedScalarFieldContainer[str]
    max_active_faults: _wrappers_pb2.UInt32Value
    response_rate_limit: bytes
    delay_percent_runtime: str
    abort_percent_runtime: str
    delay_duration_runtime: str
    abort_http_status_runtime: str
    max_active_faults_runtime: str
    response_rate_limit_percent_runtime: str
    abort_grpc_status_runtime: str
    disable_downstream_cluster_stats: bool
    filter_metadata: _struct_pb2.Struct
    def __init__(self, delay: _Optional[_Union[FaultDelay, _Mapping]] = ..., abort: _Optional[_Union[FaultAbort, _Mapping]] = ..., upstream_cluster: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[HeaderMatcher, _Mapping]]] = ..., downstream_nodes: _Optional[_Iterable[str]] = ..., max_active_faults: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., response_rate_limit: _Optional[bytes] = ..., delay_percent_runtime: _Optional[str] = ..., abort_percent_runtime: _Optional[str] = ..., delay_duration_runtime: _Optional[str] = ..., abort_http_status_runtime: _Optional[str] = ..., max_active_faults_runtime: _Optional[str] = ..., response_rate_limit_percent_runtime: _Optional[str] = ..., abort_grpc_status_runtime: _Optional[str] = ..., disable_downstream_cluster_stats: _Optional[bool] = ..., filter_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class FaultAbort(_message.Message):
    __slots__ = ("percentage", "http_status", "grpc_status", "header_abort")
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    GRPC_STATUS_FIELD_NUMBER: _ClassVar[int]
    HEADER_ABORT_FIELD_NUMBER: _ClassVar[int]
    percentage: FractionalPercent
    http_status: int
    grpc_status: int
    header_abort: bytes
    def __init__(self, percentage: _Optional[_Union[FractionalPercent, _Mapping]] = ..., http_status: _Optional[int] = ..., grpc_status: _Optional[int] = ..., header_abort: _Optional[bytes] = ...) -> None: ...

class FaultDelay(_message.Message):
    __slots__ = ("percentage", "fixed_delay", "header_delay")
    class FaultDelayType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FIXED: _ClassVar[FaultDelay.FaultDelayType]
    FIXED: FaultDelay.FaultDelayType
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    FIXED_DELAY_FIELD_NUMBER: _ClassVar[int]
    HEADER_DELAY_FIELD_NUMBER: _ClassVar[int]
    percentage: FractionalPercent
    fixed_delay: _duration_pb2.Duration
    header_delay: bytes
    def __init__(self, percentage: _Optional[_Union[FractionalPercent, _Mapping]] = ..., fixed_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., header_delay: _Optional[bytes] = ...) -> None: ...

class LocalRateLimit(_message.Message):
    __slots__ = ("stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced", "request_headers_to_add_when_not_enforced", "response_headers_to_add", "descriptors", "stage", "local_rate_limit_per_downstream_connection", "local_cluster_rate_limit", "enable_x_ratelimit_headers", "vh_rate_limits", "always_consume_default_token_bucket", "rate_limited_as_resource_exhausted", "rate_limits", "max_dynamic_descriptors")
    STAT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_BUCKET_FIELD_NUMBER: _ClassVar[int]
    FILTER_ENABLED_FIELD_NUMBER: _ClassVar[int]
    FILTER_ENFORCED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HEADERS_TO_ADD_WHEN_NOT_ENFORCED_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_HEADERS_TO_ADD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTORS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RATE_LIMIT_PER_DOWNSTREAM_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_CLUSTER_RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    ENABLE_X_RATELIMIT_HEADERS_FIELD_NUMBER: _ClassVar[int]
    VH_RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_CONSUME_DEFAULT_TOKEN_BUCKET_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITED_AS_RESOURCE_EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    MAX_DYNAMIC_DESCRIPTORS_FIELD_NUMBER: _ClassVar[int]
    stat_prefix: str
    status: bytes
    token_bucket: TokenBucket
    filter_enabled: RuntimeFractionalPercent
    filter_enforced: RuntimeFractionalPercent
    request_headers_to_add_when_not_enforced: _containers.RepeatedScalarFieldContainer[bytes]
    response_headers_to_add: _containers.RepeatedScalarFieldContainer[bytes]
    descriptors: _containers.RepeatedScalarFieldContainer[bytes]
    stage: int
    local_rate_limit_per_downstream_connection: bool
    local_cluster_rate_limit: bytes
    enable_x_ratelimit_headers: XRateLimitHeadersRFCVersion
    vh_rate_limits: VhRateLimitsOptions
    always_consume_default_token_bucket: _wrappers_pb2.BoolValue
    rate_limited_as_resource_exhausted: bool
    rate_limits: _containers.RepeatedScalarFieldContainer[bytes]
    max_dynamic_descriptors: _wrappers_pb2.UInt32Value
    def __init__(self, stat_prefix: _Optional[str] = ..., status: _Optional[bytes] = ..., token_bucket: _Optional[_Union[TokenBucket, _Mapping]] = ..., filter_enabled: _Optional[_Union[RuntimeFractionalPercent, _Mapping]] = ..., filter_enforced: _Optional[_Union[RuntimeFractionalPercent, _Mapping]] = ..., request_headers_to_add_when_not_enforced: _Optional[_Iterable[bytes]] = ..., response_headers_to_add: _Optional[_Iterable[bytes]] = ..., descriptors: _Optional[_Iterable[bytes]] = ..., stage: _Optional[int] = ..., local_rate_limit_per_downstream_connection: _Optional[bool] = ..., local_cluster_rate_limit: _Optional[bytes] = ..., enable_x_ratelimit_headers: _Optional[_Union[XRateLimitHeadersRFCVersion, str]] = ..., vh_rate_limits: _Optional[_Union[VhRateLimitsOptions, str]] = ..., always_consume_default_token_bucket: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., rate_limited_as_resource_exhausted: _Optional[bool] = ..., rate_limits: _Optional[_Iterable[bytes]] = ..., max_dynamic_descriptors: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ...) -> None: ...

class TokenBucket(_message.Message):
    __slots__ = ("max_tokens", "tokens_per_fill", "fill_interval")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_FILL_FIELD_NUMBER: _ClassVar[int]
    FILL_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    tokens_per_fill: _wrappers_pb2.UInt32Value
    fill_interval: _duration_pb2.Duration
    def __init__(self, max_tokens: _Optional[int] = ..., tokens_per_fill: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., fill_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RBAC(_message.Message):
    __slots__ = ("action", "policies", "audit_logging_options")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ALLOW: _ClassVar[RBAC.Action]
        DENY: _ClassVar[RBAC.Action]
        LOG: _ClassVar[RBAC.Action]
    ALLOW: RBAC.Action
    DENY: RBAC.Action
    LOG: RBAC.Action
    class PoliciesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Policy
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...
    ACTION_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LOGGING_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    action: RBAC.Action
    policies: _containers.MessageMap[str, Policy]
    audit_logging_options: bytes
    def __init__(self, action: _Optional[_Union[RBAC.Action, str]] = ..., policies: _Optional[_Mapping[str, Policy]] = ..., audit_logging_options: _Optional[bytes] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("permissions", "principals", "condition", "checked_condition", "cel_config")
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    CHECKED_CONDITION_FIELD_NUMBER: _ClassVar[int]
    CEL_CONFIG_FIELD_NUMBER: _ClassVar[int]
    permissions: _containers.RepeatedCompositeFieldContainer[Permission]
    principals: _containers.RepeatedCompositeFieldContainer[Principal]
    condition: bytes
    checked_condition: bytes
    cel_config: bytes
    def __init__(self, permissions: _Optional[_Iterable[_Union[Permission, _Mapping]]] = ..., principals: _Optional[_Iterable[_Union[Principal, _Mapping]]] = ..., condition: _Optional[bytes] = ..., checked_condition: _Optional[bytes] = ..., cel_config: _Optional[bytes] = ...) -> None: ...

class Permission(_message.Message):
    __slots__ = ("and_rules", "or_rules", "any", "header", "url_path", "destination_ip", "destination_port", "destination_port_range", "metadata", "not_rule", "requested_server_name", "matcher", "uri_template", "sourced_metadata")
    class Set(_message.Message):
        __slots__ = ("rules",)
        RULES_FIELD_NUMBER: _ClassVar[int]
        rules: _containers.RepeatedCompositeFieldContainer[Permission]
        def __init__(self, rules: _Optional[_Iterable[_Union[Permission, _Mapping]]] = ...) -> None: ...
    AND_RULES_FIELD_NUMBER: _ClassVar[int]
    OR_RULES_FIELD_NUMBER: _ClassVar[int]
    ANY_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    URL_PATH_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_IP_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PORT_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PORT_RANGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NOT_RULE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    MATCHER_FIELD_NUMBER: _ClassVar[int]
    URI_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    SOURCED_METADATA_FIELD_NUMBER: _ClassVar[int]
    and_rules: Permission.Set
    or_rules: Permission.Set
    any: bool
    header: HeaderMatcher
    url_path: PathMatcher
    destination_ip: CidrRange
    destination_port: int
    destination_port_range: bytes
    metadata: bytes
    not_rule: Permission
    requested_server_name: StringMatcher
    matcher: bytes
    uri_template: bytes
    sourced_metadata: bytes
    def __init__(self, and_rules: _Optional[_Union[Permission.Set, _Mapping]] = ..., or_rules: _Optional[_Union[Permission.Set, _Mapping]] = ..., any: _Optional[bool] = ..., header: _Optional[_Union[HeaderMatcher, _Mapping]] = ..., url_path: _Optional[_Union[PathMatcher, _Mapping]] = ..., destination_ip: _Optional[_Union[CidrRange, _Mapping]] = ..., destination_port: _Optional[int] = ..., destination_port_range: _Optional[bytes] = ..., metadata: _Optional[bytes] = ..., not_rule: _Optional[_Union[Permission, _Mapping]] = ..., requested_server_name: _Optional[_Union[StringMatcher, _Mapping]] = ..., matcher: _Optional[bytes] = ..., uri_template: _Optional[bytes] = ..., sourced_metadata: _Optional[bytes] = ...) -> None: ...

class Principal(_message.Message):
    __slots__ = ("and_ids", "or_ids", "any", "authenticated", "source_ip", "direct_remote_ip", "remote_ip", "header", "url_path", "metadata", "filter_state", "not_id", "sourced_metadata", "custom")
    class Set(_message.Message):
        __slots__ = ("ids",)
        IDS_FIELD_NUMBER: _ClassVar[int]
        ids: _containers.RepeatedCompositeFieldContainer[Principal]
        def __init__(self, ids: _Optional[_Iterable[_Union[Principal, _Mapping]]] = ...) -> None: ...
    class Authenticated(_message.Message):
        __slots__ = ("principal_name",)
        PRINCIPAL_NAME_FIELD_NUMBER: _ClassVar[int]
        principal_name: StringMatcher
        def __init__(self, principal_name: _Optional[_Union[StringMatcher, _Mapping]] = ...) -> None: ...
    AND_IDS_FIELD_NUMBER: _ClassVar[int]
    OR_IDS_FIELD_NUMBER: _ClassVar[int]
    ANY_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IP_FIELD_NUMBER: _ClassVar[int]
    DIRECT_REMOTE_IP_FIELD_NUMBER: _ClassVar[int]
    REMOTE_IP_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    URL_PATH_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FILTER_STATE_FIELD_NUMBER: _ClassVar[int]
    NOT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCED_METADATA_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    and_ids: Principal.Set
    or_ids: Principal.Set
    any: bool
    authenticated: Principal.Authenticated
    source_ip: CidrRange
    direct_remote_ip: CidrRange
    remote_ip: CidrRange
    header: HeaderMatcher
    url_path: PathMatcher
    metadata: bytes
    filter_state: bytes
    not_id: Principal
    sourced_metadata: bytes
    custom: bytes
    def __init__(self, and_ids: _Optional[_Union[Principal.Set, _Mapping]] = ..., or_ids: _Optional[_Union[Principal.Set, _Mapping]] = ..., any: _Optional[bool] = ..., authenticated: _Optional[_Union[Principal.Authenticated, _Mapping]] = ..., source_ip: _Optional[_Union[CidrRange, _Mapping]] = ..., direct_remote_ip: _Optional[_Union[CidrRange, _Mapping]] = ..., remote_ip: _Optional[_Union[CidrRange, _Mapping]] = ..., header: _Optional[_Union[HeaderMatcher, _Mapping]] = ..., url_path: _Optional[_Union[PathMatcher, _Mapping]] = ..., metadata: _Optional[bytes] = ..., filter_state: _Optional[bytes] = ..., not_id: _Optional[_Union[Principal, _Mapping]] = ..., sourced_metadata: _Optional[bytes] = ..., custom: _Optional[bytes] = ...) -> None: ...

class Cluster(_message.Message):
    __slots__ = ("transport_socket_matches", "transport_socket_matcher", "name", "alt_stat_name", "eds_cluster_config", "connect_timeout", "per_connection_buffer_limit_bytes", "lb_policy", "load_assignment", "health_checks", "max_requests_per_connection", "circuit_breakers", "upstream_http_protocol_options", "common_http_protocol_options", "http_protocol_options", "http2_protocol_options", "typed_extension_protocol_options", "dns_refresh_rate", "dns_jitter", "dns_failure_refresh_rate", "respect_dns_ttl", "dns_lookup_family", "dns_resolvers", "use_tcp_for_dns_lookups", "dns_resolution_config", "typed_dns_resolver_config", "wait_for_warm_on_init", "outlier_detection", "cleanup_interval", "upstream_bind_config", "lb_subset_config", "common_lb_config", "transport_socket", "metadata", "protocol_selection", "upstream_connection_options", "close_connections_on_host_health_failure", "ignore_health_on_host_removal", "filters", "load_balancing_policy", "lrs_server", "lrs_report_endpoint_metrics", "track_timeout_budgets", "upstream_config", "track_cluster_stats", "preconnect_policy", "connection_pool_per_downstream_connection", "type", "cluster_type", "ring_hash_lb_config", "maglev_lb_config", "original_dst_lb_config", "least_request_lb_config", "round_robin_lb_config")
    class DiscoveryType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATIC: _ClassVar[Cluster.DiscoveryType]
        STRICT_DNS: _ClassVar[Cluster.DiscoveryType]
        LOGICAL_DNS: _ClassVar[Cluster.DiscoveryType]
        EDS: _ClassVar[Cluster.DiscoveryType]
        ORIGINAL_DST: _ClassVar[Cluster.DiscoveryType]
    STATIC: Cluster.DiscoveryType
    STRICT_DNS: Cluster.DiscoveryType
    LOGICAL_DNS: Cluster.DiscoveryType
    EDS: Cluster.DiscoveryType
    ORIGINAL_DST: Cluster.DiscoveryType
    class LbPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ROUND_ROBIN: _ClassVar[Cluster.LbPolicy]
        LEAST_REQUEST: _ClassVar[Cluster.LbPolicy]
        RING_HASH: _ClassVar[Cluster.LbPolicy]
        RANDOM: _ClassVar[Cluster.LbPolicy]
        MAGLEV: _ClassVar[Cluster.LbPolicy]
        CLUSTER_PROVIDED: _ClassVar[Cluster.LbPolicy]
        LOAD_BALANCING_POLICY_CONFIG: _ClassVar[Cluster.LbPolicy]
    ROUND_ROBIN: Cluster.LbPolicy
    LEAST_REQUEST: Cluster.LbPolicy
    RING_HASH: Cluster.LbPolicy
    RANDOM: Cluster.LbPolicy
    MAGLEV: Cluster.LbPolicy
    CLUSTER_PROVIDED: Cluster.LbPolicy
    LOAD_BALANCING_POLICY_CONFIG: Cluster.LbPolicy
    class DnsLookupFamily(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        AUTO: _ClassVar[Cluster.DnsLookupFamily]
        V4_ONLY: _ClassVar[Cluster.DnsLookupFamily]
        V6_ONLY: _ClassVar[Cluster.DnsLookupFamily]
        V4_PREFERRED: _ClassVar[Cluster.DnsLookupFamily]
        ALL: _ClassVar[Cluster.DnsLookupFamily]
    AUTO: Cluster.DnsLookupFamily
    V4_ONLY: Cluster.DnsLookupFamily
    V6_ONLY: Cluster.DnsLookupFamily
    V4_PREFERRED: Cluster.DnsLookupFamily
    ALL: Cluster.DnsLookupFamily
    class ClusterProtocolSelection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        USE_CONFIGURED_PROTOCOL: _ClassVar[Cluster.ClusterProtocolSelection]
        USE_DOWNSTREAM_PROTOCOL: _ClassVar[Cluster.ClusterProtocolSelection]
    USE_CONFIGURED_PROTOCOL: Cluster.ClusterProtocolSelection
    USE_DOWNSTREAM_PROTOCOL: Cluster.ClusterProtocolSelection
    class EdsClusterConfig(_message.Message):
        __slots__ = ("eds_config", "service_name")
        EDS_CONFIG_FIELD_NUMBER: _ClassVar[int]
        SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
        eds_config: bytes
        service_name: str
        def __init__(self, eds_config: _Optional[bytes] = ..., service_name: _Optional[str] = ...) -> None: ...
    class TypedExtensionProtocolOptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _any_pb2.Any
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...
    TRANSPORT_SOCKET_MATCHES_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_SOCKET_MATCHER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALT_STAT_NAME_FIELD_NUMBER: _ClassVar[int]
    EDS_CLUSTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONNECT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PER_CONNECTION_BUFFER_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    LB_POLICY_FIELD_NUMBER: _ClassVar[int]
    LOAD_ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECKS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUESTS_PER_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_BREAKERS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_HTTP_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    COMMON_HTTP_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HTTP_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HTTP2_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TYPED_EXTENSION_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DNS_REFRESH_RATE_FIELD_NUMBER: _ClassVar[int]
    DNS_JITTER_FIELD_NUMBER: _ClassVar[int]
    DNS_FAILURE_REFRESH_RATE_FIELD_NUMBER: _ClassVar[int]
    RESPECT_DNS_TTL_FIELD_NUMBER: _ClassVar[int]
    DNS_LOOKUP_FAMILY_FIELD_NUMBER: _ClassVar[int]
    DNS_RESOLVERS_FIELD_NUMBER: _ClassVar[int]
    USE_TCP_FOR_DNS_LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    DNS_RESOLUTION_CONFIG_FIELD_NUMBER: _ClassVar[int]
    TYPED_DNS_RESOLVER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_WARM_ON_INIT_FIELD_NUMBER: _ClassVar[int]
    OUTLIER_DETECTION_FIELD_NUMBER: _ClassVar[int]
    CLEANUP_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_BIND_CONFIG_FIELD_NUMBER: _ClassVar[int]
    LB_SUBSET_CONFIG_FIELD_NUMBER: _ClassVar[int]
    COMMON_LB_CONFIG_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_SOCKET_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_SELECTION_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_CONNECTION_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CLOSE_CONNECTIONS_ON_HOST_HEALTH_FAILURE_FIELD_NUMBER: _ClassVar[int]
    IGNORE_HEALTH_ON_HOST_REMOVAL_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCING_POLICY_FIELD_NUMBER: _ClassVar[int]
    LRS_SERVER_FIELD_NUMBER: _ClassVar[int]
    LRS_REPORT_ENDPOINT_METRICS_FIELD_NUMBER: _ClassVar[int]
    TRACK_TIMEOUT_BUDGETS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_CONFIG_FIELD_NUMBER: _ClassVar[int]
    TRACK_CLUSTER_STATS_FIELD_NUMBER: _ClassVar[int]
    PRECONNECT_POLICY_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_POOL_PER_DOWNSTREAM_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_TYPE_FIELD_NUMBER: _ClassVar[int]
    RING_HASH_LB_CONFIG_FIELD_NUMBER: _ClassVar[int]
    MAGLEV_LB_CONFIG_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_DST_LB_CONFIG_FIELD_NUMBER: _ClassVar[int]
    LEAST_REQUEST_LB_CONFIG_FIELD_NUMBER: _ClassVar[int]
    ROUND_ROBIN_LB_CONFIG_FIELD_NUMBER: _ClassVar[int]
    transport_socket_matches: _containers.RepeatedScalarFieldContainer[bytes]
    transport_socket_matcher: bytes
    name: str
    alt_stat_name: str
    eds_cluster_config: Cluster.EdsClusterConfig
    connect_timeout: _duration_pb2.Duration
    per_connection_buffer_limit_bytes: _wrappers_pb2.UInt32Value
    lb_policy: Cluster.LbPolicy
    load_assignment: ClusterLoadAssignment
    health_checks: _containers.RepeatedCompositeFieldContainer[HealthCheck]
    max_requests_per_connection: _wrappers_pb2.UInt32Value
    circuit_breakers: CircuitBreakers
    upstream_http_protocol_options: bytes
    common_http_protocol_options: CommonHttpProtocolOptions
    http_protocol_options: bytes
    http2_protocol_options: Http2ProtocolOptions
    typed_extension_protocol_options: _containers.MessageMap[str, _any_pb2.Any]
    dns_refresh_rate: _duration_pb2.Duration
    dns_jitter: _duration_pb2.Duration
    dns_failure_refresh_rate: bytes
    respect_dns_ttl: bool
    dns_lookup_family: Cluster.DnsLookupFamily
    dns_resolvers: _containers.RepeatedCompositeFieldContainer[Address]
    use_tcp_for_dns_lookups: bool
    dns_resolution_config: bytes
    typed_dns_resolver_config: bytes
    wait_for_warm_on_init: _wrappers_pb2.BoolValue
    outlier_detection: OutlierDetection
    cleanup_interval: _duration_pb2.Duration
    upstream_bind_config: bytes
    lb_subset_config: bytes
    common_lb_config: bytes
    transport_socket: TransportSocket
    metadata: Metadata
    protocol_selection: Cluster.ClusterProtocolSelection
    upstream_connection_options: bytes
    close_connections_on_host_health_failure: bool
    ignore_health_on_host_removal: bool
    filters: _containers.RepeatedScalarFieldContainer[bytes]
    load_balancing_policy: bytes
    lrs_server: bytes
    lrs_report_endpoint_metrics: _containers.RepeatedScalarFieldContainer[str]
    track_timeout_budgets: bool
    upstream_config: bytes
    track_cluster_stats: bytes
    preconnect_policy: bytes
    connection_pool_per_downstream_connection: bool
    type: Cluster.DiscoveryType
    cluster_type: bytes
    ring_hash_lb_config: bytes
    maglev_lb_config: bytes
    original_dst_lb_config: bytes
    least_request_lb_config: bytes
    round_robin_lb_config: bytes
    def __init__(self, transport_socket_matches: _Optional[_Iterable[bytes]] = ..., transport_socket_matcher: _Optional[bytes] = ..., name: _Optional[str] = ..., alt_stat_name: _Optional[str] = ..., eds_cluster_config: _Optional[_Union[Cluster.EdsClusterConfig, _Mapping]] = ..., connect_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., per_connection_buffer_limit_bytes: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., lb_policy: _Optional[_Union[Cluster.LbPolicy, str]] = ..., load_assignment: _Optional[_Union[ClusterLoadAssignment, _Mapping]] = ..., health_checks: _Optional[_Iterable[_Union[HealthCheck, _Mapping]]] = ..., max_requests_per_connection: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., circuit_breakers: _Optional[_Union[CircuitBreakers, _Mapping]] = ..., upstream_http_protocol_options: _Optional[bytes] = ..., common_http_protocol_options: _Optional[_Union[CommonHttpProtocolOptions, _Mapping]] = ..., http_protocol_options: _Optional[bytes] = ..., http2_protocol_options: _Optional[_Union[Http2ProtocolOptions, _Mapping]] = ..., typed_extension_protocol_options: _Optional[_Mapping[str, _any_pb2.Any]] = ..., dns_refresh_rate: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., dns_jitter: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., dns_failure_refresh_rate: _Optional[bytes] = ..., respect_dns_ttl: _Optional[bool] = ..., dns_lookup_family: _Optional[_Union[Cluster.DnsLookupFamily, str]] = ..., dns_resolvers: _Optional[_Iterable[_Union[Address, _Mapping]]] = ..., use_tcp_for_dns_lookups: _Optional[bool] = ..., dns_resolution_config: _Optional[bytes] = ..., typed_dns_resolver_config: _Optional[bytes] = ..., wait_for_warm_on_init: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., outlier_detection: _Optional[_Union[OutlierDetection, _Mapping]] = ..., cleanup_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., upstream_bind_config: _Optional[bytes] = ..., lb_subset_config: _Optional[bytes] = ..., common_lb_config: _Optional[bytes] = ..., transport_socket: _Optional[_Union[TransportSocket, _Mapping]] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., protocol_selection: _Optional[_Union[Cluster.ClusterProtocolSelection, str]] = ..., upstream_connection_options: _Optional[bytes] = ..., close_connections_on_host_health_failure: _Optional[bool] = ..., ignore_health_on_host_removal: _Optional[bool] = ..., filters: _Optional[_Iterable[bytes]] = ..., load_balancing_policy: _Optional[bytes] = ..., lrs_server: _Optional[bytes] = ..., lrs_report_endpoint_metrics: _Optional[_Iterable[str]] = ..., track_timeout_budgets: _Optional[bool] = ..., upstream_config: _Optional[bytes] = ..., track_cluster_stats: _Optional[bytes] = ..., preconnect_policy: _Optional[bytes] = ..., connection_pool_per_downstream_connection: _Optional[bool] = ..., type: _Optional[_Union[Cluster.DiscoveryType, str]] = ..., cluster_type: _Optional[bytes] = ..., ring_hash_lb_config: _Optional[bytes] = ..., maglev_lb_config: _Optional[bytes] = ..., original_dst_lb_config: _Optional[bytes] = ..., least_request_lb_config: _Optional[bytes] = ..., round_robin_lb_config: _Optional[bytes] = ...) -> None: ...

class OutlierDetection(_message.Message):
    __slots__ = ("consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent", "enforcing_consecutive_5xx", "enforcing_success_rate", "success_rate_minimum_hosts", "success_rate_request_volume", "success_rate_stdev_factor", "consecutive_gateway_failure", "enforcing_consecutive_gateway_failure", "split_external_local_origin_errors", "consecutive_local_origin_failure", "enforcing_consecutive_local_origin_failure", "enforcing_local_origin_success_rate", "failure_percentage_threshold", "enforcing_failure_percentage", "enforcing_failure_percentage_local_origin", "failure_percentage_minimum_hosts", "failure_percentage_request_volume", "max_ejection_time", "max_ejection_time_jitter", "successful_active_health_check_uneject_host", "monitors", "always_eject_one_host")
    CONSECUTIVE_5XX_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    BASE_EJECTION_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_EJECTION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ENFORCING_CONSECUTIVE_5XX_FIELD_NUMBER: _ClassVar[int]
    ENFORCING_SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_MINIMUM_HOSTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_REQUEST_VOLUME_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_STDEV_FACTOR_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_GATEWAY_FAILURE_FIELD_NUMBER: _ClassVar[int]
    ENFORCING_CONSECUTIVE_GATEWAY_FAILURE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_EXTERNAL_LOCAL_ORIGIN_ERRORS_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_LOCAL_ORIGIN_FAILURE_FIELD_NUMBER: _ClassVar[int]
    ENFORCING_CONSECUTIVE_LOCAL_ORIGIN_FAILURE_FIELD_NUMBER: _ClassVar[int]
    ENFORCING_LOCAL_ORIGIN_SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_PERCENTAGE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ENFORCING_FAILURE_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    ENFORCING_FAILURE_PERCENTAGE_LOCAL_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    FAILURE_PERCENTAGE_MINIMUM_HOSTS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_PERCENTAGE_REQUEST_VOLUME_FIELD_NUMBER: _ClassVar[int]
    MAX_EJECTION_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_EJECTION_TIME_JITTER_FIELD_NUMBER: _ClassVar[int]
    SUCCESSFUL_ACTIVE_HEALTH_CHECK_UNEJECT_HOST_FIELD_NUMBER: _ClassVar[int]
    MONITORS_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_EJECT_ONE_HOST_FIELD_NUMBER: _ClassVar[int]
    consecutive_5xx: _wrappers_pb2.UInt32Value
    interval: _duration_pb2.Duration
    base_ejection_time: _duration_pb2.Duration
    max_ejection_percent: _wrappers_pb2.UInt32Value
    enforcing_consecutive_5xx: _wrappers_pb2.UInt32Value
    enforcing_success_rate: _wrappers_pb2.UInt32Value
    success_rate_minimum_hosts: _wrappers_pb2.UInt32Value
    success_rate_request_volume: _wrappers_pb2.UInt32Value
    success_rate_stdev_factor: _wrappers_pb2.UInt32Value
    consecutive_gateway_failure: _wrappers_pb2.UInt32Value
    enforcing_consecutive_gateway_failure: _wrappers_pb2.UInt32Value
    split_external_local_origin_errors: bool
    consecutive_local_origin_failure: _wrappers_pb2.UInt32Value
    enforcing_consecutive_local_origin_failure: _wrappers_pb2.UInt32Value
    enforcing_local_origin_success_rate: _wrappers_pb2.UInt32Value
    failure_percentage_threshold: _wrappers_pb2.UInt32Value
    enforcing_failure_percentage: _wrappers_pb2.UInt32Value
    enforcing_failure_percentage_local_origin: _wrappers_pb2.UInt32Value
    failure_percentage_minimum_hosts: _wrappers_pb2.UInt32Value
    failure_percentage_request_volume: _wrappers_pb2.UInt32Value
    max_ejection_time: _duration_pb2.Duration
    max_ejection_time_jitter: _duration_pb2.Duration
    successful_active_health_check_uneject_host: _wrappers_pb2.BoolValue
    monitors: _containers.RepeatedScalarFieldContainer[bytes]
    always_eject_one_host: _wrappers_pb2.BoolValue
    def __init__(self, consecutive_5xx: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., base_ejection_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_ejection_percent: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., enforcing_consecutive_5xx: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., enforcing_success_rate: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., success_rate_minimum_hosts: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., success_rate_request_volume: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., success_rate_stdev_factor: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., consecutive_gateway_failure: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., enforcing_consecutive_gateway_failure: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., split_external_local_origin_errors: _Optional[bool] = ..., consecutive_local_origin_failure: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., enforcing_consecutive_local_origin_failure: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., enforcing_local_origin_success_rate: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., failure_percentage_threshold: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., enforcing_failure_percentage: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., enforcing_failure_percentage_local_origin: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., failure_percentage_minimum_hosts: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., failure_percentage_request_volume: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_ejection_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_ejection_time_jitter: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., successful_active_health_check_uneject_host: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., monitors: _Optional[_Iterable[bytes]] = ..., always_eject_one_host: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ...) -> None: ...

class CircuitBreakers(_message.Message):
    __slots__ = ("thresholds", "per_host_thresholds")
    class Thresholds(_message.Message):
        __slots__ = ("priority", "max_connections", "max_pending_requests", "max_requests", "max_retries", "retry_budget", "track_remaining", "max_connection_pools")
        class RetryBudget(_message.Message):
            __slots__ = ("budget_percent", "min_retry_concurrency")
            BUDGET_PERCENT_FIELD_NUMBER: _ClassVar[int]
            MIN_RETRY_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
            budget_percent: Percent
            min_retry_concurrency: _wrappers_pb2.UInt32Value
            def __init__(self, budget_percent: _Optional[_Union[Percent, _Mapping]] = ..., min_retry_concurrency: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ...) -> None: ...
        PRIORITY_FIELD_NUMBER: _ClassVar[int]
        MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
        MAX_PENDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
        MAX_REQUESTS_FIELD_NUMBER: _ClassVar[int]
        MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
        RETRY_BUDGET_FIELD_NUMBER: _ClassVar[int]
        TRACK_REMAINING_FIELD_NUMBER: _ClassVar[int]
        MAX_CONNECTION_POOLS_FIELD_NUMBER: _ClassVar[int]
        priority: RoutingPriority
        max_connections: _wrappers_pb2.UInt32Value
        max_pending_requests: _wrappers_pb2.UInt32Value
        max_requests: _wrappers_pb2.UInt32Value
        max_retries: _wrappers_pb2.UInt32Value
        retry_budget: CircuitBreakers.Thresholds.RetryBudget
        track_remaining: bool
        max_connection_pools: _wrappers_pb2.UInt32Value
        def __init__(self, priority: _Optional[_Union[RoutingPriority, str]] = ..., max_connections: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_pending_requests: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_requests: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_retries: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., retry_budget: _Optional[_Union[CircuitBreakers.Thresholds.RetryBudget, _Mapping]] = ..., track_remaining: _Optional[bool] = ..., max_connection_pools: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ...) -> None: ...
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    PER_HOST_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    thresholds: _containers.RepeatedCompositeFieldContainer[CircuitBreakers.Thresholds]
    per_host_thresholds: _containers.RepeatedCompositeFieldContainer[CircuitBreakers.Thresholds]
    def __init__(self, thresholds: _Optional[_Iterable[_Union[CircuitBreakers.Thresholds, _Mapping]]] = ..., per_host_thresholds: _Optional[_Iterable[_Union[CircuitBreakers.Thresholds, _Mapping]]] = ...) -> None: ...

class Percent(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: float
    def __init__(self, value: _Optional[float] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("timeout", "interval", "initial_jitter", "interval_jitter", "interval_jitter_percent", "unhealthy_threshold", "healthy_threshold", "alt_port", "reuse_connection", "no_traffic_interval", "no_traffic_healthy_interval", "unhealthy_interval", "unhealthy_edge_interval", "healthy_edge_interval", "event_log_path", "event_logger", "event_service", "always_log_health_check_failures", "always_log_health_check_success", "tls_options", "transport_socket_match_criteria", "http_health_check", "tcp_health_check", "grpc_health_check", "custom_health_check")
    class HttpHealthCheck(_message.Message):
        __slots__ = ("host", "path", "send", "receive", "response_buffer_size", "request_headers_to_add", "request_headers_to_remove", "expected_statuses", "retriable_statuses", "codec_client_type", "service_name_matcher", "method")
        HOST_FIELD_NUMBER: _ClassVar[int]
        PATH_FIELD_NUMBER: _ClassVar[int]
        SEND_FIELD_NUMBER: _ClassVar[int]
        RECEIVE_FIELD_NUMBER: _ClassVar[int]
        RESPONSE_BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
        REQUEST_HEADERS_TO_ADD_FIELD_NUMBER: _ClassVar[int]
        REQUEST_HEADERS_TO_REMOVE_FIELD_NUMBER: _ClassVar[int]
        EXPECTED_STATUSES_FIELD_NUMBER: _ClassVar[int]
        RETRIABLE_STATUSES_FIELD_NUMBER: _ClassVar[int]
        CODEC_CLIENT_TYPE_FIELD_NUMBER: _ClassVar[int]
        SERVICE_NAME_MATCHER_FIELD_NUMBER: _ClassVar[int]
        METHOD_FIELD_NUMBER: _ClassVar[int]
        host: str
        path: str
        send: bytes
        receive: _containers.RepeatedScalarFieldContainer[bytes]
        response_buffer_size: bytes
        request_headers_to_add: _containers.RepeatedScalarFieldContainer[bytes]
        request_headers_to_remove: _containers.RepeatedScalarFieldContainer[str]
        expected_statuses: _containers.RepeatedCompositeFieldContainer[Int64Range]
        retriable_statuses: _containers.RepeatedCompositeFieldContainer[Int64Range]
        codec_client_type: CodecClientType
        service_name_matcher: StringMatcher
        method: RequestMethod
        def __init__(self, host: _Optional[str] = ..., path: _Optional[str] = ..., send: _Optional[bytes] = ..., receive: _Optional[_Iterable[bytes]] = ..., response_buffer_size: _Optional[bytes] = ..., request_headers_to_add: _Optional[_Iterable[bytes]] = ..., request_headers_to_remove: _Optional[_Iterable[str]] = ..., expected_statuses: _Optional[_Iterable[_Union[Int64Range, _Mapping]]] = ..., retriable_statuses: _Optional[_Iterable[_Union[Int64Range, _Mapping]]] = ..., codec_client_type: _Optional[_Union[CodecClientType, str]] = ..., service_name_matcher: _Optional[_Union[StringMatcher, _Mapping]] = ..., method: _Optional[_Union[RequestMethod, str]] = ...) -> None: ...
    class TcpHealthCheck(_message.Message):
        __slots__ = ("send", "receive", "proxy_protocol_config")
        SEND_FIELD_NUMBER: _ClassVar[int]
        RECEIVE_FIELD_NUMBER: _ClassVar[int]
        PROXY_PROTOCOL_CONFIG_FIELD_NUMBER: _ClassVar[int]
        send: bytes
        receive: _containers.RepeatedScalarFieldContainer[bytes]
        proxy_protocol_config: bytes
        def __init__(self, send: _Optional[bytes] = ..., receive: _Optional[_Iterable[bytes]] = ..., proxy_protocol_config: _Optional[bytes] = ...) -> None: ...
    class GrpcHealthCheck(_message.Message):
        __slots__ = ("service_name", "authority", "initial_metadata")
        SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
        AUTHORITY_FIELD_NUMBER: _ClassVar[int]
        INITIAL_METADATA_FIELD_NUMBER: _ClassVar[int]
        service_name: str
        authority: str
        initial_metadata: _containers.RepeatedScalarFieldContainer[bytes]
        def __init__(self, service_name: _Optional[str] = ..., authority: _Optional[str] = ..., initial_metadata: _Optional[_Iterable[bytes]] = ...) -> None: ...
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    INITIAL_JITTER_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_JITTER_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_JITTER_PERCENT_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ALT_PORT_FIELD_NUMBER: _ClassVar[int]
    REUSE_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    NO_TRAFFIC_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    NO_TRAFFIC_HEALTHY_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_EDGE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_EDGE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    EVENT_LOG_PATH_FIELD_NUMBER: _ClassVar[int]
    EVENT_LOGGER_FIELD_NUMBER: _ClassVar[int]
    EVENT_SERVICE_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_LOG_HEALTH_CHECK_FAILURES_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_LOG_HEALTH_CHECK_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    TLS_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_SOCKET_MATCH_CRITERIA_FIELD_NUMBER: _ClassVar[int]
    HTTP_HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    TCP_HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    GRPC_HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    timeout: _duration_pb2.Duration
    interval: _duration_pb2.Duration
    initial_jitter: _duration_pb2.Duration
    interval_jitter: _duration_pb2.Duration
    interval_jitter_percent: int
    unhealthy_threshold: _wrappers_pb2.UInt32Value
    healthy_threshold: _wrappers_pb2.UInt32Value
    alt_port: _wrappers_pb2.UInt32Value
    reuse_connection: _wrappers_pb2.BoolValue
    no_traffic_interval: _duration_pb2.Duration
    no_traffic_healthy_interval: _duration_pb2.Duration
    unhealthy_interval: _duration_pb2.Duration
    unhealthy_edge_interval: _duration_pb2.Duration
    healthy_edge_interval: _duration_pb2.Duration
    event_log_path: str
    event_logger: _containers.RepeatedScalarFieldContainer[bytes]
    event_service: bytes
    always_log_health_check_failures: bool
    always_log_health_check_success: bool
    tls_options: bytes
    transport_socket_match_criteria: _struct_pb2.Struct
    http_health_check: HealthCheck.HttpHealthCheck
    tcp_health_check: HealthCheck.TcpHealthCheck
    grpc_health_check: HealthCheck.GrpcHealthCheck
    custom_health_check: bytes
    def __init__(self, timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., initial_jitter: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., interval_jitter: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., interval_jitter_percent: _Optional[int] = ..., unhealthy_threshold: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., healthy_threshold: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., alt_port: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., reuse_connection: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., no_traffic_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., no_traffic_healthy_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., unhealthy_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., unhealthy_edge_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., healthy_edge_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., event_log_path: _Optional[str] = ..., event_logger: _Optional[_Iterable[bytes]] = ..., event_service: _Optional[bytes] = ..., always_log_health_check_failures: _Optional[bool] = ..., always_log_health_check_success: _Optional[bool] = ..., tls_options: _Optional[bytes] = ..., transport_socket_match_criteria: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., http_health_check: _Optional[_Union[HealthCheck.HttpHealthCheck, _Mapping]] = ..., tcp_health_check: _Optional[_Union[HealthCheck.TcpHealthCheck, _Mapping]] = ..., grpc_health_check: _Optional[_Union[HealthCheck.GrpcHealthCheck, _Mapping]] = ..., custom_health_check: _Optional[bytes] = ...) -> None: ...

class Int64Range(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class ClusterLoadAssignment(_message.Message):
    __slots__ = ("cluster_name", "endpoints", "named_endpoints", "policy")
    class NamedEndpointsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Endpoint
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Endpoint, _Mapping]] = ...) -> None: ...
    CLUSTER_NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    NAMED_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    cluster_name: str
    endpoints: _containers.RepeatedCompositeFieldContainer[LocalityLbEndpoints]
    named_endpoints: _containers.MessageMap[str, Endpoint]
    policy: bytes
    def __init__(self, cluster_name: _Optional[str] = ..., endpoints: _Optional[_Iterable[_Union[LocalityLbEndpoints, _Mapping]]] = ..., named_endpoints: _Optional[_Mapping[str, Endpoint]] = ..., policy: _Optional[bytes] = ...) -> None: ...

class LocalityLbEndpoints(_message.Message):
    __slots__ = ("locality", "metadata", "lb_endpoints", "load_balancing_weight", "priority", "proximity", "load_balancer_endpoints", "leds_cluster_locality_config")
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LB_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCING_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PROXIMITY_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCER_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    LEDS_CLUSTER_LOCALITY_CONFIG_FIELD_NUMBER: _ClassVar[int]
    locality: bytes
    metadata: Metadata
    lb_endpoints: _containers.RepeatedCompositeFieldContainer[LbEndpoint]
    load_balancing_weight: _wrappers_pb2.UInt32Value
    priority: int
    proximity: _wrappers_pb2.UInt32Value
    load_balancer_endpoints: bytes
    leds_cluster_locality_config: bytes
    def __init__(self, locality: _Optional[bytes] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., lb_endpoints: _Optional[_Iterable[_Union[LbEndpoint, _Mapping]]] = ..., load_balancing_weight: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., priority: _Optional[int] = ..., proximity: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., load_balancer_endpoints: _Optional[bytes] = ..., leds_cluster_locality_config: _Optional[bytes] = ...) -> None: ...

class LbEndpoint(_message.Message):
    __slots__ = ("health_status", "metadata", "load_balancing_weight", "endpoint", "endpoint_name")
    HEALTH_STATUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LOAD_BALANCING_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_NAME_FIELD_NUMBER: _ClassVar[int]
    health_status: HealthStatus
    metadata: Metadata
    load_balancing_weight: _wrappers_pb2.UInt32Value
    endpoint: Endpoint
    endpoint_name: str
    def __init__(self, health_status: _Optional[_Union[HealthStatus, str]] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., load_balancing_weight: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., endpoint: _Optional[_Union[Endpoint, _Mapping]] = ..., endpoint_name: _Optional[str] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("address", "health_check_config", "hostname", "additional_addresses")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    address: Address
    health_check_config: bytes
    hostname: str
    additional_addresses: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, address: _Optional[_Union[Address, _Mapping]] = ..., health_check_config: _Optional[bytes] = ..., hostname: _Optional[str] = ..., additional_addresses: _Optional[_Iterable[bytes]] = ...) -> None: ...

class HttpProtocolOptions(_message.Message):
    __slots__ = ("common_http_protocol_options", "upstream_http_protocol_options", "http_filters", "header_validation_config", "outlier_detection", "request_mirror_policies", "hash_policy", "retry_policy", "explicit_http_config", "use_downstream_protocol_config", "auto_config")
    class ExplicitHttpConfig(_message.Message):
        __slots__ = ("http_protocol_options", "http2_protocol_options", "http3_protocol_options")
        HTTP_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
        HTTP2_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
        HTTP3_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
        http_protocol_options: bytes
        http2_protocol_options: Http2ProtocolOptions
        http3_protocol_options: bytes
        def __init__(self, http_protocol_options: _Optional[bytes] = ..., http2_protocol_options: _Optional[_Union[Http2ProtocolOptions, _Mapping]] = ..., http3_protocol_options: _Optional[bytes] = ...) -> None: ...
    COMMON_HTTP_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_HTTP_PROTOCOL_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HTTP_FILTERS_FIELD_NUMBER: _ClassVar[int]
    HEADER_VALIDATION_CONFIG_FIELD_NUMBER: _ClassVar[int]
    OUTLIER_DETECTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_MIRROR_POLICIES_FIELD_NUMBER: _ClassVar[int]
    HASH_POLICY_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    EXPLICIT_HTTP_CONFIG_FIELD_NUMBER: _ClassVar[int]
    USE_DOWNSTREAM_PROTOCOL_CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUTO_CONFIG_FIELD_NUMBER: _ClassVar[int]
    common_http_protocol_options: CommonHttpProtocolOptions
    upstream_http_protocol_options: bytes
    http_filters: _containers.RepeatedCompositeFieldContainer[HttpFilter]
    header_validation_config: bytes
    outlier_detection: bytes
    request_mirror_policies: _containers.RepeatedCompositeFieldContainer[RouteAction.RequestMirrorPolicy]
    hash_policy: _containers.RepeatedCompositeFieldContainer[RouteAction.HashPolicy]
    retry_policy: RetryPolicy
    explicit_http_config: HttpProtocolOptions.ExplicitHttpConfig
    use_downstream_protocol_config: bytes
    auto_config: bytes
    def __init__(self, common_http_protocol_options: _Optional[_Union[CommonHttpProtocolOptions, _Mapping]] = ..., upstream_http_protocol_options: _Optional[bytes] = ..., http_filters: _Optional[_Iterable[_Union[HttpFilter, _Mapping]]] = ..., header_validation_config: _Optional[bytes] = ..., outlier_detection: _Optional[bytes] = ..., request_mirror_policies: _Optional[_Iterable[_Union[RouteAction.RequestMirrorPolicy, _Mapping]]] = ..., hash_policy: _Optional[_Iterable[_Union[RouteAction.HashPolicy, _Mapping]]] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., explicit_http_config: _Optional[_Union[HttpProtocolOptions.ExplicitHttpConfig, _Mapping]] = ..., use_downstream_protocol_config: _Optional[bytes] = ..., auto_config: _Optional[bytes] = ...) -> None: ...

class CommonHttpProtocolOptions(_message.Message):
    __slots__ = ("idle_timeout", "max_connection_duration", "max_headers_count", "max_response_headers_kb", "max_stream_duration", "headers_with_underscores_action", "max_requests_per_connection")
    class HeadersWithUnderscoresAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ALLOW: _ClassVar[CommonHttpProtocolOptions.HeadersWithUnderscoresAction]
        REJECT_REQUEST: _ClassVar[CommonHttpProtocolOptions.HeadersWithUnderscoresAction]
        DROP_HEADER: _ClassVar[CommonHttpProtocolOptions.HeadersWithUnderscoresAction]
    ALLOW: CommonHttpProtocolOptions.HeadersWithUnderscoresAction
    REJECT_REQUEST: CommonHttpProtocolOptions.HeadersWithUnderscoresAction
    DROP_HEADER: CommonHttpProtocolOptions.HeadersWithUnderscoresAction
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECTION_DURATION_FIELD_NUMBER: _ClassVar[int]
    MAX_HEADERS_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_RESPONSE_HEADERS_KB_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_DURATION_FIELD_NUMBER: _ClassVar[int]
    HEADERS_WITH_UNDERSCORES_ACTION_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUESTS_PER_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    idle_timeout: _duration_pb2.Duration
    max_connection_duration: _duration_pb2.Duration
    max_headers_count: _wrappers_pb2.UInt32Value
    max_response_headers_kb: _wrappers_pb2.UInt32Value
    max_stream_duration: _duration_pb2.Duration
    headers_with_underscores_action: CommonHttpProtocolOptions.HeadersWithUnderscoresAction
    max_requests_per_connection: _wrappers_pb2.UInt32Value
    def __init__(self, idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_connection_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_headers_count: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_response_headers_kb: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_stream_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., headers_with_underscores_action: _Optional[_Union[CommonHttpProtocolOptions.HeadersWithUnderscoresAction, str]] = ..., max_requests_per_connection: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ...) -> None: ...

class Http2ProtocolOptions(_message.Message):
    __slots__ = ("hpack_table_size", "max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size", "allow_connect", "allow_metadata", "max_outbound_frames", "max_outbound_control_frames", "max_consecutive_inbound_frames_with_empty_payload", "max_inbound_priority_frames_per_stream", "max_inbound_window_update_frames_per_data_frame_sent", "stream_error_on_invalid_http_messaging", "override_stream_error_on_invalid_http_message", "custom_settings_parameters", "connection_keepalive", "use_oghttp2_codec", "max_metadata_size")
    HPACK_TABLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_STREAMS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_STREAM_WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CONNECTION_WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_CONNECT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_METADATA_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTBOUND_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTBOUND_CONTROL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONSECUTIVE_INBOUND_FRAMES_WITH_EMPTY_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    MAX_INBOUND_PRIORITY_FRAMES_PER_STREAM_FIELD_NUMBER: _ClassVar[int]
    MAX_INBOUND_WINDOW_UPDATE_FRAMES_PER_DATA_FRAME_SENT_FIELD_NUMBER: _ClassVar[int]
    STREAM_ERROR_ON_INVALID_HTTP_MESSAGING_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_STREAM_ERROR_ON_INVALID_HTTP_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_SETTINGS_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_KEEPALIVE_FIELD_NUMBER: _ClassVar[int]
    USE_OGHTTP2_CODEC_FIELD_NUMBER: _ClassVar[int]
    MAX_METADATA_SIZE_FIELD_NUMBER: _ClassVar[int]
    hpack_table_size: _wrappers_pb2.UInt32Value
    max_concurrent_streams: _wrappers_pb2.UInt32Value
    initial_stream_window_size: _wrappers_pb2.UInt32Value
    initial_connection_window_size: _wrappers_pb2.UInt32Value
    allow_connect: bool
    allow_metadata: bool
    max_outbound_frames: _wrappers_pb2.UInt32Value
    max_outbound_control_frames: _wrappers_pb2.UInt32Value
    max_consecutive_inbound_frames_with_empty_payload: _wrappers_pb2.UInt32Value
    max_inbound_priority_frames_per_stream: _wrappers_pb2.UInt32Value
    max_inbound_window_update_frames_per_data_frame_sent: _wrappers_pb2.UInt32Value
    stream_error_on_invalid_http_messaging: bool
    override_stream_error_on_invalid_http_message: _wrappers_pb2.BoolValue
    custom_settings_parameters: _containers.RepeatedScalarFieldContainer[bytes]
    connection_keepalive: bytes
    use_oghttp2_codec: _wrappers_pb2.BoolValue
    max_metadata_size: bytes
    def __init__(self, hpack_table_size: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_concurrent_streams: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., initial_stream_window_size: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., initial_connection_window_size: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., allow_connect: _Optional[bool] = ..., allow_metadata: _Optional[bool] = ..., max_outbound_frames: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_outbound_control_frames: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_consecutive_inbound_frames_with_empty_payload: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_inbound_priority_frames_per_stream: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., max_inbound_window_update_frames_per_data_frame_sent: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., stream_error_on_invalid_http_messaging: _Optional[bool] = ..., override_stream_error_on_invalid_http_message: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., custom_settings_parameters: _Optional[_Iterable[bytes]] = ..., connection_keepalive: _Optional[bytes] = ..., use_oghttp2_codec: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., max_metadata_size: _Optional[bytes] = ...) -> None: ...

class DownstreamTlsContext(_message.Message):
    __slots__ = ("common_tls_context", "require_client_certificate", "require_sni", "disable_stateful_session_resumption", "session_timeout", "ocsp_staple_policy", "full_scan_certs_on_sni_mismatch", "prefer_client_ciphers", "session_ticket_keys", "session_ticket_keys_sds_secret_config", "disable_stateless_session_resumption")
    class OcspStaplePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LENIENT_STAPLING: _ClassVar[DownstreamTlsContext.OcspStaplePolicy]
        STRICT_STAPLING: _ClassVar[DownstreamTlsContext.OcspStaplePolicy]
        MUST_STAPLE: _ClassVar[DownstreamTlsContext.OcspStaplePolicy]
    LENIENT_STAPLING: DownstreamTlsContext.OcspStaplePolicy
    STRICT_STAPLING: DownstreamTlsContext.OcspStaplePolicy
    MUST_STAPLE: DownstreamTlsContext.OcspStaplePolicy
    COMMON_TLS_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_CLIENT_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_SNI_FIELD_NUMBER: _ClassVar[int]
    DISABLE_STATEFUL_SESSION_RESUMPTION_FIELD_NUMBER: _ClassVar[int]
    SESSION_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    OCSP_STAPLE_POLICY_FIELD_NUMBER: _ClassVar[int]
    FULL_SCAN_CERTS_ON_SNI_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    PREFER_CLIENT_CIPHERS_FIELD_NUMBER: _ClassVar[int]
    SESSION_TICKET_KEYS_FIELD_NUMBER: _ClassVar[int]
    SESSION_TICKET_KEYS_SDS_SECRET_CONFIG_FIELD_NUMBER: _ClassVar[int]
    DISABLE_STATELESS_SESSION_RESUMPTION_FIELD_NUMBER: _ClassVar[int]
    common_tls_context: CommonTlsContext
    require_client_certificate: _wrappers_pb2.BoolValue
    require_sni: _wrappers_pb2.BoolValue
    disable_stateful_session_resumption: bool
    session_timeout: _duration_pb2.Duration
    ocsp_staple_policy: DownstreamTlsContext.OcspStaplePolicy
    full_scan_certs_on_sni_mismatch: _wrappers_pb2.BoolValue
    prefer_client_ciphers: bool
    session_ticket_keys: bytes
    session_ticket_keys_sds_secret_config: SdsSecretConfig
    disable_stateless_session_resumption: bool
    def __init__(self, common_tls_context: _Optional[_Union[CommonTlsContext, _Mapping]] = ..., require_client_certificate: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., require_sni: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., disable_stateful_session_resumption: _Optional[bool] = ..., session_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., ocsp_staple_policy: _Optional[_Union[DownstreamTlsContext.OcspStaplePolicy, str]] = ..., full_scan_certs_on_sni_mismatch: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., prefer_client_ciphers: _Optional[bool] = ..., session_ticket_keys: _Optional[bytes] = ..., session_ticket_keys_sds_secret_config: _Optional[_Union[SdsSecretConfig, _Mapping]] = ..., disable_stateless_session_resumption: _Optional[bool] = ...) -> None: ...

class UpstreamTlsContext(_message.Message):
    __slots__ = ("common_tls_context", "sni", "auto_host_sni", "auto_sni_san_validation", "allow_renegotiation", "max_session_keys", "enforce_rsa_key_usage")
    COMMON_TLS_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SNI_FIELD_NUMBER: _ClassVar[int]
    AUTO_HOST_SNI_FIELD_NUMBER: _ClassVar[int]
    AUTO_SNI_SAN_VALIDATION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_RENEGOTIATION_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSION_KEYS_FIELD_NUMBER: _ClassVar[int]
    ENFORCE_RSA_KEY_USAGE_FIELD_NUMBER: _ClassVar[int]
    common_tls_context: CommonTlsContext
    sni: str
    auto_host_sni: bool
    auto_sni_san_validation: bool
    allow_renegotiation: bool
    max_session_keys: _wrappers_pb2.UInt32Value
    enforce_rsa_key_usage: _wrappers_pb2.BoolValue
    def __init__(self, common_tls_context: _Optional[_Union[CommonTlsContext, _Mapping]] = ..., sni: _Optional[str] = ..., auto_host_sni: _Optional[bool] = ..., auto_sni_san_validation: _Optional[bool] = ..., allow_renegotiation: _Optional[bool] = ..., max_session_keys: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., enforce_rsa_key_usage: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ...) -> None: ...

class CommonTlsContext(_message.Message):
    __slots__ = ("tls_params", "tls_certificates", "tls_certificate_sds_secret_configs", "tls_certificate_provider_instance", "custom_tls_certificate_selector", "tls_certificate_certificate_provider", "tls_certificate_certificate_provider_instance", "alpn_protocols", "custom_handshaker", "key_log", "validation_context", "validation_context_sds_secret_config", "combined_validation_context", "validation_context_certificate_provider", "validation_context_certificate_provider_instance")
    class CombinedCertificateValidationContext(_message.Message):
        __slots__ = ("default_validation_context", "validation_context_sds_secret_config", "validation_context_certificate_provider", "validation_context_certificate_provider_instance")
        DEFAULT_VALIDATION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
        VALIDATION_CONTEXT_SDS_SECRET_CONFIG_FIELD_NUMBER: _ClassVar[int]
        VALIDATION_CONTEXT_CERTIFICATE_PROVIDER_FIELD_NUMBER: _ClassVar[int]
        VALIDATION_CONTEXT_CERTIFICATE_PROVIDER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
        default_validation_context: CertificateValidationContext
        validation_context_sds_secret_config: SdsSecretConfig
        validation_context_certificate_provider: bytes
        validation_context_certificate_provider_instance: bytes
        def __init__(self, default_validation_context: _Optional[_Union[CertificateValidationContext, _Mapping]] = ..., validation_context_sds_secret_config: _Optional[_Union[SdsSecretConfig, _Mapping]] = ..., validation_context_certificate_provider: _Optional[bytes] = ..., validation_context_certificate_provider_instance: _Optional[bytes] = ...) -> None: ...
    TLS_PARAMS_FIELD_NUMBER: _ClassVar[int]
    TLS_CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    TLS_CERTIFICATE_SDS_SECRET_CONFIGS_FIELD_NUMBER: _ClassVar[int]
    TLS_CERTIFICATE_PROVIDER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_TLS_CERTIFICATE_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    TLS_CERTIFICATE_CERTIFICATE_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    TLS_CERTIFICATE_CERTIFICATE_PROVIDER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ALPN_PROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_HANDSHAKER_FIELD_NUMBER: _ClassVar[int]
    KEY_LOG_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_CONTEXT_SDS_SECRET_CONFIG_FIELD_NUMBER: _ClassVar[int]
    COMBINED_VALIDATION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_CONTEXT_CERTIFICATE_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_CONTEXT_CERTIFICATE_PROVIDER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    tls_params: bytes
    tls_certificates: _containers.RepeatedScalarFieldContainer[bytes]
    tls_certificate_sds_secret_configs: _containers.RepeatedCompositeFieldContainer[SdsSecretConfig]
    tls_certificate_provider_instance: bytes
    custom_tls_certificate_selector: bytes
    tls_certificate_certificate_provider: bytes
    tls_certificate_certificate_provider_instance: bytes
    alpn_protocols: _containers.RepeatedScalarFieldContainer[str]
    custom_handshaker: bytes
    key_log: bytes
    validation_context: CertificateValidationContext
    validation_context_sds_secret_config: SdsSecretConfig
    combined_validation_context: CommonTlsContext.CombinedCertificateValidationContext
    validation_context_certificate_provider: bytes
    validation_context_certificate_provider_instance: bytes
    def __init__(self, tls_params: _Optional[bytes] = ..., tls_certificates: _Optional[_Iterable[bytes]] = ..., tls_certificate_sds_secret_configs: _Optional[_Iterable[_Union[SdsSecretConfig, _Mapping]]] = ..., tls_certificate_provider_instance: _Optional[bytes] = ..., custom_tls_certificate_selector: _Optional[bytes] = ..., tls_certificate_certificate_provider: _Optional[bytes] = ..., tls_certificate_certificate_provider_instance: _Optional[bytes] = ..., alpn_protocols: _Optional[_Iterable[str]] = ..., custom_handshaker: _Optional[bytes] = ..., key_log: _Optional[bytes] = ..., validation_context: _Optional[_Union[CertificateValidationContext, _Mapping]] = ..., validation_context_sds_secret_config: _Optional[_Union[SdsSecretConfig, _Mapping]] = ..., combined_validation_context: _Optional[_Union[CommonTlsContext.CombinedCertificateValidationContext, _Mapping]] = ..., validation_context_certificate_provider: _Optional[bytes] = ..., validation_context_certificate_provider_instance: _Optional[bytes] = ...) -> None: ...

class CertificateValidationContext(_message.Message):
    __slots__ = ("trusted_ca", "ca_certificate_provider_instance", "system_root_certs", "watched_directory", "verify_certificate_spki", "verify_certificate_hash", "match_typed_subject_alt_names", "match_subject_alt_names", "require_signed_certificate_timestamp", "crl", "allow_expired_certificate", "trust_chain_verification", "custom_validator_config", "only_verify_leaf_cert_crl", "max_verify_depth")
    class TrustChainVerification(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        VERIFY_TRUST_CHAIN: _ClassVar[CertificateValidationContext.TrustChainVerification]
        ACCEPT_UNTRUSTED: _ClassVar[CertificateValidationContext.TrustChainVerification]
    VERIFY_TRUST_CHAIN: CertificateValidationContext.TrustChainVerification
    ACCEPT_UNTRUSTED: CertificateValidationContext.TrustChainVerification
    TRUSTED_CA_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PROVIDER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_ROOT_CERTS_FIELD_NUMBER: _ClassVar[int]
    WATCHED_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    VERIFY_CERTIFICATE_SPKI_FIELD_NUMBER: _ClassVar[int]
    VERIFY_CERTIFICATE_HASH_FIELD_NUMBER: _ClassVar[int]
    MATCH_TYPED_SUBJECT_ALT_NAMES_FIELD_NUMBER: _ClassVar[int]
    MATCH_SUBJECT_ALT_NAMES_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_SIGNED_CERTIFICATE_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CRL_FIELD_NUMBER: _ClassVar[int]
    ALLOW_EXPIRED_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    TRUST_CHAIN_VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_VALIDATOR_CONFIG_FIELD_NUMBER: _ClassVar[int]
    ONLY_VERIFY_LEAF_CERT_CRL_FIELD_NUMBER: _ClassVar[int]
    MAX_VERIFY_DEPTH_FIELD_NUMBER: _ClassVar[int]
    trusted_ca: DataSource
    ca_certificate_provider_instance: bytes
    system_root_certs: bytes
    watched_directory: bytes
    verify_certificate_spki: _containers.RepeatedScalarFieldContainer[str]
    verify_certificate_hash: _containers.RepeatedScalarFieldContainer[str]
    match_typed_subject_alt_names: _containers.RepeatedCompositeFieldContainer[SubjectAltNameMatcher]
    match_subject_alt_names: _containers.RepeatedCompositeFieldContainer[StringMatcher]
    require_signed_certificate_timestamp: _wrappers_pb2.BoolValue
    crl: DataSource
    allow_expired_certificate: bool
    trust_chain_verification: CertificateValidationContext.TrustChainVerification
    custom_validator_config: bytes
    only_verify_leaf_cert_crl: bool
    max_verify_depth: _wrappers_pb2.UInt32Value
    def __init__(self, trusted_ca: _Optional[_Union[DataSource, _Mapping]] = ..., ca_certificate_provider_instance: _Optional[bytes] = ..., system_root_certs: _Optional[bytes] = ..., watched_directory: _Optional[bytes] = ..., verify_certificate_spki: _Optional[_Iterable[str]] = ..., verify_certificate_hash: _Optional[_Iterable[str]] = ..., match_typed_subject_alt_names: _Optional[_Iterable[_Union[SubjectAltNameMatcher, _Mapping]]] = ..., match_subject_alt_names: _Optional[_Iterable[_Union[StringMatcher, _Mapping]]] = ..., require_signed_certificate_timestamp: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., crl: _Optional[_Union[DataSource, _Mapping]] = ..., allow_expired_certificate: _Optional[bool] = ..., trust_chain_verification: _Optional[_Union[CertificateValidationContext.TrustChainVerification, str]] = ..., custom_validator_config: _Optional[bytes] = ..., only_verify_leaf_cert_crl: _Optional[bool] = ..., max_verify_depth: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ...) -> None: ...

class SubjectAltNameMatcher(_message.Message):
    __slots__ = ("san_type", "matcher", "oid")
    class SanType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SAN_TYPE_UNSPECIFIED: _ClassVar[SubjectAltNameMatcher.SanType]
        EMAIL: _ClassVar[SubjectAltNameMatcher.SanType]
        DNS: _ClassVar[SubjectAltNameMatcher.SanType]
        URI: _ClassVar[SubjectAltNameMatcher.SanType]
        IP_ADDRESS: _ClassVar[SubjectAltNameMatcher.SanType]
        OTHER_NAME: _ClassVar[SubjectAltNameMatcher.SanType]
    SAN_TYPE_UNSPECIFIED: SubjectAltNameMatcher.SanType
    EMAIL: SubjectAltNameMatcher.SanType
    DNS: SubjectAltNameMatcher.SanType
    URI: SubjectAltNameMatcher.SanType
    IP_ADDRESS: SubjectAltNameMatcher.SanType
    OTHER_NAME: SubjectAltNameMatcher.SanType
    SAN_TYPE_FIELD_NUMBER: _ClassVar[int]
    MATCHER_FIELD_NUMBER: _ClassVar[int]
    OID_FIELD_NUMBER: _ClassVar[int]
    san_type: SubjectAltNameMatcher.SanType
    matcher: StringMatcher
    oid: str
    def __init__(self, san_type: _Optional[_Union[SubjectAltNameMatcher.SanType, str]] = ..., matcher: _Optional[_Union[StringMatcher, _Mapping]] = ..., oid: _Optional[str] = ...) -> None: ...

class SdsSecretConfig(_message.Message):
    __slots__ = ("name", "sds_config")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SDS_CONFIG_FIELD_NUMBER: _ClassVar[int]
    name: str
    sds_config: bytes
    def __init__(self, name: _Optional[str] = ..., sds_config: _Optional[bytes] = ...) -> None: ...

class Secret(_message.Message):
    __slots__ = ("name", "tls_certificate", "session_ticket_keys", "validation_context", "generic_secret")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TLS_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SESSION_TICKET_KEYS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    GENERIC_SECRET_FIELD_NUMBER: _ClassVar[int]
    name: str
    tls_certificate: bytes
    session_ticket_keys: bytes
    validation_context: CertificateValidationContext
    generic_secret: bytes
    def __init__(self, name: _Optional[str] = ..., tls_certificate: _Optional[bytes] = ..., session_ticket_keys: _Optional[bytes] = ..., validation_context: _Optional[_Union[CertificateValidationContext, _Mapping]] = ..., generic_secret: _Optional[bytes] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message", "details")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    details: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., details: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ...) -> None: ...
