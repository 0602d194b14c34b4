"""Resource documents (`meshctl apply`'s files): the valid mesh loads into its stored form, and
every invalid fixture fails with exactly the message its first line announces
(`# expect: :LINE: documents[I] (...): PATH: MESSAGE`), checked against the valid mesh as the
store's current set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from meshcontrol.resources import (
    ConfigError,
    as_document,
    hashing_dependents,
    in_use_message,
    json_schema,
    load_documents,
    referrers,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "control"
VALID = FIXTURES / "valid" / "mesh.yaml"
INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))


def _current() -> list[dict[str, Any]]:
    return load_documents(VALID.read_text(), VALID.name)


def test_there_is_a_fixture_for_each_kind_and_error_class() -> None:
    names = {p.stem for p in INVALID}
    assert len(names) >= 40
    for prefix in ("service-", "route-", "policy-", "traffic-", "mesh-"):
        assert sum(n.startswith(prefix) for n in names) >= 5, prefix


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_fixture_fails_with_its_exact_message(path: Path) -> None:
    text = path.read_text()
    expected = text.splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as caught:
        load_documents(text, path.name, _current())
    assert str(caught.value) == f"{path.name}{expected}"


def test_the_example_mesh_loads() -> None:
    path = ROOT / "examples" / "mesh.yaml"  # what the README and `make demo` apply
    kinds = [r["kind"] for r in load_documents(path.read_text(), path.name)]
    assert kinds == ["Service", "Service", "Service", "Route", "AccessPolicy"]


def test_the_valid_mesh_is_stored_with_every_default_filled_in() -> None:
    by_kind = {(r["kind"], r.get("name") or r.get("service")): r for r in _current()}
    assert by_kind[("Mesh", None)] == {"kind": "Mesh", "trust_domain": "mesh.local", "mtls": "strict",
                                       "cert_lifetime_s": 86400}
    assert by_kind[("Service", "orders")] == {"kind": "Service", "name": "orders", "namespace": "shop",
                                              "protocol": "http1", "calls": ["payments.shop"], "port": None,
                                              "port_offset": None}
    assert by_kind[("Service", "payments")]["calls"] == []
    route = by_kind[("Route", "orders")]
    assert route["rules"][0] == {
        "name": "beta-channel",
        "match": {"path": None, "path_prefix": None, "path_regex": None,
                  "headers": {"x-channel": {"exact": "beta"}}, "method": None},
        "to": [{"version": "v2", "weight": 1}],
        "redirect": None,
        "direct_response": None,
        "timeout_ms": 15000,
        "timeout_covers": "headers",
        "idle_timeout_ms": 0,
        "hash_policy": [],
        "retry": None,
        "mirror": None,
        "fault": None,
        "rate_limit": None,
        "regex_rewrite": None,
        "host_rewrite": None,
    }
    assert route["rules"][1]["to"] == [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]
    assert route["rules"][1]["timeout_ms"] == 5000
    [rule] = by_kind[("AccessPolicy", "orders")]["rules"]
    assert (rule["action"], rule["services"], rule["methods"]) == ("allow", ["frontend.shop"], ["GET", "HEAD"])
    assert by_kind[("AccessPolicy", "orders")]["dry_run"] is False


def test_every_problem_of_every_document_is_reported_in_file_order() -> None:
    text = """\
kind: Service
name: Cart
---
kind: Route
service: orders
namespace: shop
rules: [{to: [{version: v1, weight: -1}]}]
---
kind: Mesh
mtls: off
"""
    with pytest.raises(ConfigError) as caught:
        load_documents(text, "mesh.yaml", _current())
    assert [(i.line, i.path.split(":")[0]) for i in caught.value.issues] == [
        (2, "documents[0]"),
        (7, "documents[1] (Route shop/orders)"),
        (10, "documents[2] (Mesh)"),
    ]


def test_references_may_be_defined_in_the_same_file_and_versions_need_no_instance() -> None:
    text = """\
