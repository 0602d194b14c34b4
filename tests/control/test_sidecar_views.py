"""`meshctl endpoints`' reading of sidecars: each sidecar's /clusters, filtered to the clusters
of calls to one service; a sidecar that cannot be read is a row that says why."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import closed_port_address
from meshcontrol.sidecar_views import endpoints

CLUSTERS = {
    "outbound_orders.shop": {"endpoints": [{"address": "10.0.0.1:15006", "health": "healthy", "weight": 1,
                                            "in_flight": 2, "latency_ewma_ms": 1.5}]},
    "outbound_orders.shop_v1": {"endpoints": [{"address": "10.0.0.1:15006", "health": "ejected", "weight": 1,
                                               "in_flight": 0, "latency_ewma_ms": 0.0}]},
    "outbound_ordersx.shop": {"endpoints": [{"address": "10.0.0.9:15006", "health": "healthy"}]},
    "inbound_app": {"endpoints": [{"address": "127.0.0.1:8080", "health": "unchecked"}]},
}


class _Admin(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(CLUSTERS).encode()
        self.send_response(200 if self.path == "/clusters" else 404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def admin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Admin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def instance(admin: str, **fields: object) -> dict[str, object]:
    return {"service": "frontend", "namespace": "shop", "version": "v1", "address": "10.0.0.5:15006",
            "admin": admin, "kind": "meshproxy", "connected": True, **fields}


def test_the_clusters_of_calls_to_one_service_and_only_those(admin: str) -> None:
    rows = endpoints([instance(admin)], "orders", "shop")
    assert [(r["cluster"], r["endpoint"], r["health"]) for r in rows] == [
        ("outbound_orders.shop", "10.0.0.1:15006", "healthy"),
        ("outbound_orders.shop_v1", "10.0.0.1:15006", "ejected"),
    ]
    assert len(endpoints([instance(admin)], None, "default")) == len(CLUSTERS)


def test_a_sidecar_that_cannot_be_read_says_why_and_envoys_and_gone_ones_are_left_out(admin: str) -> None:
    rows = endpoints([instance(closed_port_address()), instance(admin, kind="envoy"), instance(admin, connected=False)],
                     "orders", "shop")
    assert len(rows) == 1 and "could not be read" in rows[0]["error"], rows
