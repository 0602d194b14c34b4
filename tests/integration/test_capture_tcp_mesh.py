"""Opaque TCP through transparent capture and the control plane, for real: `meshctl serve` in
namespace A, a sidecar joined to it in each namespace (as `nobody`, run with --capture), Debian's
redis-server in B registered as a `protocol: tcp` Service with an AccessPolicy allowing the
client only, and an unmodified redis-cli in A that dials B's IP and port 6379. A's capture
listener sends that destination to the cache's TCP cluster over mTLS (a TCP filter chain), B's
capture hands it to B's inbound TCP listener, which authorizes the client's identity. A
server-first peer outside the mesh (a banner server on another port of B, which B does not
capture) is reached through A's TCP passthrough: the client sends nothing until it has read the
banner, so the capture listener's protocol detection gives up on it after `detect_timeout`.
Needs root; skipped otherwise.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from netns import A_IP, B_IP, Namespaces, Started, needs_root, two_namespaces, until
from test_capture_mesh import CAPTURE_PORT, INBOUND_PORT, Mesh, serving

pytestmark = [*needs_root, pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")]

REDIS_PORT, BANNER_PORT = 6379, 9091
ADMIN = "127.0.0.1:15000"
MESH = """\
kind: Service
name: client
calls: [cache]
---
kind: Service
name: cache
protocol: tcp
---
kind: AccessPolicy
service: cache
rules: [{name: client-only, action: allow, services: [client]}]
"""
# Speaks first (as SMTP or MySQL do), then echoes one line.
BANNER_APP = """\
import socket, sys
server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", file=sys.stderr, flush=True)
while True:
    connection, _ = server.accept()
    with connection:
        connection.sendall(b"220 banner\\r\\n")
        connection.sendall(connection.recv(100))
"""
# What runs in A as the app: the banner, then the echo of what it sends.
BANNER_CLIENT = f"""\
import socket
with socket.create_connection(("{B_IP}", {BANNER_PORT}), timeout=10) as s:
    banner = s.recv(100)
    s.sendall(b"hello\\r\\n")
    print((banner + s.recv(100)).decode(), end="")
"""


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    with two_namespaces() as ns:
        with serving(Mesh(ns), MESH) as made:
            made.started.append(Started(["ip", "netns", "exec", ns.b, "redis-server", "--port", str(REDIS_PORT),
                                         "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "",
                                         "--appendonly", "no", "--logfile", "/dev/stderr"], "Ready to accept"))
            until(lambda: redis_cli(ns, ns.b, "PING", check=False) == "PONG", what="redis-server")
            script = ns.files / "banner.py"
            script.write_text(BANNER_APP)
            made.started.append(Started(["ip", "netns", "exec", ns.b, sys.executable, str(script), str(BANNER_PORT)],
                                        "ready").wait_ready())
            made.sidecar("cache", ns.b, B_IP, f"127.0.0.1:{REDIS_PORT}")
            made.sidecar("client", ns.a, A_IP, "127.0.0.1:9000")
            yield made


def redis_cli(ns: Namespaces, namespace: str, *command: str, check: bool = True) -> str:
    done = ns.run(namespace, "redis-cli", "-h", B_IP, "-p", str(REDIS_PORT), *command, check=check)
    return done.stdout.strip()


def stats(ns: Namespaces, namespace: str) -> dict[str, Any]:
    return ns.json(namespace, f"http://{ADMIN}/stats")


def test_a_captured_tcp_connection_reaches_a_tcp_service_over_mtls_or_passes_through(mesh: Mesh) -> None:
    ns = mesh.ns
    # The client's sidecar has the capture listener's TCP route to B's redis, from the control plane.
    until(lambda: f"{B_IP}:{REDIS_PORT}" in ns.get(ns.a, f"http://{ADMIN}/config").stdout, what="the TCP route")
    ns.capture(ns.a, "--uid", "nobody", "--outbound-port", str(CAPTURE_PORT))
    ns.capture(ns.b, "--uid", "nobody", "--inbound-port", str(INBOUND_PORT), "--app-port", str(REDIS_PORT))

    assert redis_cli(ns, ns.a, "SET", "cart:1", "3 items") == "OK"
    assert redis_cli(ns, ns.a, "GET", "cart:1") == "3 items"
    client = stats(ns, ns.a)
    assert client["clusters"]["outbound_cache.default"]["tcp_connections_total"] == 2
    assert client["listeners"]["outbound_capture"]["tcp_bytes_sent_total"] > 0
    # The cache's sidecar took them over mTLS, from the client's identity, which its policy allows.
    cache = stats(ns, ns.b)
    assert cache["listeners"]["inbound"]["tcp_bytes_received_total"] > 0
    assert cache["clusters"]["inbound_app"]["tcp_connections_total"] == 2
    assert cache["errors"]["denied"] == 0
    matched = {rule: counters["matches"] for policy in cache["authorization"]["inbound"].values()
               for rule, counters in policy["rules"].items()}
    assert matched == {"client-only": 2}, cache["authorization"]

    # Out of the mesh: a server-first peer, through the TCP passthrough to where it was going.
    done = ns.run(ns.a, sys.executable, "-c", BANNER_CLIENT)
    assert done.stdout.splitlines() == ["220 banner", "hello"]
    assert stats(ns, ns.a)["clusters"]["passthrough_tcp"]["tcp_connections_total"] == 1

    # Without A's capture the connection goes out in plain text; B's capture hands it to the
    # inbound listener, whose mTLS is strict: no answer.
    ns.capture(ns.a, "--remove")
    assert redis_cli(ns, ns.a, "PING", check=False) != "PONG"

