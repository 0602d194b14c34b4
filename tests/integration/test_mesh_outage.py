"""A control plane that goes away never takes traffic down with it: sidecars serve on their last
good config, reconnect when it is back, and a sidecar restarted meanwhile serves from the config
and credentials it saved."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mesh_harness import LocalMesh, apps_by_name, until
from steady_load import SteadyLoad
from upstreams import Upstream

DOCUMENTS = """
kind: Service
name: frontend
---
kind: Service
name: orders
---
kind: Route
service: orders
rules:
  - to: [{version: v1}]
"""
# The outage the acceptance asks for; MESH_OUTAGE_S shortens it for a quick run.
OUTAGE_S = int(os.environ.get("MESH_OUTAGE_S", "30"))


@pytest.fixture
def apps() -> Iterator[dict[str, Upstream]]:
    yield from apps_by_name("frontend", "orders-v1", "orders-v2")


def served(address: str, count: int = 20) -> Counter[str]:
    with httpx.Client(base_url=f"http://{address}", headers={"host": "orders"}, timeout=10) as client:
        return Counter(client.get("/anything").json()["upstream"] for _ in range(count))


@pytest.mark.slow
def test_an_outage_under_load_fails_no_request_and_a_restart_during_it_serves(
        tmp_path: Path, apps: dict[str, Upstream]) -> None:
    with LocalMesh(tmp_path, lease="3s") as mesh:
        mesh.apply(DOCUMENTS)
        steady = mesh.sidecar("frontend", app=apps["frontend"].address)
        restarted = mesh.sidecar("frontend", app=apps["frontend"].address)
        mesh.sidecar("orders", version="v1", app=apps["orders-v1"].address)
        mesh.sidecar("orders", version="v2", app=apps["orders-v2"].address)
        until(lambda: served(steady.outbound) == Counter({"orders-v1": 20})
              and served(restarted.outbound) == Counter({"orders-v1": 20}), what="both frontends to route to v1")

        with SteadyLoad(f"http://{steady.outbound}", host="orders", clients=2, max_seconds=150) as load:
            until(lambda: load.count() > 100, what="load to flow")
            outage = time.monotonic()
            mesh.stop_server(signal.SIGKILL)
            # Restarted while the control plane is away, it serves from what it saved.
            restarted.stop()
            restarted = mesh.restart(restarted)
            assert served(restarted.outbound) == Counter({"orders-v1": 20})
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage)))
            counted = load.count()
            mesh.start()
            until(lambda: len([r for r in mesh.status() if r["connected"]]) == 4, timeout=30,
                  what="every sidecar to reconnect")
            mesh.apply(DOCUMENTS.replace("version: v1", "version: v2"))
            until(lambda: served(steady.outbound) == Counter({"orders-v2": 20})
                  and served(restarted.outbound) == Counter({"orders-v2": 20}), timeout=10,
                  what="the new route to reach both frontends")
        assert load.count() > counted
    assert load.failures() == []
    assert load.upstreams()["orders-v1"] > 0
