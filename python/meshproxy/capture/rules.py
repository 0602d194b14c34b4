"""The capture rules as nftables or iptables write them. Everything lives in meshproxy's own
table (nftables: ``inet meshproxy``) or chains (iptables: ``MESHPROXY_OUTPUT`` and
``MESHPROXY_PREROUTING`` in the nat table, each with one jump from the built-in chain), so that
removal takes away exactly these and installing again replaces them.

Outbound (nat OUTPUT): TCP from any process but the sidecar's uid, to anything but loopback and
the excluded networks and ports, is redirected to the outbound capture port. Inbound (nat
PREROUTING): TCP arriving for one of the app's ports is redirected to the sidecar's inbound
port. The sidecar then reaches the app and its peers directly: its uid is excluded.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

TABLE = "meshproxy"
OUTPUT_CHAIN = "MESHPROXY_OUTPUT"
PREROUTING_CHAIN = "MESHPROXY_PREROUTING"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class Capture:
    """What to capture, as ``meshproxy capture`` was asked."""

    uid: int
    """The sidecar's: its own connections are never redirected."""
    outbound_port: int = 15002
    inbound_port: int = 15006
    app_ports: tuple[int, ...] = ()
    """Connections arriving for these go to ``inbound_port``; none: nothing inbound is captured."""
    exclude_ports: tuple[int, ...] = ()
    """Outbound destination ports left alone."""
    exclude_networks: tuple[Network, ...] = field(default=())
    """Outbound destinations left alone (besides loopback, always)."""


def nftables_install(capture: Capture) -> str:
    """One ``nft -f`` script: atomic, and replaces the table if it is there."""
    out = [
        "meta l4proto != tcp return",
        f"meta skuid {capture.uid} return",
        *(_nft_daddr(network) + " return" for network in (*_LOOPBACK, *capture.exclude_networks)),
    ]
    if capture.exclude_ports:
        out.append(f"tcp dport {_nft_set(capture.exclude_ports)} return")
    out.append(f"meta l4proto tcp redirect to :{capture.outbound_port}")
    chains = [_nft_chain("output", "output", out)]
    if capture.app_ports:
        inbound = [f"tcp dport {_nft_set(capture.app_ports)} redirect to :{capture.inbound_port}"]
        chains.append(_nft_chain("prerouting", "prerouting", inbound))
    return "\n".join([*nftables_remove().splitlines(), f"table inet {TABLE} {{", *chains, "}", ""])


def nftables_remove() -> str:
    """Deletes the table; declaring it first makes the deletion work when it is absent."""
    return f"table inet {TABLE}\ndelete table inet {TABLE}\n"


def iptables_install(capture: Capture, family: int) -> list[list[str]]:
    """The arguments of each ``iptables`` (4) or ``ip6tables`` (6) call, after
    :func:`iptables_remove`'s."""
    mine = [n for n in (*_LOOPBACK, *capture.exclude_networks) if n.version == family]
    rules = [["-N", OUTPUT_CHAIN], [*_out(), "-m", "owner", "--uid-owner", str(capture.uid), "-j", "RETURN"]]
    rules += [[*_out(), "-d", str(network), "-j", "RETURN"] for network in mine]
    rules += [[*_out(), "-p", "tcp", "--dport", str(port), "-j", "RETURN"] for port in capture.exclude_ports]
    rules.append([*_out(), "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(capture.outbound_port)])
    rules.append(["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-j", OUTPUT_CHAIN])
    if capture.app_ports:
        rules.append(["-N", PREROUTING_CHAIN])
        rules += [
            ["-t", "nat", "-A", PREROUTING_CHAIN, "-p", "tcp", "--dport", str(port), "-j", "REDIRECT", "--to-ports", str(capture.inbound_port)]
            for port in capture.app_ports
        ]
        rules.append(["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-j", PREROUTING_CHAIN])
    return [rule if rule[0] == "-t" else ["-t", "nat", *rule] for rule in rules]


def iptables_remove() -> list[list[str]]:
    """The calls that remove the jumps and chains; each may fail (absent), which is fine. A jump
    is deleted once per call: the caller repeats it until it fails, in case it was added twice."""
    calls = []
    for builtin, chain in (("OUTPUT", OUTPUT_CHAIN), ("PREROUTING", PREROUTING_CHAIN)):
        calls += [["-t", "nat", "-D", builtin, "-p", "tcp", "-j", chain], ["-t", "nat", "-F", chain], ["-t", "nat", "-X", chain]]
    return calls


def _out() -> list[str]:
    return ["-A", OUTPUT_CHAIN]


def _nft_chain(name: str, hook: str, rules: list[str]) -> str:
    # -100: where nat's destination rewriting runs (iptables' nat table; nft names it dstnat,
    # a name nft 1.0 accepts for prerouting only).
    body = "\n".join(f"\t\t{rule}" for rule in rules)
    return f"\tchain {name} {{\n\t\ttype nat hook {hook} priority -100; policy accept;\n{body}\n\t}}"


def _nft_daddr(network: Network) -> str:
    return f"{'ip' if network.version == 4 else 'ip6'} daddr {network}"


def _nft_set(ports: tuple[int, ...]) -> str:
    return str(ports[0]) if len(ports) == 1 else "{ " + ", ".join(map(str, ports)) + " }"
