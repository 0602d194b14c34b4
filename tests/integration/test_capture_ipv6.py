"""Transparent capture over IPv6, for real: the namespaces of test_capture.py with IPv6
addresses on their veth pair too (fd77::1 in A, fd77::2 in B), the app in B on every address,
curl in A told nothing about proxies, calling `http://[fd77::2]:8080`. `meshproxy capture`
writes rules for both families (nftables' `inet` table; iptables and ip6tables); a redirected
IPv6 connection arrives at `[::1]` and the port, so sidecar A's capture listener has an IPv6
twin there, which reads the original destination with IP6T_SO_ORIGINAL_DST. Sidecar B's
inbound listener is on `[::]`, where the PREROUTING redirect of B's app port sends IPv6
connections (and IPv4 ones, v4-mapped). Both families are called in the same test: the IPv4
path must keep working beside the IPv6 one. Needs root; a kernel without IPv6 nat for a backend
is detected and that backend skipped, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from netns import A_IP, A_IP6, B_IP, B_IP6, Namespaces, Started, as_nobody, needs_root, start_app, two_namespaces
from test_capture import A_ID, ADMIN, B_ID, _credentials

pytestmark = needs_root

APP_PORT, INBOUND_PORT, OUTBOUND_PORT = 8080, 15006, 15002
# Another port of the app, not in the mesh: reached through sidecar A's passthrough cluster.
OTHER_PORT = 9090


def _capture_listener(name: str, address: str, b_ip: str) -> dict[str, Any]:
    bracketed = f"[{b_ip}]" if ":" in b_ip else b_ip
    return {
        "name": name,
        "address": address,
        "original_destination": True,
        "routes": [
            {"name": "to-app", "match": {"original_destination": [f"{bracketed}:{APP_PORT}"]}, "cluster": "app-b"},
            {"name": "elsewhere", "match": {"original_destination": [f"{bracketed}:{OTHER_PORT}"]},
             "cluster": "passthrough"},
        ],
    }


def _sidecar_configs(identities: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
    # Sidecar A reaches B's sidecar over IPv6 whichever family the app used.
    to_b = {"name": "app-b", "protocol": "http2", "tls": {"mode": "mesh", "identities": [B_ID]},
            "endpoints": [{"address": f"[{B_IP6}]:{INBOUND_PORT}"}]}
    a = {
        "admin": {"address": ADMIN},
        "identity": identities["a"],
        "listeners": [_capture_listener("capture-out", f"127.0.0.1:{OUTBOUND_PORT}", B_IP),
                      _capture_listener("capture-out6", f"[::1]:{OUTBOUND_PORT}", B_IP6)],
        "clusters": [to_b, {"name": "passthrough", "original_destination": True}],
    }
    inbound = {"name": "inbound", "address": f"[::]:{INBOUND_PORT}", "direction": "inbound", "tls": "permissive",
               "routes": [{"cluster": "local-app"}]}
    b = {"admin": {"address": ADMIN}, "identity": identities["b"], "listeners": [inbound],
         "clusters": [{"name": "local-app", "endpoints": [{"address": f"127.0.0.1:{APP_PORT}"}]}]}
    return {"a": a, "b": b}


@pytest.fixture
def mesh_pair() -> Iterator[Namespaces]:
    """The app in B (IPv4 and IPv6), and a sidecar as `nobody` in each namespace; no capture yet."""
    with two_namespaces(ipv6=True) as ns:
        started: list[Started] = []
        try:
            started.append(start_app(ns, APP_PORT, "::"))
            started.append(start_app(ns, OTHER_PORT, "::"))
            python = as_nobody()
            configs = _sidecar_configs(_credentials(ns.files))
            for name, namespace in (("a", ns.a), ("b", ns.b)):
                path = ns.files / f"sidecar-{name}.yaml"
                path.write_text(yaml.safe_dump(configs[name], sort_keys=False))
                path.chmod(0o644)
                started.append(Started(["ip", "netns", "exec", namespace, *python, "-m", "meshproxy", "run",
                                        "--config", str(path), "--no-watch"], "ready:"))
                started[-1].wait_ready()
            yield ns
        finally:
            for namespace in (ns.a, ns.b):
                ns.run(namespace, "nft", "delete", "table", "inet", "meshproxy", check=False)
                ns.capture(namespace, "--backend", "iptables", "--remove")
            for process in reversed(started):
                process.stop()


def _ipv6_nat(ns: Namespaces, backend: str) -> str | None:
    """Why this kernel cannot redirect IPv6 with ``backend``, or None when it can: a REDIRECT
    rule in IPv6 nat OUTPUT tried in a namespace, then removed."""
    if backend == "nftables":
        script = "table ip6 mpprobe {\n chain o {\n  type nat hook output priority -100;\n  tcp dport 1 redirect to :2\n }\n}\n"
        done = ns.run(ns.a, "nft", "-f", "-", stdin=script, check=False)
        ns.run(ns.a, "nft", "delete", "table", "ip6", "mpprobe", check=False)
    else:
        rule = ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "1", "-j", "REDIRECT", "--to-ports", "2"]
        done = ns.run(ns.a, "ip6tables", *rule, check=False)
        ns.run(ns.a, "ip6tables", *["-D" if part == "-A" else part for part in rule], check=False)
    if done.returncode != 0:
        return f"this kernel refuses an IPv6 nat REDIRECT with {backend}: {done.stderr.strip()}"
    return None


def url(ip: str, port: int = APP_PORT) -> str:
    return f"http://[{ip}]:{port}/hello" if ":" in ip else f"http://{ip}:{port}/hello"


def stats(ns: Namespaces, name: str) -> dict[str, Any]:
    return ns.json(name, f"http://{ADMIN}/stats")


def _through_sidecars(received: dict[str, str]) -> bool:
    return any(name in received for name in ("x-meshproxy-peer-identity", "x-forwarded-for", "x-request-id"))


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_an_ipv6_client_reaches_the_app_through_both_sidecars_once_captured(mesh_pair: Namespaces,
                                                                             backend: str) -> None:
    ns = mesh_pair
    if (reason := _ipv6_nat(ns, backend)) is not None:
        pytest.skip(reason)
    # Before: straight to the app, over IPv6.
    assert not _through_sidecars(ns.json(ns.a, url(B_IP6)))

    for namespace in (ns.a, ns.b):
        ns.capture(namespace, "--backend", backend, "--uid", "nobody", "--outbound-port", str(OUTBOUND_PORT),
                   "--inbound-port", str(INBOUND_PORT), "--app-port", str(APP_PORT))
    if backend == "iptables":
        assert "MESHPROXY_OUTPUT" in ns.run(ns.a, "ip6tables", "-t", "nat", "-S").stdout

    received = ns.json(ns.a, url(B_IP6))
    # Through A's IPv6 capture listener, routed by [fd77::2]:8080, and over mTLS to B.
    assert received["x-meshproxy-peer-identity"] == A_ID
    assert received["x-forwarded-for"] == f"{A_IP6}, {A_IP6}"
    a = stats(ns, ns.a)
    assert a["listeners"]["capture-out6"]["requests_total"] == 1
    assert a["clusters"]["app-b"]["upstream_requests_total"] == 1
    # The IPv4 twin beside it: the same app over IPv4, then over IPv6 to B's sidecar.
    received = ns.json(ns.a, url(B_IP))
    assert received["x-meshproxy-peer-identity"] == A_ID
    assert received["x-forwarded-for"] == f"{A_IP}, {A_IP6}"
    assert stats(ns, ns.a)["listeners"]["capture-out"]["requests_total"] == 1
    # Not in the mesh: passed through to [fd77::2]:9090, plain text, from A's own address.
    elsewhere = ns.json(ns.a, url(B_IP6, OTHER_PORT))
    assert elsewhere["x-forwarded-for"] == A_IP6 and "x-meshproxy-peer-identity" not in elsewhere
    assert stats(ns, ns.a)["clusters"]["passthrough"]["upstream_requests_total"] == 1

    # Removed in A: curl's IPv6 connection goes out directly, and B's rules send it through B's
    # sidecar (plain text: no identity).
    ns.capture(ns.a, "--backend", backend, "--remove")
    received = ns.json(ns.a, url(B_IP6))
    assert "x-meshproxy-peer-identity" not in received and received["x-forwarded-for"] == A_IP6
    # Removed in B too: direct again.
    ns.capture(ns.b, "--backend", backend, "--remove")
    assert not _through_sidecars(ns.json(ns.a, url(B_IP6)))
    for namespace in (ns.a, ns.b):
        assert "meshproxy" not in ns.run(namespace, "nft", "list", "ruleset").stdout
        for tool in ("iptables", "ip6tables"):
            assert "MESHPROXY" not in ns.run(namespace, tool, "-t", "nat", "-S").stdout


def test_a_captured_ipv6_connection_no_route_claims_is_answered_by_the_sidecar(mesh_pair: Namespaces) -> None:
    ns = mesh_pair
    if (reason := _ipv6_nat(ns, "nftables")) is not None:
        pytest.skip(reason)
    ns.capture(ns.a, "--backend", "nftables", "--uid", "nobody", "--outbound-port", str(OUTBOUND_PORT))
    done = ns.run(ns.a, "curl", "-sS", "-g", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                  f"http://[{B_IP6}]:9999/", check=False)
    assert done.stdout == "404"
