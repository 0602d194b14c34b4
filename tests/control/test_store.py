"""The SQLite store on real files: revisions hold the whole set, rollback is a revision, and
resources, versions, tokens, the CA and instances survive reopening the file."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from meshcontrol.store.base import InstanceRecord, TokenRecord
from meshcontrol.store.sqlite import FILE_NAME, SqliteStore

ORDERS = {"kind": "Service", "name": "orders", "namespace": "shop", "protocol": "http1", "calls": None}
PAYMENTS = {"kind": "Service", "name": "payments", "namespace": "shop", "protocol": "http2", "calls": None}
ROUTE = {"kind": "Route", "service": "orders", "namespace": "shop",
         "rules": [{"name": None, "match": {}, "to": [{"version": "v1", "weight": 1}], "timeout_ms": 15000}]}
MESH = {"kind": "Mesh", "trust_domain": "mesh.local", "mtls": "strict", "cert_lifetime_s": 86400}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "mesh")
    yield s
    s.close()


def test_a_new_store_is_empty_at_revision_zero(store: SqliteStore) -> None:
    assert store.revision() == 0
    assert store.resources() == []
    assert store.history() == []
    assert store.resources_at(0) == []


def test_apply_makes_a_revision_holding_the_whole_set_in_key_order(store: SqliteStore) -> None:
    assert store.apply([ROUTE, ORDERS], "apply a.yaml") == 1
    assert store.apply([PAYMENTS, MESH], "apply b.yaml") == 2
    assert store.resources() == [MESH, ROUTE, ORDERS, PAYMENTS]
    assert store.resources_at(1) == [ROUTE, ORDERS]
    assert [(r.number, r.message) for r in store.history()] == [(1, "apply a.yaml"), (2, "apply b.yaml")]


def test_applying_what_is_stored_changes_nothing(store: SqliteStore) -> None:
    seen: list[int] = []
    store.on_change(seen.append)
    store.apply([ORDERS], "first")
    # Same content, keys in another order: still the same document.
    assert store.apply([dict(reversed(list(ORDERS.items())))], "again") == 1
    assert len(store.history()) == 1
    assert seen == [1]


def test_apply_replaces_the_document_with_the_same_key(store: SqliteStore) -> None:
    store.apply([ORDERS], "v1")
    store.apply([{**ORDERS, "protocol": "http2"}], "v2")
    assert store.resources() == [{**ORDERS, "protocol": "http2"}]


def test_delete_makes_a_revision_and_refuses_an_unknown_key(store: SqliteStore) -> None:
    store.apply([ORDERS, ROUTE], "apply")
    assert store.delete(("Route", "shop", "orders"), "delete Route shop/orders") == 2
    assert store.resources() == [ORDERS]
    with pytest.raises(KeyError):
        store.delete(("Route", "shop", "orders"), "again")
    assert store.revision() == 2


def test_rollback_is_a_new_revision_equal_to_the_old_one(store: SqliteStore) -> None:
    store.apply([ORDERS], "one")
    store.apply([ROUTE, PAYMENTS], "two")
    assert store.rollback(1) == 3
    assert store.resources() == [ORDERS]
    assert store.history()[-1].message == "rollback to 1"
    assert store.resources_at(2) == [ROUTE, ORDERS, PAYMENTS]
    with pytest.raises(KeyError):
        store.rollback(9)
    # Back to the set that is current already: nothing to do.
    assert store.rollback(3) == 3


def test_on_change_is_called_with_each_new_revision(store: SqliteStore) -> None:
    seen: list[int] = []
    store.on_change(seen.append)
    store.apply([ORDERS], "a")
    store.delete(("Service", "shop", "orders"), "d")
    store.rollback(1)
    assert seen == [1, 2, 3]


def test_a_failing_callback_does_not_fail_the_change(store: SqliteStore, caplog: pytest.LogCaptureFixture) -> None:
    def broken(revision: int) -> None:
        raise RuntimeError("boom")

    seen: list[int] = []
    store.on_change(broken)
    store.on_change(seen.append)
    assert store.apply([ORDERS], "a") == 1
    assert seen == [1]
    assert "callback failed for revision 1" in caplog.text


def test_versions_grow_across_reopening(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path)
    given = [first.next_version() for _ in range(5)]
    first.close()
    second = SqliteStore(tmp_path)
    later = second.next_version()
    second.close()
    assert given == sorted(set(given))
    assert later > max(given)


def test_everything_survives_reopening(tmp_path: Path) -> None:
    token = TokenRecord("abc123", "d" * 64, "orders", "shop", 2_000_000_000, False, 1_700_000_000)
    instance = InstanceRecord("sidecar~127.0.0.1:4000~orders.shop", "orders", "shop", "v1", "127.0.0.1:4000", "")
    first = SqliteStore(tmp_path)
    first.apply([ORDERS], "one")
    first.apply([ROUTE], "two")
    first.add_token(token)
    first.revoke_token("abc123")
    first.set_ca(b"CERT", b"KEY")
    first.put_instance(instance)
    first.put_instance(instance._replace(node_id="gone"))
    first.remove_instance("gone")
    first.close()

    second = SqliteStore(tmp_path)
    try:
        assert second.revision() == 2
        assert second.resources() == [ROUTE, ORDERS]
        assert [r.message for r in second.history()] == ["one", "two"]
        assert second.token("abc123") == token._replace(revoked=True)
        assert second.tokens() == [token._replace(revoked=True)]
        assert second.ca() == (b"CERT", b"KEY")
        assert second.instances() == [instance]
        assert second.apply([PAYMENTS], "three") == 3
    finally:
        second.close()


def test_tokens(store: SqliteStore) -> None:
    assert store.token("nope") is None
    with pytest.raises(KeyError):
        store.revoke_token("nope")
    record = TokenRecord("t1", "x", "orders", "shop", 10, False, 5)
    store.add_token(record)
    assert store.token("t1") == record
    assert store.ca() is None


def test_the_file_is_readable_by_its_owner_only(store: SqliteStore) -> None:
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert store.path.name == FILE_NAME
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(store.path.parent).st_mode) == 0o700


def test_many_threads_apply_and_read_at_once(store: SqliteStore) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                store.apply([{**ORDERS, "name": f"s{i}-{j}"}], f"apply {i}/{j}")
                store.resources()
                store.next_version()
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.revision() == 80
    assert len(store.resources()) == 80
    assert [r.number for r in store.history()] == list(range(1, 81))
