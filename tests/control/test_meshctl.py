"""`meshctl` as a user runs it: real subprocesses against a real HTTP API (ApiServer) over a real
SQLite store; the live part of the control plane (connected sidecars) is a fixed view here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from meshcontrol.api import ApiServer
from meshcontrol.store.sqlite import SqliteStore
from meshcontrol.tokens import TokenRefused, verify
from meshproxy.mesh.join_token import JoinToken

MESHCTL = str(Path(sys.executable).parent / "meshctl")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "control"
MESH_YAML = FIXTURES / "valid" / "mesh.yaml"
PIN = "sha256:" + "ab" * 32
BUNDLE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


class FixedView:
    """The live data of a control plane with one sidecar connected and one gone."""

    def instances(self) -> list[dict[str, Any]]:
        return [
            {"node_id": "sidecar~127.0.0.1:4001~orders.shop", "service": "orders", "namespace": "shop",
             "version": "v1", "address": "127.0.0.1:4001", "admin": "127.0.0.1:4002", "kind": "meshproxy",
             "connected": True},
            {"node_id": "sidecar~127.0.0.1:5001~web.default", "service": "web", "namespace": "default",
             "version": "v3", "address": "127.0.0.1:5001", "admin": "", "kind": "envoy", "connected": False},
        ]

    def status(self) -> list[dict[str, Any]]:
        types = {t: {"sent": "7", "acked": "7", "nack": None} for t in ("listeners", "routes", "endpoints", "secrets")}
        types["clusters"] = {"sent": "8", "acked": "6", "nack": "cluster outbound_x: bad"}
        return [{**self.instances()[0], "types": types}]

    def metrics(self) -> bytes:
        return b"meshcontrol_connected_clients 1\n"

    def ready(self) -> bool:
        return True

    def http_sd(self) -> list[dict[str, Any]]:
        return [{"targets": ["127.0.0.1:4002"], "labels": {"service": "orders", "namespace": "shop", "version": "v1"}}]

    def ca_pin(self) -> str:
        return PIN

    def trust_domain(self) -> str:
        return "mesh.local"

    def bundle_pem(self) -> str:
        return BUNDLE


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "mesh")
    yield s
    s.close()


@pytest.fixture
def api(store: SqliteStore) -> Iterator[ApiServer]:
    with ApiServer("127.0.0.1:0", store, FixedView()) as server:
        yield server


def meshctl(api: ApiServer | None, *args: str, input: str | None = None, token: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
    if api is not None:
        environment["MESHCTL_SERVER"] = api.url
    if token is not None:
        environment["MESHCTL_TOKEN"] = token
    environment.update(env or {})
    return subprocess.run([MESHCTL, *args], input=input, capture_output=True, text=True, timeout=60,
                          env=environment, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


# === apply ===


def test_apply_creates_then_reports_unchanged(api: ApiServer, store: SqliteStore) -> None:
    out = ok(meshctl(api, "apply", "-f", str(MESH_YAML)))
    assert out.splitlines() == [
        "Mesh created", "Service shop/frontend created", "Service shop/orders created",
        "Service shop/payments created", "Route shop/orders created", "AccessPolicy shop/orders created",
        "Route shop/payments created", "TrafficPolicy shop/payments created", "revision 1",
    ]
    assert len(store.resources()) == 8
    assert store.history()[0].message.startswith(f"apply {MESH_YAML}: Mesh, Service shop/frontend")
    again = ok(meshctl(api, "apply", "-f", str(MESH_YAML)))
    assert again.splitlines()[-2:] == ["TrafficPolicy shop/payments unchanged", "revision 1"]


def test_a_file_with_errors_changes_nothing_and_prints_every_message(api: ApiServer, store: SqliteStore) -> None:
    ok(meshctl(api, "apply", "-f", str(MESH_YAML)))
    bad = (FIXTURES / "invalid" / "route-bad-version.yaml").read_text() + "---\nkind: Mesh\nmtls: loose\n"
    path = Path(store.path.parent.parent / "bad.yaml")
    path.write_text(bad)
    result = meshctl(api, "apply", "-f", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:7: documents[0] (Route shop/orders): rules[1].to[1].version: 'V2' is not a valid name; expected a "
        "DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
        f"{path}:10: documents[1] (Mesh): mtls: 'loose' is not valid; expected one of strict, permissive",
    ]
    assert store.revision() == 1


def test_a_tcp_services_port_and_http_policy_problems_are_refused_at_apply(api: ApiServer, store: SqliteStore) -> None:
    ok(meshctl(api, "apply", "-f", str(MESH_YAML)))
    cache = "kind: Service\nname: cache\nnamespace: shop\nprotocol: tcp\nport: 6379\n"
    assert ok(meshctl(api, "apply", "-f", "-", input=cache)).splitlines() == ["Service shop/cache created", "revision 2"]
    refused = {
        "sessions.yaml": "kind: Service\nname: sessions\nnamespace: shop\nprotocol: tcp\nport: 6379\n",
        "policy.yaml": "kind: AccessPolicy\nservice: cache\nnamespace: shop\nrules:\n"
                       "  - {name: reads, action: allow, services: [orders], paths: [/get]}\n",
        "orders.yaml": "kind: Service\nname: orders\nnamespace: shop\nprotocol: tcp\ncalls: [payments]\n",
    }
    folder = store.path.parent.parent
    messages = {}
    for name, text in refused.items():
        (folder / name).write_text(text)
        result = meshctl(api, "apply", "-f", str(folder / name))
        assert (result.returncode, result.stdout) == (1, "")
        messages[name] = result.stderr.removeprefix(f"{folder / name}:")
    assert {name: message for name, message in messages.items() if name != "orders.yaml"} == {
        "sessions.yaml": "5: documents[0] (Service shop/sessions): port: port 6379 is Service shop/cache's already "
                         "(applied before); each TCP service needs one of its own: choose another\n",
        "policy.yaml": "5: documents[0] (AccessPolicy shop/cache): rules[0].paths: Service shop/cache has protocol "
                       "tcp: its connections have no HTTP fields; authorize them by services, namespaces or "
                       "identities (and their not_ forms)\n",
    }
    # orders' AccessPolicy allows frontend's GET and HEAD, and its Route splits calls among versions.
    assert messages["orders.yaml"].splitlines() == [
        "4: documents[0] (Service shop/orders): protocol: a tcp service's connections carry no HTTP requests, but "
        "AccessPolicy shop/orders asks for them (rules[0].methods); first change those rules to authorize by "
        "services, namespaces or identities, or keep the protocol it has",
        f"{folder / 'orders.yaml'}:4: documents[0] (Service shop/orders): protocol: a tcp service's connections carry "
        "no HTTP requests, but Route shop/orders asks for them; first delete it, or keep the protocol it has",
    ]
    assert store.revision() == 2


def test_apply_reads_stdin_and_names_it_in_messages(api: ApiServer, store: SqliteStore) -> None:
    out = ok(meshctl(api, "apply", "-f", "-", input="kind: Service\nname: cart\n"))
    assert out == "Service default/cart created\nrevision 1\n"
    result = meshctl(api, "apply", "-f", "-", input="kind: Route\nservice: ghost\nrules: [{to: [{version: v1}]}]\n")
    assert result.returncode == 1
    assert result.stderr == (
        "<stdin>:2: documents[0] (Route default/ghost): service: unknown service 'ghost' in namespace 'default'; "
        "its services: cart\n"
    )
    assert store.revision() == 1


def test_apply_of_a_missing_file_says_so(api: ApiServer) -> None:
    result = meshctl(api, "apply", "-f", "/nonexistent/mesh.yaml")
    assert (result.returncode, result.stderr) == (1, "meshctl: cannot read /nonexistent/mesh.yaml: No such file or directory\n")


# === get ===


def test_get_prints_tables_json_and_yaml(api: ApiServer, store: SqliteStore) -> None:
    ok(meshctl(api, "apply", "-f", str(MESH_YAML)))
    services = ok(meshctl(api, "get", "services"))
    assert services.splitlines() == [
        "NAMESPACE  NAME      PROTOCOL  PORT  CALLS",
        "shop       frontend  http1     -     orders.shop",
        "shop       orders    http1     -     payments.shop",
        "shop       payments  http2     -     -",
    ]
    routes = ok(meshctl(api, "get", "routes", "-n", "shop"))
    assert "x-channel=beta -> v2 | * -> v1 90, v2 10 (5000ms)" in routes
    assert "* -> v1 by header=x-user" in routes
    assert ok(meshctl(api, "get", "trafficpolicies")).splitlines() == [
        "NAMESPACE  SERVICE   LB      HEALTH CHECK            OUTLIER DETECTION"
        "                                            RATE LIMIT",
        "shop       payments  maglev  grpc (server) every 2s  5xx x3, gateway x2, success rate; ejected 30s+, at most 10%"
        "  -",
    ]
    # A TrafficPolicy's YAML, durations and a turned-off success rate included, applies unchanged.
    policy_yaml = ok(meshctl(api, "get", "trafficpolicies", "-o", "yaml"))
    assert "interval: 2s" in policy_yaml
    assert "TrafficPolicy shop/payments unchanged" in ok(meshctl(api, "apply", "-f", "-", input=policy_yaml))
    assert "allow frontend-reads: methods GET,HEAD; services frontend.shop" in ok(meshctl(api, "get", "policies"))
    as_json = json.loads(ok(meshctl(api, "get", "routes", "-o", "json")))
    assert as_json == [r for r in store.resources() if r["kind"] == "Route"]
    assert ok(meshctl(api, "get", "services", "-n", "other", "-o", "json")) == "[]\n"
    # The YAML is a file `apply` takes again, changing nothing.
    as_yaml = ok(meshctl(api, "get", "policies", "-o", "yaml"))
    assert list(yaml.safe_load_all(as_yaml))[0]["rules"][0]["services"] == ["frontend.shop"]
    assert "unchanged" in ok(meshctl(api, "apply", "-f", "-", input=as_yaml))
    assert store.revision() == 1


def test_get_instances_filters_by_namespace(api: ApiServer) -> None:
    table = ok(meshctl(api, "get", "instances"))
    assert table.splitlines()[0].split() == ["NAMESPACE", "SERVICE", "VERSION", "ADDRESS", "KIND", "CONNECTED"]
    assert "shop       orders   v1       127.0.0.1:4001  meshproxy  yes" in table
    rows = json.loads(ok(meshctl(api, "get", "instances", "-n", "default", "-o", "json")))
    assert [r["service"] for r in rows] == ["web"]


def test_status_shows_versions_sent_and_acked_and_the_last_nack(api: ApiServer) -> None:
    table = ok(meshctl(api, "status")).splitlines()
    assert table[0].split() == ["SERVICE", "NAMESPACE", "VERSION", "ADDRESS", "KIND", "CONNECTED", "LISTENERS",
                                "ROUTES", "CLUSTERS", "ENDPOINTS", "SECRETS", "LAST", "NACK"]
    assert table[1].split() == ["orders", "shop", "v1", "127.0.0.1:4001", "meshproxy", "yes", "7", "7", "8/6", "7",
                                "7", "clusters:", "cluster", "outbound_x:", "bad"]
    assert json.loads(ok(meshctl(api, "status", "-o", "json"))) == FixedView().status()


# === delete, history, rollback ===


def test_delete_refuses_a_service_still_named_and_a_missing_resource(api: ApiServer, store: SqliteStore) -> None:
    ok(meshctl(api, "apply", "-f", str(MESH_YAML)))
    refused = meshctl(api, "delete", "service", "payments", "--namespace", "shop")
    assert (refused.returncode, refused.stderr) == (
        1, "meshctl: cannot delete Service shop/payments: still named by Route shop/payments, Service shop/orders "
           "(calls[0]), TrafficPolicy shop/payments; delete or change those first\n")
    assert ok(meshctl(api, "delete", "route", "orders", "-n", "shop")) == "Route shop/orders deleted\nrevision 2\n"
    missing = meshctl(api, "delete", "route", "orders", "-n", "shop")
    assert (missing.returncode, missing.stderr) == (1, "meshctl: Route shop/orders does not exist\n")
    assert [r["kind"] for r in store.resources()].count("Route") == 1


def test_delete_refuses_to_leave_a_hashing_service_without_keys_or_keys_unread(api: ApiServer) -> None:
    ok(meshctl(api, "apply", "-f", str(MESH_YAML)))
    refused = meshctl(api, "delete", "route", "payments", "-n", "shop")
    assert (refused.returncode, refused.stderr) == (
        1, "meshctl: cannot delete Route shop/payments: still named by TrafficPolicy shop/payments (lb maglev needs "
           "its hash_policy); delete or change those first\n")
    refused = meshctl(api, "delete", "trafficpolicy", "payments", "-n", "shop")
    assert (refused.returncode, refused.stderr) == (
        1, "meshctl: cannot delete TrafficPolicy shop/payments: still named by Route shop/payments (its hash_policy "
           "needs lb ring_hash or maglev); delete or change those first\n")


def test_history_and_rollback(api: ApiServer, store: SqliteStore) -> None:
    ok(meshctl(api, "apply", "-f", str(MESH_YAML)))
    ok(meshctl(api, "delete", "policy", "orders", "-n", "shop"))
    history = ok(meshctl(api, "history")).splitlines()
    assert history[0].split() == ["REVISION", "TIME", "CHANGE"]
    assert history[2].startswith("*  2 ") and history[2].endswith("delete AccessPolicy shop/orders")
    assert ok(meshctl(api, "rollback")) == "rolled back to the resources of revision 1: now revision 3\n"
    assert store.resources() == store.resources_at(1)
    assert ok(meshctl(api, "rollback", "2")) == "rolled back to the resources of revision 2: now revision 4\n"
    assert "nothing changed" in ok(meshctl(api, "rollback", "4"))
    bad = meshctl(api, "rollback", "9")
    assert (bad.returncode, bad.stderr) == (1, "meshctl: no revision 9; revisions go from 0 to 4\n")
    revisions = json.loads(ok(meshctl(api, "history", "-o", "json")))
    assert [r["message"] for r in revisions][2:] == ["rollback to 1", "rollback to 2"]


# === tokens and the CA ===


def test_token_create_list_and_revoke(api: ApiServer, store: SqliteStore) -> None:
    text = ok(meshctl(api, "token", "create", "--service", "orders", "--namespace", "shop", "--ttl", "1h"))
    token = JoinToken.decode(text)
    assert text == token.encode() + "\n"
    assert (token.service, token.namespace, token.ca_pin) == ("orders", "shop", PIN)
    verify(store, text, token.expires - 1)
    listing = ok(meshctl(api, "token", "list")).splitlines()
    assert listing[1].split()[:3] == [token.id, "orders", "shop"] and listing[1].endswith("valid")
    assert ok(meshctl(api, "token", "revoke", token.id)) == f"join token {token.id} revoked\n"
    assert ok(meshctl(api, "token", "list")).splitlines()[1].endswith("revoked")
    with pytest.raises(TokenRefused, match="revoked"):
        verify(store, text, token.expires - 1)
    unknown = meshctl(api, "token", "revoke", "nope")
    assert (unknown.returncode, unknown.stderr) == (1, "meshctl: no join token 'nope'\n")
    bad = meshctl(api, "token", "create", "--service", "Orders")
    assert (bad.returncode, bad.stderr.split(";")[0]) == (1, "meshctl: service 'Orders' is not a valid name")
    bad_ttl = meshctl(api, "token", "create", "--service", "orders", "--ttl", "soon")
    assert bad_ttl.stderr.startswith("meshctl: ttl: 'soon' is not a valid duration")


def test_ca_bundle_prints_the_pem(api: ApiServer) -> None:
    assert ok(meshctl(api, "ca", "bundle")) == BUNDLE


def test_metrics_ready_and_prometheus_service_discovery(api: ApiServer) -> None:
    assert httpx.get(f"{api.url}/ready").text == "ready\n"
    metrics = httpx.get(f"{api.url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain") and b"connected_clients 1" in metrics.content
    assert httpx.get(f"{api.url}/v1/prometheus-sd").json()[0]["targets"] == ["127.0.0.1:4002"]
    missing = httpx.get(f"{api.url}/v1/nothing")
    assert (missing.status_code, missing.json()) == (404, {"error": "no such endpoint: GET /v1/nothing"})


# === reaching the server ===


def test_an_unreachable_server_is_one_line_naming_it(api: ApiServer) -> None:
    gone = api.url
    api.stop()
    result = meshctl(None, "--server", gone, "get", "services")
    assert result.returncode == 1
    assert result.stderr == (
        f"meshctl: cannot reach the control plane at {gone} (connection refused); is 'meshctl serve' running? "
        "(set the address with --server or MESHCTL_SERVER)\n"
    )


def test_server_may_be_given_after_the_command(api: ApiServer) -> None:
    assert ok(meshctl(None, "get", "services", "--server", api.url)).startswith("NAMESPACE")


def test_an_api_off_loopback_needs_a_token_and_every_request_bears_it(store: SqliteStore, tmp_path: Path) -> None:
    """The rule: an address whose IP is not a loopback one (127.0.0.0/8, ::1) needs a token.
    0.0.0.0 (every interface) is the off-loopback address a test can bind and still reach."""
    with pytest.raises(ValueError, match="not a loopback address: the HTTP API there needs a bearer token"):
        ApiServer("0.0.0.0:0", store, FixedView())
    token_file = tmp_path / "api.token"
    token_file.write_text("s3cret\n")
    with ApiServer("0.0.0.0:0", store, FixedView(), api_token="s3cret") as server:
        url = f"http://127.0.0.1:{server.address.rsplit(':', 1)[1]}"
        refused = meshctl(None, "--server", url, "get", "services")
        assert refused.returncode == 1
        assert refused.stderr.startswith(f"meshctl: the control plane at {url} refused the request: missing or wrong "
                                         "API token")
        wrong = meshctl(None, "--server", url, "get", "services", token="guess")
        assert wrong.returncode == 1
        assert httpx.get(f"{url}/ready").status_code == 401
        assert ok(meshctl(None, "--server", url, "--api-token-file", str(token_file), "get", "services"))
        assert ok(meshctl(None, "--server", url, "apply", "-f", "-", input="kind: Service\nname: a\n", token="s3cret"))
        assert httpx.get(f"{url}/ready", headers={"Authorization": "Bearer s3cret"}).text == "ready\n"


def test_a_loopback_api_given_a_token_requires_it_too(store: SqliteStore) -> None:
    with ApiServer("127.0.0.1:0", store, FixedView(), api_token="t") as server:
        assert httpx.get(f"{server.url}/v1/history").status_code == 401
        assert httpx.get(f"{server.url}/v1/history", headers={"Authorization": "Bearer t"}).status_code == 200
