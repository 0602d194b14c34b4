"""The mesh hop: for meshproxy and for Envoy, a pair of sidecars, and the upstream behind them.

    client --HTTP/1.1--> sidecar A --mutual TLS, HTTP/2--> sidecar B (strict mTLS) --HTTP/1.1--> nginx

A accepts B only as spiffe://mesh.local/ns/bench/sa/b; B accepts any client certificate of the
trust domain. Both sidecars of a pair run on the proxy core, one worker each: the pair is what
is compared (a sidecar on either side of one hop), and its CPU is the two summed. B's inbound
listener is also a target of its own, loaded with handshakes alone (handshakes.py).

The certificates come from a CA made for the run with meshproxy's own `meshproxy.ca`; Envoy
reads the same PEM files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from meshproxy.ca import CertificateAuthority

from .anchors import Anchors
from .cores import PROXY_CORE
from .lifecycle import UpstreamAndProxies
from .ports import free_ports
from .probe import check_forwarding, check_mutual_tls
from .proxies import PROXIES
from .servers import Server
from .targets import ClientCredentials, Route, Target
from .templates import render
from .upstream import Upstream

if TYPE_CHECKING:
    from .scenarios import Scenario

TRUST_DOMAIN = "mesh.local"
# The sidecars' identities, and the handshake client's.
IDENTITIES = ("a", "b", "client")
# Outlive any run; short, so a leftover key is worth nothing. A leaf ends before its CA.
CA_TTL = timedelta(hours=13)
CERTIFICATE_TTL = timedelta(hours=12)
# The targets compared in the mesh scenarios: each has configs/mesh-<name>-a.yaml and -b.yaml,
# and runs with the same command line as in scenarios 1-5 (proxies.py).
PAIRS = ("meshproxy", "envoy")


def spiffe_id(identity: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/{identity}"


@dataclass
class _Pair:
    """One proxy's pair: `hop` loads A and counts A and B; `inbound` loads and counts B alone."""

    name: str
    a_port: int
    b_port: int
    hop: Target
    inbound: Target


class MeshLineup(UpstreamAndProxies):
    """`busy_poll`: the window meshproxy's sidecars run with ("0": off, their default); the
    Envoy pair is the same either way (Envoy has no such setting)."""

    def __init__(self, anchors: Anchors, workdir: Path, busy_poll: str = "0") -> None:
        self._anchors = anchors
        self._workdir = workdir / ("mesh" if busy_poll == "0" else "mesh-busy-poll")
        self._workdir.mkdir()
        certs = _issue_credentials(self._workdir / "certs")
        up_h1, up_h2c, *listen = free_ports(2 + 2 * len(PAIRS))
        self.upstream = Upstream(anchors, self._workdir, up_h1, up_h2c)
        self._values: dict[str, object] = {
            "certs": certs,
            "trust_domain": TRUST_DOMAIN,
            "b_identity": spiffe_id("b"),
            "upstream_h1": up_h1,
            "busy_poll": busy_poll,
        }
        self._client = ClientCredentials(
            certs / "client" / "cert.pem",
            certs / "client" / "key.pem",
            certs / "client" / "bundle.pem",
        )
        self._pairs: list[_Pair] = []
        for index, name in enumerate(PAIRS):
            a_port, b_port = listen[2 * index : 2 * index + 2]
            hop = Target(name, {Route.H1_H1: a_port})
            inbound = Target(name, {Route.MTLS: b_port}, client=self._client)
            self._pairs.append(_Pair(name, a_port, b_port, hop, inbound))
        self._direct = Target("direct", {Route.H1_H1: up_h1}, direct=True)

    @property
    def targets(self) -> list[Target]:
        return (
            [pair.hop for pair in self._pairs] + [self._direct] + [p.inbound for p in self._pairs]
        )

    def targets_for(self, scenario: Scenario) -> list[Target]:
        """The pairs and direct for a load through the hop; B alone for handshakes."""
        if scenario.route is Route.MTLS:
            return [pair.inbound for pair in self._pairs]
        return [pair.hop for pair in self._pairs] + [self._direct]

    def focus(self, measured: Target) -> None:
        """Every pair runs throughout: none spins when idle."""

    def start_proxies(self) -> None:
        """Starts both sidecars of each pair, proves the hop forwards and B's listener accepts
        mutual TLS only. A target that fails is marked broken, with the reason; the others go on."""
        for pair in self._pairs:
            self._start(pair)

    def stop_proxies(self) -> None:
        """Both sidecars of each pair: the hop's servers are A and B."""
        for pair in self._pairs:
            for server in pair.hop.servers:
                server.stop()

    def _start(self, pair: _Pair) -> None:
        b = self._server(pair, "b", pair.b_port)
        a = self._server(pair, "a", pair.a_port)
        pair.hop.servers, pair.inbound.servers = (a, b), (b,)
        pair.hop.broken = pair.inbound.broken = None
        try:
            b.start([pair.b_port])
            a.start([pair.a_port])
        except RuntimeError as error:  # it says why, with the server's log
            pair.hop.broken = pair.inbound.broken = str(error)
            a.stop()
            b.stop()
            return
        try:
            check_forwarding(pair.a_port, h2c=False)
        except RuntimeError as error:
            pair.hop.broken = f"client -> A -> B -> upstream: {error}; {pair.hop.log_tails()}"
            a.stop()
        try:
            check_mutual_tls(pair.b_port, self._client)
        except RuntimeError as error:
            pair.inbound.broken = f"B's inbound listener: {error}; {pair.inbound.log_tails()}"
            if pair.hop.broken:
                b.stop()

    def _server(self, pair: _Pair, side: str, port: int) -> Server:
        values = dict(self._values, listen=port, b_port=pair.b_port)
        template = f"mesh-{pair.name}-{side}.yaml"
        config = render(template, values, self._workdir)
        proxy = next(proxy for proxy in PROXIES if proxy.name == pair.name)
        argv = proxy.argv(self._anchors, config, self._workdir)
        name = f"{pair.name} {side.upper()}"
        return Server(name, argv, PROXY_CORE, self._workdir / f"{pair.name}-{side}.log")


def _issue_credentials(directory: Path) -> Path:
    """A CA for the run, and a certificate, key and trust bundle for each identity in
    `directory`/<identity>/."""
    ca = CertificateAuthority.create(TRUST_DOMAIN, CA_TTL)
    for identity in IDENTITIES:
        ca.issue(spiffe_id(identity), CERTIFICATE_TTL).save(directory / identity)
    return directory
