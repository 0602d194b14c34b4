"""Authorization policies on an inbound listener, with real mTLS peers: each caller is an httpx
client presenting a certificate for its SPIFFE ID (or a plain-text client, on a permissive
listener), and the sidecar in front of the app is ``meshproxy run``. Denials are 403 with
``x-meshproxy-error: denied``, never reach the app, and are counted per listener, policy and
rule on the admin API; a dry-run policy denies nothing but counts and logs what it would deny."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ProxyProcess, Upstream, wait_until
from pki import CA_TTL, TRUST_DOMAIN, CredentialFiles, issue, make_ca

FRONTEND = "spiffe://mesh.local/ns/shop/sa/frontend"
PAYMENTS = "spiffe://mesh.local/ns/shop/sa/payments"
REPORTS = "spiffe://mesh.local/ns/analytics/sa/reports"
PEER_IDENTITY = "x-meshproxy-peer-identity"

Upstreams = Callable[[str], Upstream]

ORDERS_POLICY: dict[str, Any] = {
    "name": "orders-policy",
    "rules": [
        {"name": "frontend-reads", "action": "allow", "identities": [FRONTEND], "methods": ["GET"],
         "paths": ["/orders/*"]},
        {"name": "no-admin", "action": "deny", "paths": ["/admin/*"]},
    ],
}


class Orders:
    """The sidecar in front of the orders app, started with the policies a test gives, and
    callers of the mesh with their own certificates."""

    def __init__(self, tmp_path: Path, run: Callable[..., ProxyProcess], app: Upstream) -> None:
        self.tmp_path = tmp_path
        self.ca = make_ca(tmp_path, TRUST_DOMAIN, CA_TTL)
        self._run = run
        self._app = app
        self.sidecar: ProxyProcess | None = None
        self._clients: list[httpx.Client] = []

    def start(self, *policies: dict[str, Any], tls: str = "strict") -> ProxyProcess:
        folder = self.tmp_path / "orders"
        issue(self.ca, "spiffe://mesh.local/ns/shop/sa/orders", folder / "certs")
        config = {
            "admin": {"address": "127.0.0.1:0"},
            "identity": {"trust_domain": TRUST_DOMAIN, "cert": "certs/cert.pem", "key": "certs/key.pem",
                         "bundle": "certs/bundle.pem"},
            "listeners": [{"name": "inbound", "address": "127.0.0.1:0", "tls": tls,
                           "authorization": list(policies), "routes": [{"cluster": "app"}]}],
            "clusters": [{"name": "app", "endpoints": [{"address": self._app.address}]}],
        }
        (folder / "meshproxy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.sidecar = self._run(folder / "meshproxy.yaml")
        return self.sidecar

    @property
    def address(self) -> str:
        assert self.sidecar is not None
        return self.sidecar.address("inbound")

    def credentials(self, spiffe_id: str) -> CredentialFiles:
        return issue(self.ca, spiffe_id, self.tmp_path / "callers" / spiffe_id.rsplit("/", 1)[1])

    def context(self, spiffe_id: str) -> ssl.SSLContext:
        """A client TLS context presenting a certificate for ``spiffe_id``."""
        own = self.credentials(spiffe_id)
        context = ssl.create_default_context(cafile=str(own.bundle))
        context.check_hostname = False  # the sidecar is known by its SPIFFE ID, not a DNS name
        context.load_cert_chain(own.cert, own.key)
        return context

    def caller(self, spiffe_id: str) -> httpx.Client:
        """An HTTP client of the mesh, over mutual TLS as ``spiffe_id``."""
        client = httpx.Client(base_url=f"https://{self.address}", verify=self.context(spiffe_id), timeout=10)
        self._clients.append(client)
        return client

    def plain(self) -> httpx.Client:
        client = httpx.Client(base_url=f"http://{self.address}", timeout=10)
        self._clients.append(client)
        return client

    def calling_sidecar(self, spiffe_id: str) -> ProxyProcess:
        """A caller's own sidecar: its outbound listener sends everything to this service over
        mutual TLS and HTTP/2."""
        folder = self.tmp_path / "caller"
        issue(self.ca, spiffe_id, folder / "certs")
        config = {
            "identity": {"trust_domain": TRUST_DOMAIN, "cert": "certs/cert.pem", "key": "certs/key.pem",
                         "bundle": "certs/bundle.pem"},
            "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "orders"}]}],
            "clusters": [{"name": "orders", "protocol": "http2",
                          "tls": {"mode": "mesh", "identities": ["spiffe://mesh.local/ns/shop/sa/orders"]},
                          "endpoints": [{"address": self.address}]}],
        }
        (folder / "meshproxy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return self._run(folder / "meshproxy.yaml")

    def stats(self) -> dict[str, Any]:
        assert self.sidecar is not None
        document: dict[str, Any] = httpx.get(f"http://{self.sidecar.admin}/stats", timeout=10).json()
        return document

    def policy(self, name: str) -> dict[str, Any]:
        counters: dict[str, Any] = self.stats()["authorization"]["inbound"][name]
        return counters

    def app_requests(self) -> int:
        count: int = self.stats()["clusters"]["app"]["upstream_requests_total"]
        return count

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture
def orders(tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams) -> Iterator[Orders]:
    service = Orders(tmp_path, meshproxy_run, upstreams("orders-app"))
    yield service
    service.close()


def assert_denied(response: httpx.Response, because: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["x-meshproxy-error"] == "denied"
    assert response.text == because + "\n"


def assert_allowed(response: httpx.Response, caller: str | None) -> None:
    assert response.status_code == 200, response.text
    assert response.json()["headers"].get(PEER_IDENTITY) == caller


# --- allow, deny, default deny -------------------------------------------------------------


def test_an_allow_rule_lets_its_identity_method_and_path_through(orders: Orders) -> None:
    orders.start(ORDERS_POLICY)
    assert_allowed(orders.caller(FRONTEND).get("/orders/42"), FRONTEND)
    policy = orders.policy("orders-policy")
    assert (policy["allowed"], policy["denied"]) == (1, 0)
    assert policy["rules"] == {"frontend-reads": {"matches": 1}, "no-admin": {"matches": 0}}


def test_once_an_allow_rule_exists_a_request_matching_none_is_denied(orders: Orders) -> None:
    orders.start(ORDERS_POLICY)
    frontend, payments = orders.caller(FRONTEND), orders.caller(PAYMENTS)
    because = "denied: no allow rule of policy 'orders-policy' matches"
    assert_denied(frontend.post("/orders/42"), because)  # wrong method
    assert_denied(frontend.get("/catalog"), because)  # wrong path
    assert_denied(frontend.get("/orders"), because)  # '/orders/*' is below /orders/, not /orders itself
    assert_denied(payments.get("/orders/42"), because)  # wrong identity
    policy = orders.policy("orders-policy")
    assert (policy["allowed"], policy["denied"]) == (0, 4)
    assert orders.app_requests() == 0
    assert orders.stats()["errors"]["denied"] == 4


def test_deny_rules_alone_deny_what_they_match_and_allow_the_rest(orders: Orders) -> None:
    orders.start({"name": "guard", "rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin/*"]}]})
    payments = orders.caller(PAYMENTS)
    assert_allowed(payments.get("/anything"), PAYMENTS)
    assert_denied(payments.get("/admin/users"), "denied by rule 'no-admin' of policy 'guard'")
    policy = orders.policy("guard")
    assert (policy["allowed"], policy["denied"], policy["rules"]["no-admin"]["matches"]) == (0, 1, 1)


def test_a_deny_rule_wins_over_an_allow_rule_matching_the_same_request(orders: Orders) -> None:
    # The allow comes first, in its own policy: order does not matter, deny wins.
    orders.start(
        {"name": "frontend-all", "rules": [{"name": "frontend", "action": "allow", "identities": [FRONTEND]}]},
        {"name": "guard", "rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin/*"]}]},
    )
    frontend = orders.caller(FRONTEND)
    assert_denied(frontend.get("/admin/users"), "denied by rule 'no-admin' of policy 'guard'")
    assert_allowed(frontend.get("/orders/1"), FRONTEND)
    allow, guard = orders.policy("frontend-all"), orders.policy("guard")
    # Both rules matched the /admin request; only the deny decided it.
    assert allow == {"allowed": 1, "denied": 0, "dry_run_denied": 0, "rules": {"frontend": {"matches": 2}}}
    assert guard == {"allowed": 0, "denied": 1, "dry_run_denied": 0, "rules": {"no-admin": {"matches": 1}}}


def test_a_deny_rule_wins_over_an_allow_rule_of_the_same_policy(orders: Orders) -> None:
    orders.start({"name": "p", "rules": [
        {"name": "frontend-anything", "action": "allow", "identities": [FRONTEND]},
        {"name": "no-admin", "action": "deny", "paths": ["/admin/*"]},
    ]})
    assert_denied(orders.caller(FRONTEND).get("/admin/users"), "denied by rule 'no-admin' of policy 'p'")
    assert orders.policy("p") == {"allowed": 0, "denied": 1, "dry_run_denied": 0,
                                  "rules": {"frontend-anything": {"matches": 1}, "no-admin": {"matches": 1}}}


def test_a_policy_sees_the_identity_of_a_calling_sidecar_over_http2(orders: Orders) -> None:
    orders.start(ORDERS_POLICY)
    frontend = orders.calling_sidecar(FRONTEND)
    with httpx.Client(base_url=f"http://{frontend.address('outbound')}", timeout=10) as client:
        allowed = client.get("/orders/7")
        denied = client.delete("/orders/7")
    assert_allowed(allowed, FRONTEND)
    assert_denied(denied, "denied: no allow rule of policy 'orders-policy' matches")
    policy = orders.policy("orders-policy")
    assert (policy["allowed"], policy["denied"]) == (1, 1)
    assert orders.stats()["listeners"]["inbound"]["connections_total"] == 1  # both on one HTTP/2 connection


# --- conditions: namespaces, headers, identity patterns ------------------------------------


def test_a_namespace_rule_matches_every_service_account_of_the_namespace(orders: Orders) -> None:
    orders.start({"name": "shop-only", "rules": [{"name": "shop", "action": "allow", "namespaces": ["shop"]}]})
    assert_allowed(orders.caller(FRONTEND).get("/orders/1"), FRONTEND)
    assert_allowed(orders.caller(PAYMENTS).get("/orders/1"), PAYMENTS)
    assert_denied(orders.caller(REPORTS).get("/orders/1"), "denied: no allow rule of policy 'shop-only' matches")
    assert orders.policy("shop-only")["rules"]["shop"]["matches"] == 2


def test_an_identity_prefix_matches_the_ids_below_it(orders: Orders) -> None:
    orders.start({"name": "p", "rules": [
        {"name": "analytics", "action": "allow", "identities": ["spiffe://mesh.local/ns/analytics/*"]}]})
    assert_allowed(orders.caller(REPORTS).get("/orders/1"), REPORTS)
    assert_denied(orders.caller(FRONTEND).get("/orders/1"), "denied: no allow rule of policy 'p' matches")


def test_a_header_rule_matches_on_the_request_headers(orders: Orders) -> None:
    orders.start({"name": "tenants", "rules": [
        {"name": "acme", "action": "allow", "headers": {"x-tenant": "acme"}},
        {"name": "beta-testers", "action": "allow", "headers": {"x-tester": {"regex": "[a-z]+@acme\\.example"}}},
    ]})
    payments = orders.caller(PAYMENTS)
    because = "denied: no allow rule of policy 'tenants' matches"
    assert_allowed(payments.get("/orders/1", headers={"x-tenant": "acme"}), PAYMENTS)
    assert_allowed(payments.get("/orders/1", headers={"x-tester": "ann@acme.example"}), PAYMENTS)
    assert_denied(payments.get("/orders/1", headers={"x-tenant": "globex"}), because)
    assert_denied(payments.get("/orders/1", headers={"x-tester": "ann@acme.example.evil"}), because)  # whole value
    assert_denied(payments.get("/orders/1"), because)
    rules = orders.policy("tenants")["rules"]
    assert rules == {"acme": {"matches": 1}, "beta-testers": {"matches": 1}}


def test_a_forged_peer_identity_header_does_not_satisfy_a_header_rule(orders: Orders) -> None:
    """The sidecar sets ``x-meshproxy-peer-identity`` and removes it from anything else, so no
    part of the sidecar may take a client's own copy for a verified identity: a header rule on
    it must not match what a plain-text client wrote there."""
    orders.start({"name": "p", "rules": [
        {"name": "frontend-by-header", "action": "allow", "headers": {PEER_IDENTITY: FRONTEND}}]}, tls="permissive")
    forged = orders.plain().get("/orders/1", headers={PEER_IDENTITY: FRONTEND})
    assert_denied(forged, "denied: no allow rule of policy 'p' matches")


# --- dry run -------------------------------------------------------------------------------


def test_a_dry_run_policy_denies_nothing_but_counts_and_logs_what_it_would_deny(orders: Orders) -> None:
    sidecar = orders.start({"name": "audit", "dry_run": True, "rules": [
        {"name": "frontend-reads", "action": "allow", "identities": [FRONTEND], "methods": ["GET"]},
        {"name": "no-exports", "action": "deny", "paths": ["/exports/*"]},
    ]})
    frontend, payments = orders.caller(FRONTEND), orders.caller(PAYMENTS)
    assert_allowed(frontend.get("/orders/1"), FRONTEND)  # what the policy allows
    assert_allowed(payments.get("/orders/1"), PAYMENTS)  # matches no allow rule: would be denied
    assert_allowed(frontend.get("/exports/all"), FRONTEND)  # matches the deny rule: would be denied
    audit = orders.policy("audit")
    assert audit == {"allowed": 0, "denied": 0, "dry_run_denied": 2,
                     "rules": {"frontend-reads": {"matches": 2}, "no-exports": {"matches": 1}}}
    assert orders.stats()["errors"]["denied"] == 0
    expected = [
        "meshproxy: authz dry-run: listener 'inbound' policy 'audit' (no allow rule matches) would deny "
        f"GET /orders/1 from {PAYMENTS}",
        "meshproxy: authz dry-run: listener 'inbound' policy 'audit' rule 'no-exports' would deny "
        f"GET /exports/all from {FRONTEND}",
    ]
    wait_until(lambda: [line.rstrip("\n") for line in sidecar.log_lines if "dry-run" in line] == expected,
               what="the two dry-run log lines")


def test_a_dry_run_policy_beside_an_enforced_one_counts_only_what_would_change(orders: Orders) -> None:
    orders.start(
        ORDERS_POLICY,
        {"name": "stricter", "dry_run": True, "rules": [{"name": "no-bulk", "action": "deny", "paths": ["/orders/bulk"]}]},
    )
    frontend = orders.caller(FRONTEND)
    assert_allowed(frontend.get("/orders/bulk"), FRONTEND)
    assert_denied(frontend.post("/orders/bulk"), "denied: no allow rule of policy 'orders-policy' matches")
    stricter = orders.policy("stricter")
    # Both requests matched the rule; only the allowed one is a denial the policy would add.
    assert (stricter["dry_run_denied"], stricter["rules"]["no-bulk"]["matches"]) == (1, 2)
    assert orders.policy("orders-policy")["denied"] == 1


# --- plain-text peers on a permissive listener ---------------------------------------------


def test_identity_rules_never_match_a_plain_text_peer_on_a_permissive_listener(orders: Orders) -> None:
    orders.start({"name": "p", "rules": [
        {"name": "mesh-orders", "action": "allow", "identities": ["*"], "paths": ["/orders/*"]},
        {"name": "shop-reports", "action": "allow", "namespaces": ["shop"], "paths": ["/reports/*"]},
        {"name": "health", "action": "allow", "paths": ["/health"]},
    ]}, tls="permissive")
    plain = orders.plain()
    because = "denied: no allow rule of policy 'p' matches"
    assert_denied(plain.get("/orders/1"), because)
    # Claiming an identity in the header the sidecar sets does not make one.
    assert_denied(plain.get("/orders/1", headers={PEER_IDENTITY: FRONTEND}), because)
    assert_denied(plain.get("/reports/1"), because)
    assert_allowed(plain.get("/health"), None)
    assert_allowed(orders.caller(FRONTEND).get("/orders/1"), FRONTEND)
    assert_allowed(orders.caller(FRONTEND).get("/reports/1"), FRONTEND)
    assert orders.policy("p")["rules"] == {"health": {"matches": 1}, "mesh-orders": {"matches": 1},
                                           "shop-reports": {"matches": 1}}


# --- negated conditions --------------------------------------------------------------------


def test_not_paths_and_not_methods_carve_exceptions_out_of_an_allow_rule(orders: Orders) -> None:
    orders.start({"name": "p", "rules": [
        {"name": "mesh-but-admin", "action": "allow", "identities": ["*"], "not_paths": ["/admin/*"],
         "not_methods": ["DELETE"]}]})
    frontend = orders.caller(FRONTEND)
    because = "denied: no allow rule of policy 'p' matches"
    assert_allowed(frontend.get("/orders/1"), FRONTEND)
    assert_allowed(frontend.post("/orders/1"), FRONTEND)
    assert_denied(frontend.get("/admin/users"), because)
    assert_denied(frontend.delete("/orders/1"), because)
    assert orders.policy("p")["rules"]["mesh-but-admin"]["matches"] == 2


def test_an_allow_rule_with_not_namespaces_lets_no_plain_text_peer_in(orders: Orders) -> None:
    """``not_namespaces: [analytics]`` in an allow rule admits peers of every other namespace; a
    peer with no identity is in no namespace we know of, and gets nothing from the negation
    (Istio would let it in, which its advisory ISTIO-SECURITY-2021-004 warns about)."""
    orders.start({"name": "p", "rules": [{"name": "not-analytics", "action": "allow",
                                          "not_namespaces": ["analytics"]}]}, tls="permissive")
    because = "denied: no allow rule of policy 'p' matches"
    assert_allowed(orders.caller(FRONTEND).get("/orders/1"), FRONTEND)
    assert_denied(orders.caller(REPORTS).get("/orders/1"), because)
    assert_denied(orders.plain().get("/orders/1"), because)
    assert_denied(orders.plain().get("/orders/1", headers={PEER_IDENTITY: FRONTEND}), because)
    assert orders.policy("p") == {"allowed": 1, "denied": 3, "dry_run_denied": 0,
                                  "rules": {"not-analytics": {"matches": 1}}}


def test_a_deny_rule_with_not_namespaces_shuts_out_plain_text_too(orders: Orders) -> None:
    """``deny not_namespaces: [shop]`` means "only shop": a plain-text peer, not being of shop,
    is denied by the rule."""
    orders.start(
        {"name": "open", "rules": [{"name": "all", "action": "allow"}]},
        {"name": "guard", "rules": [{"name": "only-shop", "action": "deny", "not_namespaces": ["shop"]}]},
        tls="permissive",
    )
    because = "denied by rule 'only-shop' of policy 'guard'"
    assert_allowed(orders.caller(FRONTEND).get("/orders/1"), FRONTEND)
    assert_denied(orders.caller(REPORTS).get("/orders/1"), because)
    assert_denied(orders.plain().get("/orders/1"), because)
    guard = orders.policy("guard")
    assert (guard["denied"], guard["rules"]["only-shop"]["matches"]) == (2, 2)


def test_a_deny_rule_with_not_identities_keeps_every_other_calling_sidecar_out(orders: Orders) -> None:
    orders.start(
        {"name": "open", "rules": [{"name": "all", "action": "allow", "identities": ["*"]}]},
        {"name": "guard", "rules": [{"name": "frontend-only-writes", "action": "deny", "methods": ["POST"],
                                     "not_identities": [FRONTEND]}]},
    )
    payments = orders.calling_sidecar(PAYMENTS)
    with httpx.Client(base_url=f"http://{payments.address('outbound')}", timeout=10) as client:
        assert_allowed(client.get("/orders/1"), PAYMENTS)
        assert_denied(client.post("/orders/1"), "denied by rule 'frontend-only-writes' of policy 'guard'")
    assert_allowed(orders.caller(FRONTEND).post("/orders/1"), FRONTEND)
    assert orders.policy("guard")["denied"] == 1


def test_not_headers_holds_only_while_no_listed_header_match_does(orders: Orders) -> None:
    orders.start({"name": "p", "rules": [
        {"name": "no-debug", "action": "allow", "identities": ["*"],
         "not_headers": {"x-debug": {"present": True}, "x-env": "prod"}}]})
    frontend = orders.caller(FRONTEND)
    because = "denied: no allow rule of policy 'p' matches"
    assert_allowed(frontend.get("/orders/1"), FRONTEND)
    assert_allowed(frontend.get("/orders/1", headers={"x-env": "staging"}), FRONTEND)
    assert_denied(frontend.get("/orders/1", headers={"x-debug": "1"}), because)
    assert_denied(frontend.get("/orders/1", headers={"x-env": "prod"}), because)


# --- paths a policy could misread ----------------------------------------------------------


def raw_get(orders: Orders, target: str) -> tuple[int, dict[str, str], bytes]:
    """GET with the request target exactly as given (httpx would normalize it), over mTLS as
    the frontend."""
    host, port = orders.address.rsplit(":", 1)
    connection = http.client.HTTPSConnection(host, int(port), context=orders.context(FRONTEND), timeout=10)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


PUBLIC_BUT_NO_ADMIN: dict[str, Any] = {"name": "site", "rules": [
    {"name": "public", "action": "allow", "paths": ["/public/*"]},
    {"name": "no-admin", "action": "deny", "paths": ["/admin/*"]},
]}


@pytest.mark.parametrize("target", [
    "/public/../admin/users",
    "/public/./../admin/users",
    "/public//admin",
    "//admin/users",
    "/public/%2e%2e/admin/users",
    "/public/%2E%2E/admin/users",
    "/public/..%2fadmin/users",
    "/public/..%5cadmin/users",
])
def test_a_path_with_dot_segments_or_encoded_separators_is_refused_with_400(orders: Orders, target: str) -> None:
    orders.start(PUBLIC_BUT_NO_ADMIN)
    status, headers, _ = raw_get(orders, target)
    assert (status, headers["x-meshproxy-error"]) == (400, "bad_request")
    assert raw_get(orders, "/public/index.html")[0] == 200  # the policy does let /public/* through
    assert orders.app_requests() == 1
    assert orders.policy("site")["rules"]["no-admin"]["matches"] == 0


def test_a_percent_encoded_letter_does_not_slip_past_a_deny_rule(orders: Orders) -> None:
    """``/%61dmin/users`` is ``/admin/users`` (RFC 3986 §6.2.2.2: percent-encoded unreserved
    characters are equivalent to the characters), and the app decodes it so. A policy matching
    the path as written would let it past the deny rule on ``/admin/*``: it must be denied
    (matched decoded), or refused as not normalized."""
    orders.start(PUBLIC_BUT_NO_ADMIN, {"name": "anyone", "rules": [{"name": "all", "action": "allow"}]})
    status, _, body = raw_get(orders, "/%61dmin/users")
    assert status in (400, 403), f"{status}: the app was reached with {body[:200]!r}"
    assert orders.app_requests() == 0


def test_a_listener_without_policies_forwards_such_paths_as_written(orders: Orders) -> None:
    """Normalizing is authorization's need: without policies, the path reaches the app unchanged."""
    orders.start()
    status, _, body = raw_get(orders, "/public/../admin")
    assert status == 200
    assert json.loads(body)["path"] == "/public/../admin"


def test_counters_are_kept_per_listener_policy_and_rule(orders: Orders) -> None:
    orders.start(
        ORDERS_POLICY,
        {"name": "audit", "dry_run": True, "rules": [{"name": "only-get", "action": "deny", "methods": ["POST"]}]},
    )
    frontend, payments = orders.caller(FRONTEND), orders.caller(PAYMENTS)
    for _ in range(3):
        assert_allowed(frontend.get("/orders/1"), FRONTEND)
    assert frontend.get("/admin/x").status_code == 403
    assert payments.get("/orders/1").status_code == 403
    assert frontend.post("/orders/1").status_code == 403  # denied anyway: not a dry-run denial
    assert orders.stats()["authorization"] == {"inbound": {
        "audit": {"allowed": 0, "denied": 0, "dry_run_denied": 0, "rules": {"only-get": {"matches": 1}}},
        "orders-policy": {"allowed": 3, "denied": 3, "dry_run_denied": 0,
                          "rules": {"frontend-reads": {"matches": 3}, "no-admin": {"matches": 1}}},
    }}
