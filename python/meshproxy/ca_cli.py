"""The ``meshproxy ca`` commands: ``init`` creates a local CA for a trust domain, ``issue``
writes a workload's certificate, key and trust bundle.

The ``cryptography`` package is imported inside the handlers only: ``meshproxy run`` shares
this parser and must not load it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ca import CaError

# The config's duration syntax (see config/duration.py), without a bare number of seconds:
# on a command line every value is a string, and config strings need a unit too. Not imported
# from there because that module loads pydantic.
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# The command-line flag for each library parameter a refusal can name.
_FLAGS = {"trust_domain": "--trust-domain", "spiffe_id": "--spiffe-id", "ttl": "--ttl", "dns_names": "--dns"}


def add_to(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ca`` command group to the ``meshproxy`` command's subcommands."""
    ca = commands.add_parser(
        "ca",
        help="a local certificate authority: create one, issue workload certificates",
        description="A local certificate authority for a standalone mesh. Sidecars authenticate each other "
        "with mutual TLS; a workload's identity is the SPIFFE ID in its certificate "
        "(spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT).",
    )
    ca_commands = ca.add_subparsers(title="commands", required=True, metavar="COMMAND")

    init = ca_commands.add_parser(
        "init",
        help="create a CA for a trust domain",
        description="Create a self-signed CA (ECDSA P-256) for a trust domain: CA_DIR/ca.pem (the certificate, "
        "also the trust bundle) and CA_DIR/ca-key.pem (the private key, mode 0600).",
    )
    init.add_argument("--trust-domain", required=True, metavar="DOMAIN",
                      help="e.g. mesh.local: lowercase letters, digits, '.', '-' and '_'")
    init.add_argument("--out", required=True, type=Path, metavar="CA_DIR", help="directory to write the CA into")
    init.add_argument("--ttl", type=_duration, default=timedelta(hours=8760), metavar="DURATION",
                      help="how long the CA stays valid, e.g. 8760h (the default: a year)")
    init.add_argument("--force", action="store_true", help="replace an existing CA in CA_DIR")
    init.set_defaults(handler=_init)

    issue = ca_commands.add_parser(
        "issue",
        help="issue a workload certificate",
        description="Issue a certificate for a SPIFFE ID of the CA's trust domain: DIR/cert.pem, DIR/key.pem "
        "(mode 0600) and DIR/bundle.pem (the CA certificate, to verify peers with). Files already there "
        "are replaced.",
    )
    issue.add_argument("--ca", required=True, type=Path, metavar="CA_DIR", help="the directory 'ca init' wrote")
    issue.add_argument("--spiffe-id", required=True, metavar="ID",
                       help="the workload's identity, e.g. spiffe://mesh.local/ns/shop/sa/web")
    issue.add_argument("--ttl", type=_duration, default=timedelta(hours=24), metavar="DURATION",
                       help="how long the certificate stays valid, e.g. 90s, 30m, 24h (the default), 1.5h")
    issue.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory to write the files into")
    issue.add_argument("--dns", action="append", default=[], metavar="NAME",
                       help="a DNS name to add to the certificate besides the SPIFFE ID; repeatable")
    issue.set_defaults(handler=_issue)


def _duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a valid duration; expected a number with a unit ms, s, m or h (e.g. 90s, 30m, 24h, 1.5h)")
    value = timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid duration here; it must be longer than zero")
    return value


def _init(args: argparse.Namespace) -> int:
    from .ca import CertificateAuthority

    def init() -> str:
        ca = CertificateAuthority.create(args.trust_domain, args.ttl)
        cert, key = ca.save(args.out, overwrite=args.force)
        return f"wrote {cert} and {key}: CA for trust domain '{ca.trust_domain}', valid until {_utc(ca.not_after)}"

    return _report(init, args.out)


def _issue(args: argparse.Namespace) -> int:
    from .ca import CertificateAuthority

    def issue() -> str:
        ca = CertificateAuthority.load(args.ca)
        credentials = ca.issue(args.spiffe_id, args.ttl, dns_names=args.dns)
        cert, key, bundle = credentials.save(args.out)
        return f"wrote {cert}, {key} and {bundle}: {args.spiffe_id}, valid until {_utc(credentials.not_after)}"

    return _report(issue, args.out)


def _report(command: Callable[[], str], out: Path) -> int:
    """Runs ``command``: prints what it wrote and returns 0, or says on stderr why it refused or
    could not write to ``out`` and returns 1."""
    from .ca import CaError, CaExistsError

    try:
        wrote = command()
    except CaExistsError as error:
        print(f"{error}; pass --force to replace it, or choose another --out", file=sys.stderr)
        return 1
    except CaError as error:
        print(_refusal(error), file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{out}: cannot write: {error}", file=sys.stderr)
        return 1
    print(wrote)
    return 0


def _refusal(error: CaError) -> str:
    """The message, prefixed with the flag at fault when there is one."""
    flag = _FLAGS.get(error.argument or "")
    return f"{flag}: {error}" if flag else str(error)


def _utc(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}Z"
