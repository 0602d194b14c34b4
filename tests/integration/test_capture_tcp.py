"""A `protocol: tcp` capture listener from a static config, in network namespaces: its routes
choose by each connection's original destination (first match wins, the last without a match
takes the rest), with no protocol detection. redis-cli in A dials B on a port nothing listens
on, which a route sends to redis-server's real port; a server-first peer of B is reached
through the last route's passthrough cluster (`protocol: tcp`, `original_destination: true`);
a destination where nothing listens is a connect failure of the passthrough. Needs root.
The same through the control plane (an `auto` capture listener): test_capture_tcp_mesh.py.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from netns import B_IP, NOBODY, Namespaces, Started, as_nobody, needs_root, two_namespaces, until
from test_capture_tcp_mesh import BANNER_APP, BANNER_CLIENT, BANNER_PORT, REDIS_PORT

pytestmark = [*needs_root, pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")]

CAPTURE_PORT, ROUTED_PORT = 15002, 7000
ADMIN = "127.0.0.1:15000"
CONFIG = {
    "admin": {"address": ADMIN},
    "listeners": [{
        "name": "capture-tcp", "address": f"127.0.0.1:{CAPTURE_PORT}", "protocol": "tcp", "original_destination": True,
        "routes": [
            {"match": {"original_destination": [f"{B_IP}:{ROUTED_PORT}"]}, "cluster": "redis"},
            {"cluster": "passthrough_tcp"},
        ],
    }],
    "clusters": [
        {"name": "redis", "protocol": "tcp", "endpoints": [{"address": f"{B_IP}:{REDIS_PORT}"}]},
        {"name": "passthrough_tcp", "protocol": "tcp", "original_destination": True},
    ],
}


@pytest.fixture
def captured() -> Iterator[Namespaces]:
    with two_namespaces() as ns:
        started: list[Started] = []
        try:
            started.append(Started(["ip", "netns", "exec", ns.b, "redis-server", "--port", str(REDIS_PORT), "--bind",
                                    "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"], "Ready"))
            script = ns.files / "banner.py"
            script.write_text(BANNER_APP)
            started.append(Started(["ip", "netns", "exec", ns.b, sys.executable, str(script), str(BANNER_PORT)],
                                   "ready").wait_ready())
            path = ns.files / "sidecar.yaml"
            path.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
            path.chmod(0o644)
            started.append(Started(["ip", "netns", "exec", ns.a, *as_nobody(), "-m", "meshproxy", "run", "--config",
                                    str(path), "--no-watch"], "ready:").wait_ready())
            until(lambda: ns.run(ns.b, "redis-cli", "PING", check=False).stdout.strip() == "PONG", what="redis-server")
            ns.capture(ns.a, "--uid", str(NOBODY), "--outbound-port", str(CAPTURE_PORT))
            yield ns
        finally:
            ns.capture(ns.a, "--remove")
            for process in reversed(started):
                process.stop()


def stats(ns: Namespaces) -> dict[str, Any]:
    return ns.json(ns.a, f"http://{ADMIN}/stats")


def test_a_tcp_capture_listener_routes_by_original_destination_then_passes_through(captured: Namespaces) -> None:
    ns = captured
    # Nothing listens on B's port 7000: the route for that destination sends it to redis.
    assert ns.run(ns.a, "redis-cli", "-h", B_IP, "-p", str(ROUTED_PORT), "PING").stdout.strip() == "PONG"
    # The rest: where it was going, a server-first peer included (no detection to wait for).
    assert ns.run(ns.a, sys.executable, "-c", BANNER_CLIENT).stdout.splitlines() == ["220 banner", "hello"]
    ns.run(ns.a, "redis-cli", "-h", B_IP, "-p", "9999", "PING", check=False)
    clusters = stats(ns)["clusters"]
    assert clusters["redis"]["tcp_connections_total"] == 1
    assert clusters["passthrough_tcp"]["tcp_connections_total"] == 1
    assert clusters["passthrough_tcp"]["connect_failures_total"] >= 1
