"""Routes the proxy answers itself (`redirect`, `direct_response`), never reaching a cluster
but counted and access-logged as other requests are; and the rewrites of what goes upstream
(`regex_rewrite`, `host_rewrite`), seen at the upstream."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Upstream, body_json, wait_until
from meshproxy import Proxy
from recording_upstream import RecordingUpstream

Upstreams = Callable[[str], Upstream]


@pytest.fixture
def recorder() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream()
    yield upstream
    upstream.stop()


def answering(upstream_address: str, log: Path | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [
            {"name": "old", "match": {"path": "/old"}, "redirect": {"path": "/new", "status": 301}},
            {"name": "moved", "match": {"path_prefix": "/moved"},
             "redirect": {"host": "new.example:8443", "scheme": "https", "status": 308, "strip_query": True}},
            {"name": "ping", "match": {"path": "/ping"}, "direct_response": {"status": 200, "body": "pong"},
             "response_headers": {"add": {"x-answered": "proxy"}}},
            {"name": "gone", "match": {"path": "/gone"}, "direct_response": {"status": 410}},
            {"name": "app", "cluster": "app"},
        ]}],
        "clusters": [{"name": "app", "endpoints": [{"address": upstream_address}]}],
    }
    if log is not None:
        config["access_log"] = {"path": str(log)}
    return config


def test_a_redirect_answers_location_with_the_query_kept(recorder: RecordingUpstream) -> None:
    with Proxy(answering(recorder.address)) as proxy, httpx.Client(timeout=10) as client:
        address = proxy.address("outbound")
        response = client.get(f"http://{address}/old?page=2", headers={"host": "orders"})
        assert response.status_code == 301
        assert response.headers["location"] == "http://orders/new?page=2"
        # curl, as a user would see it: the status line and Location.
        curl = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                               "-H", "Host: orders:8080", f"http://{address}/moved/a?b=c"],
                              capture_output=True, text=True, timeout=10, check=True)
        assert curl.stdout == "308 https://new.example:8443/moved/a"
    assert recorder.requests == []


def test_a_direct_response_answers_its_status_and_body(recorder: RecordingUpstream) -> None:
    with Proxy(answering(recorder.address)) as proxy, httpx.Client(timeout=10) as client:
        base = f"http://{proxy.address('outbound')}"
        pong = client.get(f"{base}/ping")
        assert (pong.status_code, pong.text, pong.headers["x-answered"]) == (200, "pong", "proxy")
        assert pong.headers["content-type"].startswith("text/plain")
        gone = client.get(f"{base}/gone")
        assert (gone.status_code, gone.content) == (410, b"")
        assert "x-meshproxy-error" not in gone.headers
        # Routed traffic still reaches the cluster.
        assert client.get(f"{base}/other").status_code == 200
        traffic = {s["route"]: s for s in proxy.stats()["traffic"]["stats"]}
        assert traffic["ping"]["cluster"] == "" and traffic["ping"]["responses"] == {"200": 1}
        assert traffic["gone"]["responses"] == {"410": 1}
    assert recorder.targets() == ["/other"]


def test_answered_requests_are_access_logged_under_their_route(recorder: RecordingUpstream, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with Proxy(answering(recorder.address, log)) as proxy, httpx.Client(timeout=10) as client:
        base = f"http://{proxy.address('outbound')}"
        client.get(f"{base}/ping")
        client.get(f"{base}/old")
        wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, what="two access log lines")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["route"], line["status"]) for line in lines] == [("ping", 200), ("old", 301)]


def rewriting(upstream: Upstream, route: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "app", **route}]}],
        "clusters": [{"name": "app", "endpoints": [{"address": upstream.address}]}],
    }


def test_a_regex_rewrite_changes_the_path_the_upstream_sees(upstreams: Upstreams) -> None:
    route = {"regex_rewrite": {"pattern": "^/v1/(.*)$", "substitution": "/v2/\\1"}}
    with Proxy(rewriting(upstreams("app"), route)) as proxy, httpx.Client(timeout=10) as client:
        base = f"http://{proxy.address('outbound')}"
        seen = body_json(client.get(f"{base}/v1/orders/7?x=1"))
        assert (seen["path"], seen["query"]) == ("/v2/orders/7", "x=1")
        assert body_json(client.get(f"{base}/v3/orders"))["path"] == "/v3/orders"


@pytest.mark.parametrize("protocol", ["http1", "http2"])
def test_a_host_rewrite_is_the_host_the_upstream_sees(upstreams: Upstreams, protocol: str) -> None:
    config = rewriting(upstreams("app"), {"host_rewrite": "orders.internal"})
    config["clusters"][0]["protocol"] = protocol
    with Proxy(config) as proxy, httpx.Client(timeout=10) as client:
        seen = body_json(client.get(f"http://{proxy.address('outbound')}/", headers={"host": "orders"}))
        host = seen["headers"].get("host") or seen["headers"].get(":authority")
        assert host == "orders.internal"
        assert seen["http_version"] == ("2" if protocol == "http2" else "1.1")


def test_the_routes_view_shows_what_answered_routes_answer(recorder: RecordingUpstream) -> None:
    with Proxy(answering(recorder.address)) as proxy:
        routes = {r["name"]: r for r in proxy.routes()["outbound"]["routes"]}
    assert routes["old"]["redirect"]["path"] == "/new" and "cluster" not in routes["old"]
    assert routes["ping"]["direct_response"] == {"status": 200, "body": "pong"}
    assert routes["app"]["cluster"] == "app"


def test_an_answered_routes_counts_carry_on_across_a_reload_that_changes_it(recorder: RecordingUpstream) -> None:
    with Proxy(answering(recorder.address)) as proxy, httpx.Client(timeout=10) as client:
        base = f"http://{proxy.address('outbound')}"
        assert client.get(f"{base}/ping").text == "pong"
        changed = answering(recorder.address)
        changed["listeners"][0]["routes"][2]["direct_response"]["body"] = "PONG"
        proxy.reload(changed)
        # Reloads prune the stats nothing holds: another one, before the route answers again.
        proxy.reload(changed)
        assert client.get(f"{base}/ping").text == "PONG"
        [ping] = [s for s in proxy.stats()["traffic"]["stats"] if s["route"] == "ping"]
        assert ping["responses"] == {"200": 2}
