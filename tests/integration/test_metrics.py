"""GET /metrics: the engine's counters in the Prometheus text format, read by prometheus_client's
own parser and scraped by a real Prometheus server, all on loopback."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import meshproxy
import prometheus_client
import pytest
import yaml
from cryptography import x509
from conftest import ProxyProcess, Upstream, closed_port_address, wait_until
from pki import issue, make_ca
from processes import stop_process
from prometheus_client.parser import text_string_to_metric_families

Upstreams = Callable[[str], Upstream]
OUTBOUND = {"direction": "outbound", "listener": "outbound"}
UNROUTED = {**OUTBOUND, "route": "", "cluster": ""}


def mesh_config(upstream: Upstream) -> dict[str, Any]:
    """Named routes by host: `app` to a live upstream, `empty` to a cluster without endpoints."""
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [{
            "name": "outbound",
            "address": "127.0.0.1:0",
            "routes": [
                {"name": "app", "match": {"host": "app"}, "cluster": "app"},
                {"name": "empty", "match": {"host": "empty"}, "cluster": "empty"},
                {"name": "slow", "match": {"host": "slow"}, "cluster": "app"},
            ],
        }],
        "clusters": [
            {"name": "app", "endpoints": [{"address": upstream.address}]},
            {"name": "empty", "endpoints": []},
        ],
    }


class Scrape:
    """One scrape of /metrics, parsed by prometheus_client."""

    def __init__(self, admin: str) -> None:
        response = httpx.get(f"http://{admin}/metrics", timeout=10)
        assert response.status_code == 200, response.text
        self.content_type = response.headers["content-type"]
        self.families = {family.name: family for family in text_string_to_metric_families(response.text)}

    def value(self, sample: str, **labels: str) -> float:
        """The value of the one sample named `sample` whose labels include `labels`."""
        family = self.families[self._family_of(sample)]
        found = [s.value for s in family.samples if s.name == sample and labels.items() <= s.labels.items()]
        assert len(found) == 1, f"{len(found)} samples of {sample} with {labels}: {family.samples}"
        return found[0]

    def _family_of(self, sample: str) -> str:
        for suffix in ("_total", "_bucket", "_count", "_sum"):
            if sample.endswith(suffix) and sample.removesuffix(suffix) in self.families:
                return sample.removesuffix(suffix)
        return sample


@pytest.fixture
def sidecar(meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams) -> ProxyProcess:
    return meshproxy_run(mesh_config(upstreams("v1")))


def send(proxy_address: str, requests: list[tuple[str, str]]) -> list[httpx.Response]:
    with httpx.Client(timeout=10) as client:
        return [client.get(f"http://{proxy_address}{path}", headers={"host": host}) for host, path in requests]


def test_requests_are_counted_by_route_cluster_and_exact_code(sidecar: ProxyProcess) -> None:
    requests = [*[("app", "/anything")] * 3, *[("app", "/status/503")] * 2, *[("nowhere", "/anything")] * 2,
                ("empty", "/anything")]
    with httpx.Client(timeout=10) as client:
        sent = [client.get(f"http://{sidecar.address('outbound')}{path}", headers={"host": host})
                for host, path in requests]
        scrape = Scrape(sidecar.admin or "")
    assert [r.status_code for r in sent] == [200, 200, 200, 503, 503, 404, 404, 503]

    assert scrape.content_type == prometheus_client.CONTENT_TYPE_LATEST
    app = {**OUTBOUND, "route": "app", "cluster": "app"}
    assert scrape.value("meshproxy_requests_total", **app, code="200") == 3
    assert scrape.value("meshproxy_requests_total", **app, code="503") == 2
    assert scrape.value("meshproxy_requests_total", **UNROUTED, code="404") == 2
    assert scrape.value("meshproxy_requests_total", **OUTBOUND, route="empty", cluster="empty", code="503") == 1
    # Every request counted once, and in the histogram of its route.
    total = sum(s.value for s in scrape.families["meshproxy_requests"].samples)
    assert total == len(sent)
    assert scrape.value("meshproxy_request_duration_seconds_count", **app) == 5
    assert scrape.value("meshproxy_request_duration_seconds_bucket", **app, le="+Inf") == 5
    assert scrape.value("meshproxy_request_duration_seconds_count", **UNROUTED) == 2
    assert scrape.value("meshproxy_response_bytes_total", **app) == sum(len(r.content) for r in sent[:5])
    # Routes that carried nothing have no series: their stats are made on a first request.
    assert not [s for s in scrape.families["meshproxy_requests"].samples if s.labels["route"] == "slow"]

    assert scrape.value("meshproxy_proxy_errors_total", reason="no_route") == 2
    assert scrape.value("meshproxy_proxy_errors_total", reason="no_healthy_endpoint") == 1
    assert scrape.value("meshproxy_upstream_requests_total", cluster="app") == 5
    assert scrape.value("meshproxy_upstream_responses_total", cluster="app", **{"class": "5xx"}) == 2
    # The cluster lists its endpoints: discovery never updated them.
    assert scrape.value("meshproxy_cluster_endpoint_updates_total", cluster="app") == 0
    # The client kept one connection alive, open while it scraped.
    assert scrape.value("meshproxy_connections_total", **OUTBOUND) == 1
    assert scrape.value("meshproxy_connections_open", **OUTBOUND) == 1
    assert scrape.value("meshproxy_config_version") == 1
    assert scrape.value("meshproxy_log_lines_dropped_total") == 0


def test_request_bytes_are_counted_as_the_body_streams_upstream(sidecar: ProxyProcess) -> None:
    with httpx.Client(timeout=10) as client:
        for size in (1000, 70_000):
            response = client.post(f"http://{sidecar.address('outbound')}/upload", headers={"host": "app"},
                                   content=b"x" * size)
            assert response.json()["received"] == size
    scrape = Scrape(sidecar.admin or "")
    assert scrape.value("meshproxy_request_bytes_total", **OUTBOUND, route="app", cluster="app") == 71_000


def test_the_duration_covers_a_slow_response_body(sidecar: ProxyProcess) -> None:
    # The upstream sends the headers at once and the body 200 ms later: a duration taken at the
    # response headers would land in the 0.1 s bucket; one taken at the body's end cannot.
    with httpx.Client(timeout=10) as client:
        response = client.get(f"http://{sidecar.address('outbound')}/late-body/200", headers={"host": "slow"})
    assert response.content == b"late"
    scrape = Scrape(sidecar.admin or "")
    slow = {**OUTBOUND, "route": "slow", "cluster": "app"}
    assert scrape.value("meshproxy_request_duration_seconds_count", **slow) == 1
    assert scrape.value("meshproxy_request_duration_seconds_bucket", **slow, le="0.1") == 0
    assert scrape.value("meshproxy_request_duration_seconds_bucket", **slow, le="+Inf") == 1
    assert scrape.value("meshproxy_request_duration_seconds_sum", **slow) >= 0.2


def test_idle_upstream_connections_are_read_from_the_pool(sidecar: ProxyProcess) -> None:
    assert [r.status_code for r in send(sidecar.address("outbound"), [("app", "/anything")])] == [200]
    # The connection goes back to the pool once the response has been read: polled, not slept for.
    wait_until(lambda: Scrape(sidecar.admin or "").value("meshproxy_upstream_connections", cluster="app",
                                                         protocol="http1", state="idle") == 1,
               what="one idle HTTP/1.1 connection to the app cluster")
    scrape = Scrape(sidecar.admin or "")
    assert scrape.value("meshproxy_upstream_connections", cluster="app", protocol="http2", state="open") == 0
    assert scrape.value("meshproxy_upstream_connections", cluster="empty", protocol="http1", state="idle") == 0


def test_authorization_decisions_and_denials_count_on_the_inbound_listener(
    meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams
) -> None:
    config = mesh_config(upstreams("v1"))
    config["listeners"] = [{
        "name": "inbound", "direction": "inbound", "address": "127.0.0.1:0",
        "authorization": [{"name": "guard", "rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin/*"]},
                                                      {"name": "reads", "action": "allow", "methods": ["GET"]}]}],
        "routes": [{"name": "local-app", "cluster": "app"}],
    }]
    proxy = meshproxy_run(config)
    sent = send(proxy.address("inbound"), [("app", "/anything"), ("app", "/admin/users"), ("app", "/admin/keys")])
    assert [r.status_code for r in sent] == [200, 403, 403]

    scrape = Scrape(proxy.admin or "")
    inbound = {"direction": "inbound", "listener": "inbound"}
    assert scrape.value("meshproxy_requests_total", **inbound, route="local-app", cluster="app", code="200") == 1
    # Denied before routing: no route, no cluster.
    assert scrape.value("meshproxy_requests_total", **inbound, route="", cluster="", code="403") == 2
    guard = {"listener": "inbound", "policy": "guard"}
    assert scrape.value("meshproxy_authz_decisions_total", **guard, decision="allowed") == 1
    assert scrape.value("meshproxy_authz_decisions_total", **guard, decision="denied") == 2
    assert scrape.value("meshproxy_authz_decisions_total", **guard, decision="dry_run_denied") == 0
    assert scrape.value("meshproxy_authz_rule_matches_total", **guard, rule="no-admin") == 2
    assert scrape.value("meshproxy_authz_rule_matches_total", **guard, rule="reads") == 3  # deciding or not
    assert scrape.value("meshproxy_proxy_errors_total", reason="denied") == 2
    assert scrape.value("meshproxy_connections_total", **inbound) == 1


def test_a_request_through_the_mesh_counts_in_both_directions_with_its_tls_handshakes(
    tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams
) -> None:
    # One sidecar calling itself: its outbound listener → mutual TLS, HTTP/2 → its strict
    # inbound listener → the app.
    ca = make_ca(tmp_path)
    files = issue(ca, "spiffe://mesh.local/ns/shop/sa/orders", tmp_path / "certs")
    inbound_address = closed_port_address()
    config = {
        "admin": {"address": "127.0.0.1:0"},
        "identity": {"trust_domain": "mesh.local", "cert": str(files.cert), "key": str(files.key),
                     "bundle": str(files.bundle)},
        "listeners": [
            {"name": "outbound", "address": "127.0.0.1:0", "routes": [{"name": "to-orders", "cluster": "orders"}]},
            {"name": "inbound", "direction": "inbound", "address": inbound_address, "tls": "strict",
             "routes": [{"name": "local-app", "cluster": "app"}]},
        ],
        "clusters": [
            {"name": "orders", "protocol": "http2", "endpoints": [{"address": inbound_address}],
             "tls": {"mode": "mesh", "identities": ["spiffe://mesh.local/ns/shop/sa/orders"]}},
            {"name": "app", "endpoints": [{"address": upstreams("v1").address}]},
        ],
    }
    proxy = meshproxy_run(config)
    assert [r.status_code for r in send(proxy.address("outbound"), [("orders", "/anything")] * 2)] == [200, 200]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{inbound_address}/anything", timeout=10)  # plain text on a strict listener

    def refused() -> float:
        return Scrape(proxy.admin or "").value("meshproxy_tls_handshake_failures_total", direction="inbound",
                                               reason="not_tls")

    wait_until(lambda: refused() == 1, what="the plain-text connection counted as refused")
    scrape = Scrape(proxy.admin or "")
    assert scrape.value("meshproxy_requests_total", **OUTBOUND, route="to-orders", cluster="orders", code="200") == 2
    assert scrape.value("meshproxy_requests_total", direction="inbound", listener="inbound", route="local-app",
                        cluster="app", code="200") == 2
    # Both requests on one pooled HTTP/2 connection: one handshake each way, the connection open.
    assert scrape.value("meshproxy_tls_handshakes_total", direction="outbound") == 1
    assert scrape.value("meshproxy_tls_handshakes_total", direction="inbound") == 1
    assert scrape.value("meshproxy_tls_handshakes_resumed_total", direction="outbound") == 0
    assert scrape.value("meshproxy_upstream_connections", cluster="orders", protocol="http2", state="open") == 1
    leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert scrape.value("meshproxy_identity_expiry_timestamp_seconds") == leaf.not_valid_after_utc.timestamp()


def test_reloads_are_counted_by_outcome_and_the_request_counts_carry_on_across_one(
    tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams
) -> None:
    path = tmp_path / "sidecar.yaml"
    config = mesh_config(upstreams("v1"))
    path.write_text(yaml.safe_dump(config))
    proxy = meshproxy_run(path)
    send(proxy.address("outbound"), [("app", "/anything")])

    def reloads(outcome: str) -> float:
        return Scrape(proxy.admin or "").value("meshproxy_config_reloads_total", outcome=outcome)

    path.write_text(yaml.safe_dump({**config, "clusters": [*config["clusters"], {"name": "spare", "endpoints": []}]}))
    proxy.process.send_signal(signal.SIGHUP)
    wait_until(lambda: reloads("succeeded") == 1, what="a reload counted as succeeded")
    path.write_text("listeners: [{name: outbound, address: 127.0.0.1:0, routes: [{cluster: nope}]}]\n")
    proxy.process.send_signal(signal.SIGHUP)
    wait_until(lambda: reloads("failed") == 1, what="a refused reload counted as failed")
    send(proxy.address("outbound"), [("app", "/anything")])

    scrape = Scrape(proxy.admin or "")
    assert scrape.value("meshproxy_config_version") == 2
    assert scrape.value("meshproxy_config_reloads_total", outcome="succeeded") == 1
    assert scrape.value("meshproxy_requests_total", **OUTBOUND, route="app", cluster="app", code="200") == 2


def test_each_embedded_proxy_exports_its_own_metrics_and_leaves_the_default_registry_alone(
    upstreams: Upstreams,
) -> None:
    config = mesh_config(upstreams("v1"))
    with meshproxy.Proxy(config) as busy, meshproxy.Proxy(config) as idle:
        send(busy.address("outbound"), [("app", "/anything")] * 2)
        busy_scrape = {f.name: f for f in text_string_to_metric_families(busy.metrics().decode())}
        idle_scrape = {f.name: f for f in text_string_to_metric_families(idle.metrics().decode())}
    assert [s.value for s in busy_scrape["meshproxy_requests"].samples] == [2]
    assert idle_scrape["meshproxy_requests"].samples == []
    default = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "meshproxy_" not in default


def test_prometheus_client_is_imported_on_the_first_scrape_only(upstreams: Upstreams) -> None:
    code = (
        "import sys, httpx, meshproxy\n"
        f"config = {mesh_config(upstreams('v1'))!r}\n"
        "with meshproxy.Proxy(config) as proxy:\n"
        "    print('prometheus_client' in sys.modules)\n"
        "    httpx.get(f'http://{proxy.admin_address}/stats')\n"
        "    print('prometheus_client' in sys.modules)\n"
        "    httpx.get(f'http://{proxy.admin_address}/metrics')\n"
        "    print('prometheus_client' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True"]


# --- a real Prometheus server ----------------------------------------------------------------


@pytest.fixture
def prometheus(tmp_path: Path, sidecar: ProxyProcess) -> Iterator[str]:
    """A Prometheus server on loopback scraping the sidecar's admin address every second;
    yields its address."""
    binary = shutil.which("prometheus")
    assert binary is not None, "the prometheus server is not installed: `make system-deps` installs it"
    address = closed_port_address()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "meshproxy", "static_configs": [{"targets": [sidecar.admin]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address={address}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _answers(f"http://{address}/-/ready"), timeout=30, what=f"prometheus ready on {address}")
        yield address
    finally:
        stop_process(process, 20)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_prometheus_server_scraping_the_sidecar_counts_the_requests_sent(
    prometheus: str, sidecar: ProxyProcess, tmp_path: Path
) -> None:
    sent = send(sidecar.address("outbound"), [("app", "/anything")] * 5 + [("nowhere", "/anything")] * 2)
    assert [r.status_code for r in sent] == [200] * 5 + [404] * 2
    query = 'sum(meshproxy_requests_total{listener="outbound"})'
    answers: list[Any] = []

    def counted() -> bool:
        response = httpx.get(f"http://{prometheus}/api/v1/query", params={"query": query}, timeout=5)
        answers.append(response.json())
        result = answers[-1]["data"]["result"]
        return bool(result) and result[0]["value"][1] == str(len(sent))

    try:
        wait_until(counted, timeout=30, what=f"prometheus to answer {len(sent)} to {query}")
    except TimeoutError:
        targets = httpx.get(f"http://{prometheus}/api/v1/targets", timeout=5).text
        log = (tmp_path / "prometheus.log").read_text()
        raise AssertionError(f"last answer: {answers[-1:]}\ntargets: {targets}\nlog:\n{log}") from None
