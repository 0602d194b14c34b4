"""`make demo`: a small mesh on loopback, as the README shows it.

Three demo upstreams play the `orders` service — v1 on 127.0.0.1:8081 and :8082 (weight 2), v2 on
127.0.0.1:8083 — behind meshproxy running examples/orders.yaml: a 90/10 split between v1 and v2,
and a header route sending `x-channel: beta` to v2. The demo sends traffic through the proxy,
prints the split it observed, and keeps everything running until Ctrl-C.
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import meshproxy

CONFIG = Path(__file__).with_name("orders.yaml")
UPSTREAMS = {"127.0.0.1:8081": "v1", "127.0.0.1:8082": "v1", "127.0.0.1:8083": "v2"}
REQUESTS = 2000


def serve_upstream(address: str, version: str) -> ThreadingHTTPServer:
    """One instance of the demo `orders` service: answers who it is."""
    body = json.dumps({"service": "orders", "version": version, "instance": address}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in two writes; without this, Nagle holds the second back
        # until the proxy's delayed ACK (40 ms a request).
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    host, port = address.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def send(proxy_address: str, count: int, headers: dict[str, str]) -> Counter[tuple[str, str]]:
    """Sends `count` requests for the `orders` service on one keep-alive connection."""
    host, port = proxy_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    seen: Counter[tuple[str, str]] = Counter()
    for _ in range(count):
        connection.request("GET", "/orders", headers={"Host": "orders", **headers})
        answer = json.loads(connection.getresponse().read())
        seen[(answer["version"], answer["instance"])] += 1
    connection.close()
    return seen


def main() -> int:
    try:
        servers = [serve_upstream(address, version) for address, version in UPSTREAMS.items()]
    except OSError as error:
        print(f"demo: cannot start the demo upstreams on 127.0.0.1:8081-8083: {error}", file=sys.stderr)
        return 1
    try:
        proxy = meshproxy.Proxy(CONFIG).start()
    except OSError as error:
        print(f"demo: cannot start meshproxy: {error}", file=sys.stderr)
        return 1
    outbound = proxy.address("outbound")
    print(f"meshproxy {meshproxy.__version__} running {CONFIG.name}: listener outbound on {outbound}")

    seen = send(outbound, REQUESTS, {})
    by_version = Counter[str]()
    for (version, _), n in seen.items():
        by_version[version] += n
    print(f"\nsent {REQUESTS} requests for Host: orders (route: split orders-v1 90 / orders-v2 10)")
    for version in ("v1", "v2"):
        print(f"  {version}: {by_version[version]:5d}  ({100 * by_version[version] / REQUESTS:.1f}%)")
    print("  within v1, by endpoint (weights 1 and 2):")
    for (version, instance), n in sorted(seen.items()):
        if version == "v1":
            print(f"    {instance}: {n:5d}  ({100 * n / max(by_version['v1'], 1):.1f}% of v1)")

    beta = send(outbound, 100, {"x-channel": "beta"})
    print(f"\nsent 100 requests with x-channel: beta (route: header match → orders-v2): "
          + ", ".join(f"{v} {n}" for (v, _), n in sorted(beta.items())))

    stats = proxy.stats()
    print(f"\nadmin: http://{proxy.admin_address}/  (/ready, /config, /stats)")
    print(f"engine counted {stats['listeners']['outbound']['requests_total']} requests on 'outbound'")
    print(f"try:   curl -H 'Host: orders' http://{outbound}/")
    print(f"       curl --http2-prior-knowledge -H 'x-channel: beta' http://{outbound}/ -H 'Host: orders'")
    print("\nrunning until Ctrl-C")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the drain short
    print("\nstopping")
    proxy.stop(drain_timeout=2)
    for server in servers:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
