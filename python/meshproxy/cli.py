"""The ``meshproxy`` command: run a sidecar, validate a config, print the version."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import _native
from .config import Config, ConfigError, load_config
from .proxy import Proxy

log = logging.getLogger("meshproxy")

# Blocked in every thread (the engine's threads inherit the mask) and taken by the main thread
# with sigwait, so a signal can never land on an engine thread or be missed between checks.
_CONTROL_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="meshproxy: %(message)s", stream=sys.stderr)
    command: int = args.handler(args)
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshproxy",
        description="A service-mesh sidecar proxy: a Rust data path (HTTP/1.1, HTTP/2) configured from YAML.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the sidecar until SIGINT or SIGTERM",
        description="Run the sidecar: bind every listener of the config, serve the admin API, and run "
        "until SIGINT or SIGTERM (then drain). SIGHUP reloads the config file; an invalid file is "
        "refused and the running config stays.",
    )
    run.add_argument("--config", "-c", required=True, type=Path, metavar="FILE", help="the YAML config file")
    run.add_argument("--workers", type=_positive_int, metavar="N", help="engine worker threads (default: the config's "
                     "'workers', else one per core)")
    run.add_argument("--drain-timeout", type=float, default=10.0, metavar="S",
                     help="seconds open connections may take to finish on shutdown (default: 10)")
    run.set_defaults(handler=_run)

    validate = commands.add_parser(
        "validate",
        help="check a config file; exit 0 when valid, 1 when not",
        description="Check a config file as 'run' would, without running it. Problems go to stderr, one per "
        "line, as FILE:LINE: FIELD: what is wrong and what would be valid.",
    )
    validate.add_argument("file", type=Path, metavar="FILE")
    validate.set_defaults(handler=_validate)

    version = commands.add_parser("version", help="print the version", description="Print the version.")
    version.set_defaults(handler=_version)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _version(args: argparse.Namespace) -> int:
    print(f"meshproxy {_native.__version__}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    routes = sum(len(listener.routes) for listener in config.listeners)
    print(f"{args.file}: valid ({len(config.listeners)} listeners, {routes} routes, {len(config.clusters)} clusters)")
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    signal.pthread_sigmask(signal.SIG_BLOCK, _CONTROL_SIGNALS)
    proxy = Proxy(config, workers=args.workers, drain_timeout=args.drain_timeout)
    try:
        proxy.start()
    except (_native.ConfigRejected, OSError) as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    _log_bound(proxy, config)
    while True:
        received = signal.sigwait(_CONTROL_SIGNALS)
        if received != signal.SIGHUP:
            break
        _reload(proxy, args.config)
    log.info("%s received: draining for up to %gs", signal.Signals(received).name, args.drain_timeout)
    proxy.stop()
    log.info("stopped")
    return 0


def _log_bound(proxy: Proxy, config: Config) -> None:
    protocols = {listener.name: listener.protocol for listener in config.listeners}
    for name, address in proxy.listeners().items():
        log.info("listener %s on %s (%s)", name, address, protocols.get(name, "?"))
    if proxy.admin_address is not None:
        log.info("admin on http://%s/", proxy.admin_address)
    log.info("ready: %d worker threads, config version %d", proxy.stats()["workers"], proxy.version)


def _reload(proxy: Proxy, path: Path) -> None:
    admin = proxy.admin_address
    try:
        version = proxy.reload(load_config(path))
    except ConfigError as error:
        log.error("reload refused, keeping the running config:\n%s", error)
    except (_native.ConfigRejected, OSError) as error:
        log.error("reload refused, keeping the running config: %s", error)
    else:
        log.info("reloaded %s: config version %d", path, version)
        if proxy.admin_address is not None and proxy.admin_address != admin:
            log.info("admin on http://%s/", proxy.admin_address)


if __name__ == "__main__":
    sys.exit(main())
