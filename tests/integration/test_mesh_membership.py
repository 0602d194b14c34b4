"""Instances join and leave by themselves: a sidecar registers when it connects, deregisters
before it drains, and one that dies leaves every peer's endpoints within its lease."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh_documents import FRONTEND_AND_ORDERS
from mesh_harness import LocalMesh, apps_by_name, until
from steady_load import SteadyLoad
from upstreams import Upstream

LEASE_S = 3


@pytest.fixture
def apps() -> Iterator[dict[str, Upstream]]:
    yield from apps_by_name("frontend", "orders-a", "orders-b", "orders-c")


@pytest.fixture
def mesh(tmp_path: Path, apps: dict[str, Upstream]) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path, lease=f"{LEASE_S}s") as mesh:
        mesh.apply(FRONTEND_AND_ORDERS)
        mesh.sidecar("frontend", app=apps["frontend"].address)
        mesh.sidecar("orders", app=apps["orders-a"].address)
        mesh.sidecar("orders", app=apps["orders-b"].address)
        until(lambda: len(mesh.sidecars[0].endpoints("outbound_orders.default")) == 2,
              what="frontend to see both orders instances")
        yield mesh


def test_instances_are_registered_with_their_bound_inbound_address(mesh: LocalMesh) -> None:
    frontend, a, b = mesh.sidecars
    assert frontend.endpoints("outbound_orders.default") == sorted([a.inbound, b.inbound])
    instances = mesh.meshctl("get", "instances", "-o", "json").stdout
    assert a.inbound in instances and b.inbound in instances


def test_a_killed_instance_leaves_the_endpoints_within_its_lease(mesh: LocalMesh) -> None:
    frontend, a, b = mesh.sidecars
    with SteadyLoad(f"http://{frontend.outbound}", host="orders", clients=2, max_seconds=60) as load:
        until(lambda: load.count() > 100, what="load to flow")
        b.stop(signal.SIGKILL)
        took = until(lambda: frontend.endpoints("outbound_orders.default") == [a.inbound],
                     timeout=LEASE_S * 4, what="the killed instance to leave")
        assert took <= LEASE_S + 1.5, f"{took:.1f}s for a {LEASE_S}s lease"
        served = load.count()
        until(lambda: load.count() > served + 100, what="load to go on")
    # Only what was in flight on the killed instance fails (a request or two per client):
    # until the lease runs out, requests refused by it are retried on the other instance.
    failed = [f for f in load.failures()]
    assert sum(int(f.rsplit("x", 1)[1]) if f.startswith("status") else 1 for f in failed) <= 2, failed
    assert load.upstreams()["orders-a"] > 0


def test_a_sigterm_deregisters_before_draining_with_no_failed_request(mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    frontend, a, b = mesh.sidecars
    with SteadyLoad(f"http://{frontend.outbound}", host="orders", clients=4, max_seconds=60) as load:
        until(lambda: load.upstreams()["orders-b"] > 50, what="load to reach orders-b")
        assert b.stop(signal.SIGTERM) == 0
        assert frontend.endpoints("outbound_orders.default") == [a.inbound]
        served = load.count()
        until(lambda: load.count() > served + 200, what="load to go on")
        # and one joins under the same load
        c = mesh.sidecar("orders", app=apps["orders-c"].address)
        until(lambda: load.upstreams()["orders-c"] > 50, what="load to reach the new instance")
    assert load.failures() == []
    assert c.inbound in frontend.endpoints("outbound_orders.default")
