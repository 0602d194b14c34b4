"""Opaque TCP between two sidecars over mutual TLS: redis-py → A's ``tcp`` listener → mTLS (A
checks B's SPIFFE ID) → B's strict inbound ``tcp`` listener, which authorizes the caller by its
SPIFFE ID → Debian's ``redis-server``. A caller the policy does not allow has its connection
closed, counted and logged."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from conftest import ProxyProcess, wait_until
from tcp_peers import connect, read_to_end, redis_server
from pki import TRUST_DOMAIN
from test_mtls import FRONTEND, ORDERS, PAYMENTS, Sidecars

Run = Callable[..., ProxyProcess]


@pytest.fixture(scope="module")
def redis_address() -> Iterator[str]:
    with redis_server() as address:
        yield address


def start(sidecars: Sidecars, name: str, spiffe_id: str, **sections: Any) -> ProxyProcess:
    """A sidecar as ``Sidecars.start`` makes it, with an access log beside its config."""
    sidecars.credentials(name, spiffe_id)
    config = {
        "admin": {"address": "127.0.0.1:0"},
        "access_log": {"path": "access.jsonl"},
        "identity": {"trust_domain": TRUST_DOMAIN, "cert": "certs/cert.pem", "key": "certs/key.pem",
                     "bundle": "certs/bundle.pem"},
        **sections,
    }
    path = sidecars.tmp_path / name / "meshproxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return sidecars._run(path)


def inbound(sidecars: Sidecars, redis_address: str, allowed: list[str]) -> ProxyProcess:
    """The redis side's sidecar: a strict mTLS tcp listener allowing ``allowed`` callers."""
    policy = {"name": "callers", "rules": [{"name": "frontend", "action": "allow", "identities": allowed}]}
    listener = {"name": "inbound", "address": "127.0.0.1:0", "direction": "inbound", "protocol": "tcp",
                "tls": "strict", "authorization": [policy], "routes": [{"cluster": "redis"}]}
    cluster = {"name": "redis", "protocol": "tcp", "endpoints": [{"address": redis_address}]}
    return start(sidecars, "orders", ORDERS, listeners=[listener], clusters=[cluster])


def outbound(sidecars: Sidecars, name: str, spiffe_id: str, peer: ProxyProcess, tmp_path: Path) -> ProxyProcess:
    listener = {"name": "redis", "address": "127.0.0.1:0", "protocol": "tcp", "routes": [{"cluster": "orders-redis"}]}
    cluster = {"name": "orders-redis", "protocol": "tcp", "tls": {"mode": "mesh", "identities": [ORDERS]},
               "endpoints": [{"address": peer.address("inbound")}]}
    return start(sidecars, name, spiffe_id, listeners=[listener], clusters=[cluster])


def client(proxy: ProxyProcess) -> redis.Redis:
    host, port = proxy.address("redis").rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), socket_timeout=10, single_connection_client=True)


def stats(proxy: ProxyProcess) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"http://{proxy.admin}/stats", timeout=10).json()
    return document


@pytest.fixture
def sidecars(tmp_path: Path, meshproxy_run: Run) -> Sidecars:
    return Sidecars(tmp_path, meshproxy_run)


def test_redis_over_an_mtls_hop_between_sidecars(redis_address: str, sidecars: Sidecars, tmp_path: Path) -> None:
    orders = inbound(sidecars, redis_address, [FRONTEND])
    frontend = outbound(sidecars, "frontend", FRONTEND, orders, tmp_path)
    with client(frontend) as r:
        assert r.set("order:1", "paid")
        assert r.get("order:1") == b"paid"
        big = b"x" * 1_000_000
        assert r.set("blob", big) and r.get("blob") == big
    assert stats(frontend)["tls"]["outbound"]["handshakes_total"] == 1
    assert stats(orders)["tls"]["inbound"]["handshakes_total"] == 1
    assert stats(orders)["authorization"]["inbound"]["callers"]["allowed"] == 1
    assert stats(orders)["clusters"]["redis"]["tcp_connections_total"] == 1


def test_a_caller_the_policy_does_not_allow_is_closed_counted_and_logged(
        redis_address: str, sidecars: Sidecars, tmp_path: Path) -> None:
    orders = inbound(sidecars, redis_address, [FRONTEND])
    payments = outbound(sidecars, "payments", PAYMENTS, orders, tmp_path)
    # A raw PING: redis-py would try again on its own.
    with connect(payments.address("redis")) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert read_to_end(sock) == b"", "closed without an answer"
    wait_until(lambda: stats(orders)["errors"]["denied"] == 1, what="the denial to be counted")
    document = stats(orders)
    assert document["authorization"]["inbound"]["callers"]["denied"] == 1
    assert document["clusters"]["redis"]["tcp_connections_total"] == 0
    log = tmp_path / "orders" / "access.jsonl"
    wait_until(lambda: log.exists() and bool(log.read_text()), what="the access log line")
    [line] = [json.loads(line) for line in log.read_text().splitlines()]
    assert (line["protocol"], line["error"], line["peer_identity"], line["upstream_address"]) == ("TCP", "denied", PAYMENTS, None)
