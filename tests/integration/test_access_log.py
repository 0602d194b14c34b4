"""Access logs written by ``meshproxy run`` (and by an embedded proxy to stdout): one JSON line
per request with what happened to it, read back from the file the sidecar writes, and checked
against what the client and the upstream saw."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import meshproxy
import pytest
import yaml
from conftest import ProxyProcess, Upstream, body_json, metric_value, one_route_config, wait_until
from pki import issue, make_ca

Upstreams = Callable[[str], Upstream]
TRUST_DOMAIN = "mesh.local"
FRONTEND = "spiffe://mesh.local/ns/shop/sa/frontend"
ORDERS = "spiffe://mesh.local/ns/shop/sa/orders"


def config(upstream: Upstream, access_log: dict[str, Any]) -> dict[str, Any]:
    """Requests for host `orders` go to the upstream; any other host has no route."""
    return one_route_config(
        {"name": "app", "endpoints": [{"address": upstream.address}]},
        routes=[{"name": "orders", "match": {"host": "orders"}, "cluster": "app"}],
        admin={"address": "127.0.0.1:0"},
        access_log=access_log,
    )


def lines(path: Path) -> list[dict[str, Any]]:
    """The complete lines of the log so far (a line being written is left for the next read)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def test_each_request_is_one_line_with_what_happened_to_it(
        meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, tmp_path: Path) -> None:
    upstream = upstreams("v1")
    # Relative: the file goes beside the config file, which meshproxy_run writes to tmp_path.
    proxy = meshproxy_run(config(upstream, {"path": "access.jsonl"}))
    log = tmp_path / "access.jsonl"
    base = f"http://{proxy.address('outbound')}"
    before = datetime.now(UTC) - timedelta(seconds=1)
    with httpx.Client(timeout=10, headers={"host": "orders"}) as client:
        got = client.get(f"{base}/anything/1?x=y")
        posted = client.post(f"{base}/upload", content=b"z" * 1000, headers={"x-request-id": "client-chosen-id"})
        big = client.get(f"{base}/bytes/70000")
        unrouted = client.get(f"{base}/anything", headers={"host": "elsewhere"})
    assert [r.status_code for r in (got, posted, big, unrouted)] == [200, 200, 200, 404]


    def written() -> dict[str, int]:
        counts: dict[str, int] = httpx.get(f"http://{proxy.admin}/stats", timeout=10).json()["access_log"]
        return counts

    # Counted once written: then the file holds them all.
    wait_until(lambda: written()["lines"] == 4, what="4 access log lines")
    by_path = {line["path"]: line for line in lines(log)}
    assert set(by_path) == {"/anything/1?x=y", "/upload", "/bytes/70000", "/anything"}
    first = by_path["/anything/1?x=y"]
    assert {key: first[key] for key in (
        "listener", "direction", "protocol", "method", "authority", "status", "route", "cluster", "upstream_address",
        "bytes_in", "bytes_out", "request_id", "client_address", "peer_identity", "error", "grpc_status",
    )} == {
        "listener": "outbound", "direction": "outbound", "protocol": "HTTP/1.1", "method": "GET",
        "authority": "orders", "status": 200, "route": "orders", "cluster": "app",
        "upstream_address": upstream.address, "bytes_in": 0, "bytes_out": len(got.content),
        "request_id": body_json(got)["headers"]["x-request-id"], "client_address": "127.0.0.1",
        "peer_identity": None, "error": None, "grpc_status": None,
    }
    assert before <= datetime.fromisoformat(first["time"]) <= datetime.now(UTC)
    assert first["duration_ms"] >= 0
    assert first["trace_id"] is None and first["span_id"] is None, "no trace came in and tracing is off"
    upload = by_path["/upload"]
    assert (upload["method"], upload["bytes_in"], upload["bytes_out"]) == ("POST", 1000, len(posted.content))
    assert upload["request_id"] == "client-chosen-id" == body_json(posted)["headers"]["x-request-id"]
    assert by_path["/bytes/70000"]["bytes_out"] == 70000
    assert {key: by_path["/anything"][key] for key in ("status", "route", "cluster", "upstream_address", "error")} == {
        "status": 404, "route": None, "cluster": None, "upstream_address": None, "error": "no_route"}

    assert written() == {"lines": 4, "dropped": 0}
    assert proxy.admin is not None
    assert (metric_value(proxy.admin, "meshproxy_access_log_lines_total"),
            metric_value(proxy.admin, "meshproxy_access_log_lines_dropped_total")) == (4, 0)


