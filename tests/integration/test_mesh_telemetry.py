"""One Prometheus scrapes the whole mesh without a hand-kept target list: the control plane
serves every sidecar's metrics endpoint (HTTP service discovery) with its service, namespace
and version as labels, and its own metrics beside them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mesh_documents import documents, service
from mesh_harness import LocalMesh, apps_by_name
from processes import free_address
from upstreams import Upstream, wait_until

SERVICES = documents(service("frontend", calls=["orders"]), service("orders", calls=[]))


@pytest.fixture
def apps() -> Iterator[dict[str, Upstream]]:
    yield from apps_by_name("frontend", "orders")


def start_prometheus(folder: Path, mesh: LocalMesh) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    assert binary is not None, "the prometheus server is not installed: `make system-deps` installs it"
    address = free_address()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "mesh", "http_sd_configs": [{"url": f"http://{mesh.api}/v1/prometheus-sd",
                                                      "refresh_interval": "1s"}]},
            {"job_name": "control-plane", "static_configs": [{"targets": [mesh.api]}]},
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'tsdb'}",
         f"--web.listen-address={address}"], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return process, address


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    """The result of an instant query; empty while Prometheus is not answering queries yet (it
    says 'Service Unavailable' in plain text while it starts)."""
    try:
        answer = httpx.get(f"http://{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return []
    result: list[dict[str, Any]] = answer.get("data", {}).get("result", [])
    return result


def _ready(prometheus: str) -> bool:
    try:
        return httpx.get(f"http://{prometheus}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_one_prometheus_scrapes_every_sidecar_by_service_and_the_control_plane(
        tmp_path: Path, apps: dict[str, Upstream]) -> None:
    with LocalMesh(tmp_path) as mesh:
        mesh.apply(SERVICES)
        frontend = mesh.sidecar("frontend", app=apps["frontend"].address)
        mesh.sidecar("orders", version="v1", app=apps["orders"].address)
        for _ in range(5):
            assert httpx.get(f"http://{frontend.outbound}/anything", headers={"host": "orders"},
                             timeout=10).status_code == 200
        prometheus, address = start_prometheus(tmp_path, mesh)
        try:
            wait_until(lambda: _ready(address), timeout=30, what=f"prometheus ready on {address}")
            # The orders sidecar counted the 5 calls on its inbound listener, and Prometheus
            # knows it as orders v1 from the control plane alone.
            wait_until(lambda: [r["value"][1] for r in query(
                address, 'sum(meshproxy_requests_total{job="mesh",service="orders",version="v1",'
                         'namespace="default",listener="inbound"})')] == ["5"],
                timeout=60, what="prometheus to count orders' inbound requests")
            wait_until(lambda: {r["metric"]["service"] for r in query(address, 'up{job="mesh"} == 1')}
                       == {"frontend", "orders"}, timeout=30, what="prometheus to scrape both sidecars")
            wait_until(lambda: [r["value"][1] for r in query(
                address, 'sum(meshcontrol_xds_clients{job="control-plane"})')] == ["2"],
                timeout=30, what="prometheus to see the control plane's two clients")
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=20)
