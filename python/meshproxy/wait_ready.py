"""``meshproxy wait-ready``: block until a sidecar's admin API answers ``GET /ready`` with 200,
for an app's entrypoint or an init step that must not send traffic before its sidecar can take
it. Polls; uses only the standard library, so it starts fast.
"""

from __future__ import annotations

import http.client
import time

# Between polls: a sidecar is ready within a second of starting, and a probe costs little.
_POLL_INTERVAL = 0.05
# One probe's connect-and-answer time, at most: the admin server answers /ready at once.
_PROBE_TIMEOUT = 1.0


def wait_ready(admin: str, timeout: float) -> str | None:
    """Polls ``http://ADMIN/ready`` until it answers 200 (returns None) or ``timeout`` seconds
    pass (returns what the last probe found, for the message)."""
    host, _, port = admin.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        last = _probe(host, int(port), max(min(_PROBE_TIMEOUT, remaining), 0.01))
        if last is None:
            return None
        if time.monotonic() + _POLL_INTERVAL >= deadline:
            return last
        time.sleep(_POLL_INTERVAL)


def _probe(host: str, port: int, timeout: float) -> str | None:
    """None when ready; else what was found (the answer's status, or why there was none)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/ready")
        response = connection.getresponse()
        body = response.read().decode(errors="replace").strip()
    except (OSError, http.client.HTTPException) as error:
        return _reason(error)
    finally:
        connection.close()
    if response.status == 200:
        return None
    return f"{response.status} {body}".strip()


def _reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "no answer"
    return str(error) or type(error).__name__
