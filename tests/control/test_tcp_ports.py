"""Where callers reach a ``tcp`` Service, as ``meshctl apply`` stores it and the control plane
sends it: a ``port`` of its own, or a ``port_offset`` from the caller's outbound port that is
given once and kept, so a service added later (one sorting earlier too) or one deleted never
moves another's port; two services never share one. The invalid fixtures
(``tests/fixtures/control/invalid/service-port-*.yaml``) hold the messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from meshcontrol.resources import ConfigError, as_document, key_of, load_documents
from meshcontrol.store.sqlite import SqliteStore
from meshcontrol.tables import services as services_table
from meshcontrol.xds.build import LISTENER
from meshcontrol.xds.snapshot import Client, Snapshots
from meshcontrol.registry import Registry
from meshproxy.mesh.names import NodeMetadata

from mesh_documents import documents, service

# orders' sidecar: outbound 127.0.0.1:15001.
ORDERS = NodeMetadata("orders", "shop", "v1", "127.0.0.1:20001", "127.0.0.1:15000", "127.0.0.1:15001",
                      "127.0.0.1:8080")


def apply(store: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """What the store holds after applying ``text`` (as the API does: replace by key)."""
    by_key = {key_of(r): r for r in store}
    by_key.update({key_of(r): r for r in load_documents(text, "mesh.yaml", list(by_key.values()))})
    return [by_key[key] for key in sorted(by_key)]


def ports(store: list[dict[str, Any]]) -> dict[str, Any]:
    return {r["name"]: r["port"] or r["port_offset"] for r in store if r["kind"] == "Service" and r["protocol"] == "tcp"}


def test_an_offset_once_given_is_kept_when_a_service_sorting_earlier_is_added() -> None:
    store = apply([], documents(service("orders", "shop", calls=[]), service("cache", "shop", protocol="tcp")))
    assert ports(store) == {"cache": 1}
    store = apply(store, service("ledger", "shop", protocol="tcp"))
    # "audit" sorts before both: it gets the next free offset, and theirs stay.
    store = apply(store, service("audit", "shop", protocol="tcp"))
    assert ports(store) == {"audit": 3, "cache": 1, "ledger": 2}
    # The first file applied again, without an offset: cache keeps its own (nothing changes).
    again = load_documents(service("cache", "shop", protocol="tcp"), "mesh.yaml", store)
    assert again == [r for r in store if r.get("name") == "cache"]


def test_a_deleted_services_offset_is_free_for_the_next_and_no_other_moves() -> None:
    store = apply([], documents(*(service(n, "shop", protocol="tcp") for n in ("a", "b", "c"))))
    assert ports(store) == {"a": 1, "b": 2, "c": 3}
    store = [r for r in store if r["name"] != "b"]
    store = apply(store, service("d", "shop", protocol="tcp"))
    assert ports(store) == {"a": 1, "c": 3, "d": 2}


def test_a_port_given_replaces_the_offset_and_an_offset_given_is_kept_as_written() -> None:
    store = apply([], service("cache", "shop", protocol="tcp"))
    store = apply(store, service("cache", "shop", protocol="tcp") + "port: 6379\n")
    [cache] = store
    assert (cache["port"], cache["port_offset"]) == (6379, None)
    store = apply(store, service("ledger", "shop", protocol="tcp") + "port_offset: 7\n")
    assert ports(store) == {"cache": 6379, "ledger": 7}
    # Offsets given or kept are taken: the next service gets the lowest free one.
    assert ports(apply(store, service("audit", "shop", protocol="tcp"))) == {"audit": 1, "cache": 6379, "ledger": 7}


def test_an_offset_written_on_one_already_given_names_its_holder() -> None:
    store = apply([], service("cache", "shop", protocol="tcp"))
    with pytest.raises(ConfigError) as caught:
        load_documents(service("ledger", "shop", protocol="tcp") + "port_offset: 1\n", "ledger.yaml", store)
    assert str(caught.value) == (
        "ledger.yaml:5: documents[0] (Service shop/ledger): port_offset: port_offset 1 is Service shop/cache's "
        "already (applied before); each TCP service needs one of its own: choose another, or leave "
        "port_offset out for one to be given")


def test_a_service_stored_without_an_offset_is_given_the_one_it_was_served_at() -> None:
    # Stored before offsets were kept: read at the lowest free offsets in (namespace, name) order.
    old = [{"kind": "Service", "name": name, "namespace": "shop", "protocol": "tcp", "calls": None}
           for name in ("cache", "ledger")]
    stored = load_documents(service("audit", "shop", protocol="tcp"), "mesh.yaml", old)
    assert [(r["name"], r["port_offset"]) for r in stored] == [("audit", 3), ("cache", 1), ("ledger", 2)]


def test_stored_offsets_are_written_back_by_meshctl_get_and_shown_in_its_table() -> None:
    store = apply([], documents(service("cache", "shop", protocol="tcp"),
                                service("db", "shop", protocol="tcp") + "port: 5432\n"))
    assert [as_document(r) for r in store][0] == {"kind": "Service", "name": "cache", "namespace": "shop",
                                                   "protocol": "tcp", "port_offset": 1}
    assert services_table(store).splitlines()[1:] == [
        "shop       cache  tcp       outbound+1  (its namespace)",
        "shop       db     tcp       5432        (its namespace)",
    ]


def test_callers_listen_on_the_port_or_the_outbound_port_plus_the_offset(tmp_path: Path) -> None:
    store = apply([], documents(service("orders", "shop", calls=["cache", "db"]),
                                service("cache", "shop", protocol="tcp") + "port_offset: 4\n",
                                service("db", "shop", protocol="tcp") + "port: 5432\n"))
    snapshots = Snapshots(Registry(SqliteStore(tmp_path / "mesh"), 10, lambda _: None), "", "mesh.local")
    snapshots.reload(store)
    found = {}
    for entry in snapshots.resources(Client(ORDERS), LISTENER):
        listener = listener_pb2.Listener.FromString(entry.resource.value)
        found[entry.name] = (listener.address.socket_address.address, listener.address.socket_address.port_value)
    assert found["outbound_tcp_cache.shop"] == ("127.0.0.1", 15005)
    assert found["outbound_tcp_db.shop"] == ("127.0.0.1", 5432)
