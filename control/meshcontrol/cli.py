"""``meshctl``: runs the control plane (``serve``) and talks to a running one over its HTTP API
(every other command).

    meshctl serve --data ./mesh
    meshctl token create --service orders --namespace shop > orders.token
    meshctl apply -f mesh.yaml
    meshctl get services|instances|routes|policies|mesh [-n NS] [-o table|json|yaml]
    meshctl status ; meshctl delete route orders -n shop ; meshctl history ; meshctl rollback [REVISION]
    meshctl token list ; meshctl token revoke ID ; meshctl ca bundle

The server is ``--server`` (default ``MESHCTL_SERVER`` or http://127.0.0.1:15080); the API
token, when the server needs one, is read from ``--api-token-file`` or taken from
``MESHCTL_TOKEN``. Each failure is one message on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import tables
from .client import Client, ClientError

DEFAULT_SERVER = "http://127.0.0.1:15080"
# `meshctl get WHAT` and `meshctl delete WHAT`: the kind each word means.
GET_KINDS = {"services": "Service", "routes": "Route", "policies": "AccessPolicy",
             "trafficpolicies": "TrafficPolicy", "mesh": "Mesh"}
DELETE_KINDS = {"service": "Service", "route": "Route", "policy": "AccessPolicy", "trafficpolicy": "TrafficPolicy"}
_TABLES: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "services": tables.services, "routes": tables.routes, "policies": tables.policies,
    "trafficpolicies": tables.traffic_policies, "mesh": tables.mesh,
    "instances": tables.instances,
}


class UsageError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except (ClientError, UsageError) as error:
        issues = error.issues if isinstance(error, ClientError) else None
        # An apply's issues print as compilers print theirs, one `FILE:LINE: ...` line each.
        print("\n".join(issues) if issues else f"meshctl: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# === serve ===


def _serve(args: argparse.Namespace) -> int:
    """Checks and converts the flags, then runs the control plane (serve.py) until stopped:
    ``args.lease`` and ``args.debounce`` become seconds (float), ``args.api_token`` the token
    read from ``--api-token-file`` (or None)."""
    from meshproxy.config.duration import parse_duration  # the config package: for serve only

    for flag in ("lease", "debounce"):
        try:
            setattr(args, flag, parse_duration(getattr(args, flag)).total_seconds())
        except ValueError as error:
            raise UsageError(f"--{flag}: {error}") from None
    if args.lease <= 0:
        raise UsageError("--lease must be greater than 0, e.g. 10s")
    if (args.ca_cert is None) != (args.ca_key is None):
        raise UsageError("--ca-cert and --ca-key go together: the CA's certificate and its private key (PEM files)")
    args.api_token = _read_token_file(args.api_token_file) if args.api_token_file else None
    from .serve import serve  # the control plane's modules load only for this command

    code: int = serve(args)
    return code


# === Commands that talk to a running control plane ===


def _apply(args: argparse.Namespace) -> int:
    if args.file == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        try:
            with open(args.file, encoding="utf-8") as f:
                text, source = f.read(), args.file
        except OSError as error:
            raise UsageError(f"cannot read {args.file}: {error.strerror or error}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{args.file} is not UTF-8 text") from None
    answer = _client(args).call("POST", "/v1/apply", body=text.encode(), query={"file": source})
    for result in answer["results"]:
        print(f"{result['resource']} {result['result']}")
    print(f"revision {answer['revision']}")
    return 0


def _get(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.what == "instances":
        rows: list[dict[str, Any]] = client.get("/v1/instances")
        rows = [r for r in rows if not args.namespace or r.get("namespace") == args.namespace]
        documents: list[dict[str, Any]] = rows
    else:
        rows = client.get("/v1/resources", kind=GET_KINDS[args.what], namespace=args.namespace or "")["resources"]
        from .resources.documents import as_document  # pydantic only when YAML is asked for

        documents = [as_document(r) for r in rows] if args.output == "yaml" else rows
    _print(args.output, rows, documents, _TABLES[args.what], several_documents=args.what != "instances")
    return 0


def _status(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = _client(args).get("/v1/status")
    _print(args.output, rows, rows, tables.status)
    return 0


def _endpoints(args: argparse.Namespace) -> int:
    service, _, namespace = (args.service or "").partition(".")
    rows: list[dict[str, Any]] = _client(args).get("/v1/endpoints", service=service, namespace=namespace or args.namespace)
    _print(args.output, rows, rows, tables.endpoints)
    return 0


def _delete(args: argparse.Namespace) -> int:
    kind = DELETE_KINDS[args.what]
    answer = _client(args).call("DELETE", f"/v1/resources/{kind}/{args.namespace}/{args.name}")
    print(f"{kind} {args.namespace}/{args.name} deleted")
    print(f"revision {answer['revision']}")
    return 0


def _history(args: argparse.Namespace) -> int:
    answer = _client(args).get("/v1/history")
    if args.output == "table":
        sys.stdout.write(tables.history(answer["history"], answer["revision"]))
    else:
        _print(args.output, answer["history"], answer["history"], lambda rows: "")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    request = {} if args.revision is None else {"revision": args.revision}
    answer = _client(args).call("POST", "/v1/rollback", json_body=request)
    if answer["changed"]:
        print(f"rolled back to the resources of revision {answer['to']}: now revision {answer['revision']}")
    else:
        print(f"the resources of revision {answer['to']} are current already; nothing changed "
              f"(revision {answer['revision']})")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    answer = _client(args).call(
        "POST", "/v1/tokens", json_body={"service": args.service, "namespace": args.namespace, "ttl": args.ttl}
    )
    print(answer["token"])  # only the token: `> orders.token` is the whole use
    return 0


def _token_list(args: argparse.Namespace) -> int:
    records = _client(args).get("/v1/tokens")["tokens"]
    _print(args.output, records, records, tables.tokens)
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    _client(args).call("DELETE", f"/v1/tokens/{args.id}")
    print(f"join token {args.id} revoked")
    return 0


def _ca_bundle(args: argparse.Namespace) -> int:
    sys.stdout.write(_client(args).call("GET", "/v1/bundle", raw=True).decode())
    return 0


# === Helpers ===


def _client(args: argparse.Namespace) -> Client:
    server = getattr(args, "server", None) or os.environ.get("MESHCTL_SERVER") or DEFAULT_SERVER
    token_file = getattr(args, "api_token_file", None)
    token = _read_token_file(token_file) if token_file else os.environ.get("MESHCTL_TOKEN") or None
    return Client(server, token)


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as error:
        raise UsageError(f"cannot read the API token file {path}: {error.strerror or error}") from None
    if not token:
        raise UsageError(f"the API token file {path} is empty")
    return token


def _print(output: str, rows: list[dict[str, Any]], documents: list[dict[str, Any]],
           table: Callable[[list[dict[str, Any]]], str], several_documents: bool = False) -> None:
    if output == "json":
        print(json.dumps(rows, indent=2))
    elif output == "yaml":
        import yaml

        if several_documents:
            sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False) if documents else "")
        else:
            sys.stdout.write(yaml.safe_dump(documents, sort_keys=False))
    else:
        sys.stdout.write(table(rows))


def _parser() -> argparse.ArgumentParser:
    # --server and --api-token-file may come before or after the command; SUPPRESS keeps a
    # subcommand's absent option from hiding the one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=argparse.SUPPRESS,
                        help=f"the control plane's HTTP API (default: $MESHCTL_SERVER or {DEFAULT_SERVER})")
    common.add_argument("--api-token-file", default=argparse.SUPPRESS,
                        help="a file holding the API token (default: $MESHCTL_TOKEN, the token itself)")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")

    parser = argparse.ArgumentParser(prog="meshctl", parents=[common], description="The meshproxy control plane.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the control plane: xDS and CA over gRPC, the HTTP API")
    serve.add_argument("--data", default="./mesh", help="folder of its store: resources, tokens, the CA (default ./mesh)")
    serve.add_argument("--grpc", default="127.0.0.1:15010", help="xDS and CA gRPC address (default 127.0.0.1:15010)")
    serve.add_argument("--grpc-name", action="append", metavar="NAME",
                       help="another name or IP sidecars dial the gRPC port by (a DNS name, a load balancer's "
                       "address); the server certificate names it. Repeatable")
    serve.add_argument("--api", default="127.0.0.1:15080", help="HTTP API address (default 127.0.0.1:15080)")
    serve.add_argument("--lease", default="10s", help="how long an instance stays after its sidecar is gone (default 10s)")
    serve.add_argument("--trust-domain", default="mesh.local",
                       help="trust domain of a CA made on first start (default mesh.local)")
    serve.add_argument("--ca-cert", help="the CA certificate to use instead of making one (PEM); with --ca-key")
    serve.add_argument("--ca-key", help="the private key of --ca-cert (PEM)")
    serve.add_argument("--api-token-file", help="a file holding the token every API request must bear; "
                                                "required when --api is not a loopback address")
    serve.add_argument("--debounce", default="100ms", help="quiet period before a push (default 100ms)")
    serve.set_defaults(run=_serve)

    apply = commands.add_parser("apply", parents=[common], help="create or replace the resources of a file, all or none")
    apply.add_argument("-f", "--file", required=True, help="a YAML file of resource documents; '-' reads stdin")
    apply.set_defaults(run=_apply)

    get = commands.add_parser("get", parents=[common, output], help="list resources or instances")
    get.add_argument("what", choices=(*GET_KINDS, "instances"))
    get.add_argument("-n", "--namespace", help="only this namespace")
    get.set_defaults(run=_get)

    status = commands.add_parser("status", parents=[common, output],
                                 help="each sidecar: connected, config versions sent and ACKed, last NACK")
    status.set_defaults(run=_status)

    endpoints = commands.add_parser("endpoints", parents=[common, output],
                                    help="each sidecar's endpoints of a service (all without one): health, in flight, latency")
    endpoints.add_argument("service", nargs="?", help="SERVICE or SERVICE.NAMESPACE: the service called")
    endpoints.add_argument("-n", "--namespace", default="default", help="the service's namespace (default: default)")
    endpoints.set_defaults(run=_endpoints)

    delete = commands.add_parser("delete", parents=[common], help="delete one resource")
    delete.add_argument("what", choices=tuple(DELETE_KINDS))
    delete.add_argument("name", help="the service's name (a route's and a policy's too: the service they are about)")
    delete.add_argument("-n", "--namespace", default="default", help="its namespace (default: default)")
    delete.set_defaults(run=_delete)

    history = commands.add_parser("history", parents=[common, output], help="every revision of the resources")
    history.set_defaults(run=_history)

    rollback = commands.add_parser("rollback", parents=[common], help="make an earlier revision's resources current")
    rollback.add_argument("revision", nargs="?", type=int, help="default: the revision before the current one")
    rollback.set_defaults(run=_rollback)

    token = commands.add_parser("token", help="join tokens").add_subparsers(dest="token_command", required=True,
                                                                           metavar="COMMAND")
    create = token.add_parser("create", parents=[common], help="print a new join token for one service")
    create.add_argument("--service", required=True)
    create.add_argument("--namespace", "-n", default="default")
    create.add_argument("--ttl", default="24h", help="how long it admits sidecars (default 24h)")
    create.set_defaults(run=_token_create)
    listing = token.add_parser("list", parents=[common, output], help="every join token and its state")
    listing.set_defaults(run=_token_list)
    revoke = token.add_parser("revoke", parents=[common], help="refuse a join token from now on")
    revoke.add_argument("id")
    revoke.set_defaults(run=_token_revoke)

    ca = commands.add_parser("ca", help="the certificate authority").add_subparsers(dest="ca_command", required=True,
                                                                                   metavar="COMMAND")
    bundle = ca.add_parser("bundle", parents=[common], help="print the CA bundle (PEM), e.g. for an Envoy bootstrap")
    bundle.set_defaults(run=_ca_bundle)
    return parser


if __name__ == "__main__":
    sys.exit(main())
