"""The registry's leases: an instance stays while its stream is connected and for one lease
after, leaves at once on Leave, is replaced by a newcomer on its address, and comes back from
the store (under a fresh lease) after a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from meshcontrol.registry import Registry, ServiceKey
from meshcontrol.store.sqlite import SqliteStore
from meshproxy.mesh.names import RECONNECT_CAP_S, NodeMetadata

ORDERS_1 = NodeMetadata("orders", "shop", "v1", "127.0.0.1:20001", "127.0.0.1:15000")
ORDERS_2 = NodeMetadata("orders", "shop", "v2", "127.0.0.1:20002")


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "mesh")


def test_an_instance_leaves_within_its_lease_after_its_stream_ends(store: SqliteStore) -> None:
    changes: list[set[ServiceKey]] = []

    async def run() -> tuple[float, float]:
        registry = Registry(store, 0.3, changes.append)
        sweeper = asyncio.create_task(registry.run())
        node = registry.register(ORDERS_1)
        assert node == "sidecar~127.0.0.1:20001~orders.shop"
        assert [i.address for i in registry.of("orders", "shop")] == ["127.0.0.1:20001"]
        await asyncio.sleep(0.5)  # connected: no lease runs, however long
        assert registry.get(node) is not None
        ended = time.monotonic()
        registry.disconnected(node)
        while registry.get(node) is not None:
            await asyncio.sleep(0.01)
        gone = time.monotonic() - ended
        sweeper.cancel()
        return gone, registry.lease_s

    gone, lease = asyncio.run(run())
    # The lease ran from its last renewal (at most lease/4 before the stream ended): removed
    # within it, and not before three quarters of it.
    assert 0.75 * lease - 0.02 <= gone <= lease + 0.05
    assert changes == [{("orders", "shop")}, {("orders", "shop")}]
    assert store.instances() == []


def test_a_reconnect_within_the_lease_keeps_the_instance(store: SqliteStore) -> None:
    changes: list[set[ServiceKey]] = []
    registry = Registry(store, 0.05, changes.append)
    node = registry.register(ORDERS_1)
    registry.disconnected(node)
    assert registry.register(ORDERS_1) == node  # the same instance, back: no change to announce
    assert len(changes) == 1
    registry.sweep(time.monotonic() + 10)
    assert registry.get(node) is not None and registry.get(node).connected  # type: ignore[union-attr]


def test_leave_removes_at_once_and_a_newcomer_replaces_the_instance_on_its_address(store: SqliteStore) -> None:
    changes: list[set[ServiceKey]] = []
    registry = Registry(store, 10, changes.append)
    first = registry.register(ORDERS_1)
    # Another service now on the same address: the earlier instance is gone.
    other = registry.register(NodeMetadata("payments", "shop", "v1", "127.0.0.1:20001"))
    assert registry.get(first) is None
    assert changes[-1] == {("orders", "shop"), ("payments", "shop")}
    registry.disconnected(first)  # the replaced stream ending changes nothing
    assert [i.node_id for i in registry.all()] == [other]
    assert registry.leave(other) and registry.all() == []
    assert not registry.leave(other)
    assert store.instances() == []


def test_instances_come_back_from_the_store_under_a_fresh_lease_that_outlasts_the_reconnect_backoff(
        store: SqliteStore) -> None:
    registry = Registry(store, 10, lambda _: None)
    registry.register(ORDERS_1)
    registry.register(ORDERS_2)
    changes: list[set[ServiceKey]] = []
    restarted = Registry(store, 0.2, changes.append)
    restarted.restore()
    assert [(i.version, i.connected, i.admin) for i in restarted.all()] == [("v1", False, "127.0.0.1:15000"),
                                                                             ("v2", False, "")]
    assert changes == [{("orders", "shop")}]
    restarted.register(ORDERS_1)  # its sidecar reconnected; the other did not
    # A sidecar still backing off keeps its place (the lease alone, 0.2 s, would drop it)...
    restarted.sweep(time.monotonic() + RECONNECT_CAP_S)
    assert [i.version for i in restarted.all()] == ["v1", "v2"]
    # ... and one that never comes back leaves once the grace runs out.
    restarted.sweep(time.monotonic() + 2 * RECONNECT_CAP_S + 0.1)
    assert [i.version for i in restarted.all()] == ["v1"]
    assert [r.version for r in store.instances()] == ["v1"]