kind: Route
service: cart
namespace: store
rules: [{to: [{version: v7}]}]
---
kind: Service
name: cart
namespace: store
calls: [orders.shop]
"""
    stored = load_documents(text, "cart.yaml", _current())
    assert [r["kind"] for r in stored] == ["Route", "Service"]
    assert stored[1]["calls"] == ["orders.shop"]


def test_a_reference_to_an_invalid_service_of_the_file_is_not_reported_twice() -> None:
    text = "kind: Service\nname: cart\nnamespace: store\nprotocol: quic\n---\nkind: Route\nservice: cart\nnamespace: store\nrules: [{to: [{version: v1}]}]\n"
    with pytest.raises(ConfigError) as caught:
        load_documents(text, "cart.yaml")
    assert len(caught.value.issues) == 1
    assert "protocol" in caught.value.issues[0].path


def test_a_service_still_named_by_others_lists_them() -> None:
    current = _current()
    assert referrers(("Service", "shop", "orders"), current) == [
        "AccessPolicy shop/orders",
        "Route shop/orders",
        "Service shop/frontend (calls[0])",
    ]
    assert referrers(("Service", "shop", "frontend"), current) == ["AccessPolicy shop/orders (rules[0].services[0])"]
    assert referrers(("Route", "shop", "orders"), current) == []
    assert in_use_message(("Service", "shop", "payments"), ["Service shop/orders (calls[0])"]) == (
        "cannot delete Service shop/payments: still named by Service shop/orders (calls[0]); "
        "delete or change those first"
    )


def test_stored_resources_written_back_as_documents_load_to_the_same() -> None:
    current = _current()
    text = yaml.safe_dump_all([as_document(r) for r in current], sort_keys=False)
    assert "timeout: 5s" in text and "cert_lifetime: 24h" in text
    assert load_documents(text, "again.yaml") == current


def test_the_json_schema_covers_every_kind() -> None:
    schema = json_schema()
    assert set(schema["discriminator"]["mapping"]) == {"Service", "Route", "AccessPolicy", "TrafficPolicy", "Mesh"}
    assert schema["$defs"]["RouteRule"]["properties"]["timeout"]["default"] == "15000ms"


def test_a_hashing_policy_and_its_route_in_one_file_are_judged_together_and_said_once() -> None:
    policy = "kind: TrafficPolicy\nservice: orders\nnamespace: shop\nlb: maglev\n"
    keyed = ("kind: Route\nservice: orders\nnamespace: shop\nrules:\n"
             "  - to: [{version: v1}]\n    hash_policy: [{source_ip: true}]\n")
    stored = load_documents(f"{policy}---\n{keyed}", "pair.yaml", _current())
    assert stored[1]["rules"][0]["hash_policy"] == [{"source_ip": True}]
    # The same Route without its key: said once, on the Route's rule, not again on the policy.
    unkeyed = keyed.replace("    hash_policy: [{source_ip: true}]\n", "")
    with pytest.raises(ConfigError) as caught:
        load_documents(f"{policy}---\n{unkeyed}", "pair.yaml", _current())
    assert [(i.line, i.path) for i in caught.value.issues] == [(10, "documents[1] (Route shop/orders): rules[0]")]
    # An invalid TrafficPolicy in the file: its own error only, nothing on the Route's key.
    with pytest.raises(ConfigError) as caught:
        load_documents(f"{policy.replace('maglev', 'magnet')}---\n{keyed}", "pair.yaml", _current())
    assert [i.path for i in caught.value.issues] == ["documents[0] (TrafficPolicy shop/orders): lb"]


def test_deleting_either_half_of_a_hashing_pair_is_refused() -> None:
    current = _current()
    assert hashing_dependents(("Route", "shop", "payments"), current) == [
        "TrafficPolicy shop/payments (lb maglev needs its hash_policy)"]
    assert hashing_dependents(("TrafficPolicy", "shop", "payments"), current) == [
        "Route shop/payments (its hash_policy needs lb ring_hash or maglev)"]
    assert hashing_dependents(("Route", "shop", "orders"), current) == []