def test_the_log_names_the_callers_trace_when_tracing_is_off(
        meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, tmp_path: Path) -> None:
    proxy = meshproxy_run(config(upstreams("v1"), {"path": "access.jsonl", "fields": ["trace_id", "span_id"]}))
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = httpx.get(f"http://{proxy.address('outbound')}/anything", timeout=10,
                         headers={"host": "orders", "traceparent": traceparent})
    assert body_json(response)["headers"]["traceparent"] == traceparent, "passed on untouched"
    wait_until(lambda: len(lines(tmp_path / "access.jsonl")) == 1, what="the access log line")
    assert lines(tmp_path / "access.jsonl") == [{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": None}]


def test_a_field_subset_writes_just_those_fields(
        meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, tmp_path: Path) -> None:
    proxy = meshproxy_run(config(upstreams("v1"), {"path": str(tmp_path / "subset.jsonl"),
                                                    "fields": ["status", "path", "method"]}))
    for path in ("/anything/a", "/status/418"):
        httpx.get(f"http://{proxy.address('outbound')}{path}", headers={"host": "orders"}, timeout=10)
    wait_until(lambda: len(lines(tmp_path / "subset.jsonl")) == 2, what="2 access log lines")
    written = (tmp_path / "subset.jsonl").read_text().splitlines()
    # In the engine's field order, whatever order the config listed them in.
    assert sorted(written) == [
        '{"method":"GET","path":"/anything/a","status":200}',
        '{"method":"GET","path":"/status/418","status":418}',
    ]


def test_sample_0_writes_nothing(meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams,
                                 tmp_path: Path) -> None:
    proxy = meshproxy_run(config(upstreams("v1"), {"path": "access.jsonl", "sample": 0.0}))
    for _ in range(20):
        response = httpx.get(f"http://{proxy.address('outbound')}/anything", headers={"host": "orders"}, timeout=10)
        assert response.status_code == 200
    # A stopped sidecar has written every line it was going to.
    assert proxy.stop() == 0
    assert (tmp_path / "access.jsonl").read_text() == ""


def test_a_stopped_sidecar_has_written_every_line(meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams,
                                                  tmp_path: Path) -> None:
    proxy = meshproxy_run(config(upstreams("v1"), {"path": "access.jsonl", "fields": ["path"]}))
    with httpx.Client(timeout=10, headers={"host": "orders"}) as client:
        for n in range(50):
            assert client.get(f"http://{proxy.address('outbound')}/anything/{n}").status_code == 200
    assert proxy.stop() == 0
    assert sorted(line["path"] for line in lines(tmp_path / "access.jsonl")) == sorted(
        f"/anything/{n}" for n in range(50))


def test_an_mtls_request_logs_the_peers_identity(
        meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, tmp_path: Path) -> None:
    """frontend's sidecar → mTLS → orders' sidecar: the inbound line names frontend's SPIFFE ID."""
    ca = make_ca(tmp_path, TRUST_DOMAIN, timedelta(days=7))

    def sidecar(name: str, spiffe_id: str, **sections: Any) -> Path:
        issue(ca, spiffe_id, tmp_path / name / "certs")
        document = {
            "identity": {"trust_domain": TRUST_DOMAIN, "cert": "certs/cert.pem", "key": "certs/key.pem",
                         "bundle": "certs/bundle.pem"},
            **sections,
        }
        path = tmp_path / name / "meshproxy.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    orders = meshproxy_run(sidecar(
        "orders", ORDERS,
        access_log={"path": "access.jsonl", "fields": ["direction", "status", "peer_identity"]},
        listeners=[{"name": "inbound", "address": "127.0.0.1:0", "direction": "inbound", "tls": "strict",
                    "routes": [{"cluster": "app"}]}],
        clusters=[{"name": "app", "endpoints": [{"address": upstreams("v1").address}]}],
    ))
    frontend = meshproxy_run(sidecar(
        "frontend", FRONTEND,
        listeners=[{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "orders"}]}],
        clusters=[{"name": "orders", "protocol": "http2", "tls": {"mode": "mesh", "identities": [ORDERS]},
                   "endpoints": [{"address": orders.address("inbound")}]}],
    ))
    response = httpx.get(f"http://{frontend.address('outbound')}/anything", headers={"host": "orders"}, timeout=10)
    assert body_json(response)["headers"]["x-meshproxy-peer-identity"] == FRONTEND
    log = tmp_path / "orders" / "access.jsonl"
    wait_until(lambda: len(lines(log)) == 1, what="the inbound access log line")
    assert lines(log) == [{"direction": "inbound", "status": 200, "peer_identity": FRONTEND}]


def test_a_reload_moves_the_log_and_changes_its_fields(upstreams: Upstreams, tmp_path: Path) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    document = config(upstreams("v1"), {"path": str(first), "fields": ["path"]})
    with meshproxy.Proxy(document) as proxy:
        url = f"http://{proxy.address('outbound')}"
        httpx.get(f"{url}/anything/before", headers={"host": "orders"}, timeout=10)
        proxy.reload({**document, "access_log": {"path": str(second), "fields": ["status"]}})
        httpx.get(f"{url}/anything/after", headers={"host": "orders"}, timeout=10)
        wait_until(lambda: len(lines(second)) == 1, what="the line in the new log")
    assert lines(first) == [{"path": "/anything/before"}]
    assert lines(second) == [{"status": 200}]


def test_an_embedded_proxy_logs_to_stdout(upstreams: Upstreams, capfd: pytest.CaptureFixture[str]) -> None:
    document = config(upstreams("v1"), {"fields": ["status", "path"]})
    with meshproxy.Proxy(document) as proxy:
        for path in ("/anything/1", "/anything/2"):
            httpx.get(f"http://{proxy.address('outbound')}{path}", headers={"host": "orders"}, timeout=10)
    # Stopped and dropped: the engine's writer has written its last line.
    out = capfd.readouterr().out
    assert sorted(out.splitlines()) == ['{"path":"/anything/1","status":200}', '{"path":"/anything/2","status":200}']
