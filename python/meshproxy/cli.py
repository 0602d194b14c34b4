"""The ``meshproxy`` command: run a sidecar, validate a config, print the version.

``run`` keeps the sidecar process small: it never imports the config schema (pydantic). Each
config file it loads, at start and on every SIGHUP, is validated by a short-lived child,
``meshproxy validate --engine-document FILE``, which prints the validated config as an
:class:`EngineDocument` or the problems as ``validate`` reports them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from . import _native, ca_cli
from .engine_document import EngineDocument
from .proxy import Proxy

log = logging.getLogger("meshproxy")

# Blocked in every thread (the engine's threads inherit the mask) and taken by the main thread
# with sigwait, so a signal can never land on an engine thread or be missed between checks.
_CONTROL_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
# A config takes well under a second to validate (seconds for a mesh-sized one); the limit only
# keeps a stuck validator from holding up the sidecar, which cannot stop while it waits.
_VALIDATE_TIMEOUT = 120.0


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
    validate.add_argument("--engine-document", action="store_true",
                          help="when valid, print the config as the engine runs it (JSON) instead of the summary; "
                          "'run' validates each file it loads this way")
    validate.set_defaults(handler=_validate)

    version = commands.add_parser("version", help="print the version", description="Print the version.")
    version.set_defaults(handler=_version)

    ca_cli.add_to(commands)
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
    from .config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    if args.engine_document:
        print(config.engine_document().to_json())
        return 0
    routes = sum(len(listener.routes) for listener in config.listeners)
    print(f"{args.file}: valid ({len(config.listeners)} listeners, {routes} routes, {len(config.clusters)} clusters)")
    return 0


def _run(args: argparse.Namespace) -> int:
    # Blocked before the first validator starts. A child inherits the mask, so a signal sent to
    # the whole process group (Ctrl-C in a terminal) leaves a validator to finish its short job
    # while the sidecar takes the signal once the validator is done (`_validated` always waits
    # for it or kills it), and the sidecar is never stopped halfway through starting.
    signal.pthread_sigmask(signal.SIG_BLOCK, _CONTROL_SIGNALS)
    try:
        document = _validated(args.config)
    except _Invalid as refusal:
        print(refusal, file=sys.stderr)
        return 1
    proxy = Proxy(document, workers=args.workers, drain_timeout=args.drain_timeout)
    try:
        proxy.start()
    except _native.ConfigRejected as error:
        print(_engine_problems(args.config, error), file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    _log_bound(proxy, document)
    while True:
        received = signal.sigwait(_CONTROL_SIGNALS)
        if received != signal.SIGHUP:
            break
        _reload(proxy, args.config)
    log.info("%s received: draining for up to %gs", signal.Signals(received).name, args.drain_timeout)
    proxy.stop()
    log.info("stopped")
    return 0


def _log_bound(proxy: Proxy, document: EngineDocument) -> None:
    for name, address in proxy.listeners().items():
        log.info("listener %s on %s (%s)", name, address, document.listener_protocols.get(name, "?"))
    if proxy.admin_address is not None:
        log.info("admin on http://%s/", proxy.admin_address)
    log.info("ready: %d worker threads, config version %d", proxy.stats()["workers"], proxy.version)


def _reload(proxy: Proxy, path: Path) -> None:
    admin = proxy.admin_address
    try:
        version = proxy.reload(_validated(path))
    except _Invalid as refusal:
        log.error("reload refused, keeping the running config:\n%s", refusal)
    except _native.ConfigRejected as error:
        log.error("reload refused, keeping the running config:\n%s", _engine_problems(path, error))
    except OSError as error:
        log.error("reload refused, keeping the running config: %s", error)
    else:
        log.info("reloaded %s: config version %d", path, version)
        if proxy.admin_address is not None and proxy.admin_address != admin:
            log.info("admin on http://%s/", proxy.admin_address)


class _Invalid(Exception):
    """The config file was refused by its validator; the message is the report to show."""


def _validated(path: Path) -> EngineDocument:
    """Validates the config file in a child process, as ``meshproxy validate`` would, and
    returns it as the engine document. Raises :class:`_Invalid` with the child's report."""
    command = [sys.executable, "-m", "meshproxy", "validate", "--engine-document", str(path)]
    try:
        # run() kills the child when the timeout passes: no validator outlives this call.
        child = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=_VALIDATE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise _Invalid(f"{path}: validation did not finish in {_VALIDATE_TIMEOUT:g}s; stopped it") from None
    if child.returncode != 0:
        report = child.stderr.rstrip("\n")
        raise _Invalid(report or f"{path}: validation failed: '{' '.join(command)}' exited with {child.returncode}")
    try:
        return EngineDocument.from_json(child.stdout)
    except ValueError as error:
        raise _Invalid(f"{path}: validation failed: unreadable output of '{' '.join(command)}': {error}") from None


def _engine_problems(path: Path, error: _native.ConfigRejected) -> str:
    """The engine's refusal, one ``FILE: PATH: MESSAGE`` line per problem (no line numbers:
    the engine reads the document, not the file; the validator reports these with lines)."""
    problems: list[tuple[str, str]] = error.args[1]
    return "\n".join(f"{path}: {at}: {message}" if at else f"{path}: {message}" for at, message in problems)


if __name__ == "__main__":
    sys.exit(main())
