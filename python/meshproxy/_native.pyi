"""Type stubs of the Rust engine module (rust/py/src/lib.rs)."""

from collections.abc import Sequence
from typing import final

__all__ = [
    "CONFIG_DEFAULTS",
    "DURATION_PATTERN",
    "FINE_DURATION_PATTERN",
    "MAX_BUSY_POLL_MICROS",
    "BindError",
    "ConfigRejected",
    "Engine",
    "__version__",
    "check_busy_poll",
    "check_config",
    "check_original_destination",
    "check_positive_duration",
    "check_trust_domain",
    "normalize_config",
    "parse_duration",
    "parse_endpoint_address",
    "parse_listen_address",
    "parse_spiffe_id",
    "read_endpoints",
]

__version__: str
CONFIG_DEFAULTS: str
"""The defaults of the fields a config may leave out, by ``section.field`` (durations in
milliseconds), as JSON: the engine's, which the schema takes."""
DURATION_PATTERN: str
"""The text forms of a duration, as the JSON Schema shows them: a number and a unit ms, s, m or h."""
FINE_DURATION_PATTERN: str
"""The text forms of a duration that may be finer than a millisecond: units us, ms, s, m or h."""
MAX_BUSY_POLL_MICROS: int
"""The longest busy-polling window, in microseconds."""

class ConfigRejected(ValueError):
    """The engine refused a config. ``args[0]`` is the message, ``args[1]`` the
    ``(path, message)`` problems."""

class BindError(OSError):
    """A listener could not bind its address."""

def check_config(config_json: str) -> list[tuple[str, str]]:
    """The engine's own check of an engine document: ``(path, message)`` problems, empty when
    the engine would run it."""

def normalize_config(config_json: str) -> str:
    """The document as the engine reads it, written back in canonical form with every default
    filled in: two documents mean the same to the engine iff this gives the same JSON."""

def read_endpoints(items: object) -> tuple[tuple[str, ...], tuple[int, ...], str] | None:
    """A list of endpoint mappings the config schema certainly accepts (IPv4 or DNS-name
    addresses with a port, integer weights, no address twice), read in one call as
    ``(addresses, weights, engine-document JSON)``; None leaves the list to the schema."""

def parse_listen_address(text: str) -> tuple[str, int]:
    """A listener's ``IP:PORT`` as ``(ip, port)``, the IP in canonical form. Raises ValueError
    with the problem, for the caller to prefix with the address quoted."""

def parse_endpoint_address(text: str) -> tuple[str, int]:
    """An endpoint's ``HOST:PORT`` as ``(host, port)``, the host as two spellings of one
    address compare (an IP in canonical form, IPv6 in brackets; a DNS name lowercased without
    its trailing dot). Raises ValueError with the problem, as ``parse_listen_address``."""

def parse_duration(value: object, fine: bool = False) -> float:
    """A duration's length in seconds, from text with a unit (``250ms``; with ``fine`` also
    ``300us``) or a number of seconds. Raises ValueError with the problem (what would be
    valid, or that it must not be negative), for the caller to prefix with the value quoted."""

def check_busy_poll(micros: int) -> int:
    """``busy_poll`` in microseconds, returned when within the limit; raises ValueError with
    the problem otherwise."""

def check_positive_duration(field: str, micros: int) -> int:
    """A duration in microseconds that must not be zero, returned when it is not; raises
    ValueError naming ``field`` otherwise."""

def parse_spiffe_id(text: str) -> tuple[str, str]:
    """A SPIFFE ID as ``(trust_domain, path)``; raises ValueError with the problem, for the
    caller to prefix with the ID quoted."""

def check_original_destination(text: str) -> None:
    """Returns when ``text`` is one entry of a route's ``match.original_destination`` (IP:PORT,
    an IP, a network, or *:PORT); raises ValueError with the problem otherwise."""

def check_trust_domain(name: str) -> None:
    """Returns when ``name`` is a valid trust domain given alone; raises ValueError with the
    problem otherwise."""

# A pyclass without `subclass`: Python code cannot subclass it.
@final
class Engine:
    """A running data path: a tokio runtime, bound listeners, upstream pools."""

    def __new__(cls, config_json: str, workers: int | None = None, drain_seconds: float = 10.0) -> Engine:
        """``drain_seconds``: how long a listener's connections have once it stops accepting
        (removed by a reload, closed by a drain) before the TCP connections, tunnels and requests
        still open are closed."""
    def apply(self, config_json: str) -> int:
        """Compiles and swaps in a new config; returns its version. On error nothing changes."""
    def set_endpoints(self, cluster: str, endpoints: Sequence[tuple[str, int]]) -> None:
        """Replaces one running cluster's endpoints with ``endpoints`` (``(address, weight)``
        pairs), recompiling nothing else; the config version stays. Raises ConfigRejected
        with the field paths compiling would name (``clusters[2].endpoints[5].address``), and
        changes nothing, when the list is refused."""
    def reload_identity(self) -> None:
        """Reads the identity's PEM files again and uses them for new handshakes; raises
        ConfigRejected (the current credentials stay) when the new set fails its checks."""
    def set_identity(self, cert_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> None:
        """Uses credentials given as PEM bytes for new handshakes; raises ConfigRejected (the
        current credentials stay) when they fail their checks."""
    def listeners(self) -> list[tuple[str, str]]:
        """Bound listeners as ``(name, "ip:port")``."""
    def stats_json(self) -> str:
        """Counters as a JSON document."""
    def clusters_json(self) -> str:
        """The running config's clusters with their endpoints' live state, as a JSON document."""
    def drain_inbound(self) -> None:
        """Starts draining: inbound listeners stop accepting (closed when this returns) and
        their open connections finish, what is still open after the drain timeout closed;
        outbound listeners keep serving. Idempotent."""
    @property
    def draining(self) -> bool:
        """Whether inbound listeners have been closed by a drain."""
    @property
    def workers(self) -> int: ...
    @property
    def version(self) -> int: ...
    def drain_spans(
        self, max_spans: int, wait_seconds: float
    ) -> list[tuple[bytes, bytes, bytes, str, int, int, list[tuple[str, str | int]], str | None]]:
        """Up to ``max_spans`` finished, sampled spans: returns once it has that many, or after
        ``wait_seconds`` with what it has (maybe none), or at once after ``wake_span_drain``.
        Each is ``(trace_id, span_id, parent_span_id, name, start_ns, end_ns, attributes,
        error_type)``: ``parent_span_id`` is empty for a span that started its trace,
        ``error_type`` None unless the span failed (the proxy's error reason, or the 5xx status)."""
    def wake_span_drain(self) -> None:
        """Ends a ``drain_spans`` in progress, if any, at once."""
    def shutdown(self, drain_seconds: float = 0.0) -> None:
        """Stops within ``drain_seconds``: inbound listeners first, while outbound ones keep
        serving, until inbound connections finish; then the rest, until theirs finish."""
