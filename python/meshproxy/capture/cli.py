"""``meshproxy capture``: installs the capture rules (``rules``) with ``nft`` or ``iptables``,
removes them (``--remove``), or prints them (``--dry-run``). Needs CAP_NET_ADMIN (root) in the
network namespace it changes.
"""

from __future__ import annotations

import argparse
import ipaddress
import pwd
import shutil
import subprocess
import sys

from .rules import Capture, Network, iptables_install, iptables_remove, nftables_install, nftables_remove

_IPTABLES = {4: "iptables", 6: "ip6tables"}


def add_to(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``capture`` command to the ``meshproxy`` command's subcommands."""
    capture = commands.add_parser(
        "capture",
        help="redirect an app's traffic through its sidecar (nftables or iptables rules)",
        description="Install kernel rules so that the app's outbound TCP goes to the sidecar's capture listener "
        "(original_destination: true), which routes by where each connection was going, and connections "
        "to the app's ports go to the sidecar's inbound listener; the sidecar's own traffic, told apart by "
        "its uid, is left alone. Installing again replaces the rules; --remove takes them away. "
        "Needs root (CAP_NET_ADMIN).",
    )
    capture.add_argument("--uid", type=_uid, metavar="UID|USER", help="the user the sidecar runs as (required to install)")
    capture.add_argument("--outbound-port", type=_port, default=15002, metavar="PORT",
                         help="the sidecar's capture listener (original_destination: true), on loopback "
                         "(default: 15002; 15001 is the outbound listener apps call explicitly)")
    capture.add_argument("--inbound-port", type=_port, default=15006, metavar="PORT",
                         help="the sidecar's inbound listener (default: 15006)")
    capture.add_argument("--app-port", type=_port, action="append", default=[], metavar="PORT",
                         help="a port the app listens on: connections to it go to the inbound port (repeatable; "
                         "none: inbound traffic is not captured)")
    capture.add_argument("--exclude-port", type=_port, action="append", default=[], metavar="PORT",
                         help="an outbound destination port to leave alone (repeatable)")
    capture.add_argument("--exclude-cidr", type=_network, action="append", default=[], metavar="CIDR",
                         help="an outbound destination network to leave alone (repeatable; loopback always is)")
    capture.add_argument("--backend", choices=("auto", "nftables", "iptables"), default="auto",
                         help="which tool writes the rules (default auto: nftables when 'nft' is installed)")
    capture.add_argument("--remove", action="store_true", help="remove meshproxy's capture rules")
    capture.add_argument("--dry-run", action="store_true", help="print the commands and rules instead of running them")
    capture.set_defaults(handler=_capture)


def _capture(args: argparse.Namespace) -> int:
    backend = args.backend if args.backend != "auto" else ("nftables" if shutil.which("nft") else "iptables")
    if args.remove:
        plan = None
    elif args.uid is None:
        print("meshproxy capture: --uid is required to install: the sidecar's own traffic must not be captured",
              file=sys.stderr)
        return 2
    else:
        plan = Capture(
            uid=args.uid,
            outbound_port=args.outbound_port,
            inbound_port=args.inbound_port,
            app_ports=tuple(dict.fromkeys(args.app_port)),
            exclude_ports=tuple(dict.fromkeys(args.exclude_port)),
            exclude_networks=tuple(dict.fromkeys(args.exclude_cidr)),
        )
    try:
        if backend == "nftables":
            _nftables(plan, args.dry_run)
        else:
            _iptables(plan, args.dry_run)
    except _Failed as failed:
        print(f"meshproxy capture: {failed}", file=sys.stderr)
        return 1
    return 0


class _Failed(Exception):
    pass


def _nftables(plan: Capture | None, dry_run: bool) -> None:
    script = nftables_remove() if plan is None else nftables_install(plan)
    if dry_run:
        print(f"# nft -f - <<'EOF'\n{script}EOF")
        return
    _run(["nft", "-f", "-"], stdin=script)


def _iptables(plan: Capture | None, dry_run: bool) -> None:
    for family, tool in _IPTABLES.items():
        if not dry_run and shutil.which(tool) is None:
            if family == 4:
                raise _Failed("neither 'nft' nor 'iptables' is installed (Debian: apt-get install nftables)")
            continue
        # Removed first either way: installing again must not add a second copy.
        for call in iptables_remove():
            if dry_run:
                print(" ".join([tool, *call]) + " 2>/dev/null || true")
                continue
            # A jump added twice is deleted once per call.
            while _run([tool, *call], check=False) == 0 and call[2] == "-D":
                pass
        if plan is None:
            continue
        for call in iptables_install(plan, family):
            if dry_run:
                print(" ".join([tool, *call]))
            else:
                _run([tool, *call])


def _run(command: list[str], stdin: str | None = None, check: bool = True) -> int:
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise _Failed(f"'{command[0]}' is not installed") from None
    if check and done.returncode != 0:
        raise _Failed(f"'{' '.join(command)}' failed: {done.stderr.strip() or f'exit status {done.returncode}'}")
    return done.returncode


def _uid(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no user named {text!r}") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port 1 to 65535, got {text!r}")
    return int(text)


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a network such as 10.0.0.0/8 or an IP, got {text!r}") from None
