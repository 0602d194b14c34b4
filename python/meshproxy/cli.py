"""The ``meshproxy`` command: run a sidecar, validate a config, wait for a sidecar to be
ready, print the version.

``run`` keeps the sidecar process small: it never imports the config schema (pydantic). Each
config file it loads, at start and on every reload (SIGHUP, a change to the file, ``POST
/reload``), is validated by a short-lived child, ``meshproxy validate --engine-document FILE``,
which prints the validated config as an :class:`EngineDocument` or the problems as ``validate``
reports them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import _native, ca_cli
from .capture import cli as capture_cli
from .engine_document import EngineDocument

if TYPE_CHECKING:
    from .proxy import Proxy

# What only `run` needs (the proxy, its admin server, reloads, the file watcher, subprocess)
# is imported in `_run` and the functions it calls: every reload starts a `validate` child,
# and the less it imports the sooner the new config runs.

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
        "until SIGINT or SIGTERM. Then it drains: inbound listeners stop accepting and their requests "
        "finish while outbound listeners keep serving; then everything stops. The config file is "
        "reloaded when it changes, on SIGHUP and on POST /reload; an invalid file is refused and the "
        "running config stays. With --control instead of --config, the sidecar joins the mesh with a "
        "join token and takes its config from the control plane (xDS); no config file is needed.",
    )
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", "-c", type=Path, metavar="FILE", help="the YAML config file")
    source.add_argument("--control", type=_address, metavar="HOST:PORT",
                        help="follow the control plane at HOST:PORT (its gRPC port, e.g. 127.0.0.1:15010)")
    run.add_argument("--workers", type=_positive_int, metavar="N", help="engine worker threads (default: the config's "
                     "'workers', else one per core)")
    run.add_argument("--drain-timeout", type=float, default=10.0, metavar="S",
                     help="seconds open connections may take to finish on shutdown (default: 10)")
    run.add_argument("--no-watch", dest="watch", action="store_false",
                     help="do not reload when the config file changes (SIGHUP and POST /reload still do)")
    mesh = run.add_argument_group("with --control")
    mesh.add_argument("--token-file", type=Path, metavar="FILE", help="the join token ('meshctl token create')")
    mesh.add_argument("--service", metavar="NAME", help="the service this sidecar runs beside (the token's)")
    mesh.add_argument("--namespace", metavar="NAME", help="its namespace (default: the token's)")
    mesh.add_argument("--version", default="v1", metavar="V", help="its version, for routes (default: v1)")
    mesh.add_argument("--app", type=_app_address, metavar="IP:PORT", help="where the app listens")
    mesh.add_argument("--inbound", type=_listen_address, default="127.0.0.1:15006", metavar="IP:PORT",
                      help="the listener peers call (default: 127.0.0.1:15006; port 0: any free port, the one "
                      "bound is registered)")
    mesh.add_argument("--outbound", type=_listen_address, default="127.0.0.1:15001", metavar="IP:PORT",
                      help="the listener the app calls out through (default: 127.0.0.1:15001)")
    mesh.add_argument("--capture", type=_listen_address, metavar="IP:PORT", action="append",
                      help="also run the listener 'meshproxy capture' redirects the app's connections to (e.g. "
                      "127.0.0.1:15002, the capture's --outbound-port): it routes each by where it was going; the "
                      "control plane learns the app port from --app. Repeatable: IPv6 connections are redirected "
                      "to [::1], so give [::1]:15002 too to capture IPv6")
    mesh.add_argument("--admin", type=_listen_address, default="127.0.0.1:15000", metavar="IP:PORT",
                      help="the admin API (default: 127.0.0.1:15000)")
    mesh.add_argument("--state-dir", type=Path, metavar="DIR",
                      help="where the credentials and the last good config are kept (default: "
                      "~/.local/state/meshproxy/<namespace>.<service>.<version>.<outbound port>)")
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

    wait_ready = commands.add_parser(
        "wait-ready",
        help="wait until a sidecar is ready; exit 0 then, 1 on timeout",
        description="Poll a sidecar's admin API (GET /ready) until it answers 200 and exit 0; exit 1 if it "
        "has not within the timeout.",
    )
    wait_ready.add_argument("--admin", required=True, type=_address, metavar="HOST:PORT",
                            help="the sidecar's admin address (its admin.address)")
    wait_ready.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds to wait (default: 60)")
    wait_ready.set_defaults(handler=_wait_ready)

    version = commands.add_parser("version", help="print the version", description="Print the version.")
    version.set_defaults(handler=_version)

    ca_cli.add_to(commands)
    capture_cli.add_to(commands)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _address(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 127.0.0.1:15000, got {text!r}")
    return text


def _listen_address(text: str) -> str:
    from .addresses import AddressError, parse_listen_address

    try:
        parse_listen_address(text)
    except AddressError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _app_address(text: str) -> str:
    from .addresses import AddressError, parse_listen_address

    try:
        _, port = parse_listen_address(text)
    except AddressError:
        port = 0
    if port == 0:
        raise argparse.ArgumentTypeError(f"expected the app's IP:PORT, e.g. 127.0.0.1:8080, got {text!r}")
    return text


def _wait_ready(args: argparse.Namespace) -> int:
    from .wait_ready import wait_ready

    last = wait_ready(args.admin, args.timeout)
    if last is None:
        return 0
    print(f"meshproxy wait-ready: {args.admin} not ready after {args.timeout:g}s (last: {last})", file=sys.stderr)
    return 1


def _version(args: argparse.Namespace) -> int:
    print(f"meshproxy {_native.__version__}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    # `run` starts this as a child for every config it loads, so its start-up is the bulk of a
    # reload's latency. A process this short needs no cycle collector (it would scan the
    # schema's new objects over and over while the models are built), and no pydantic plugins,
    # which pydantic otherwise looks for among the entry points of every installed package.
    gc.disable()
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
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
    if (problem := _run_flags_problem(args)) is not None:
        print(f"meshproxy run: {problem}", file=sys.stderr)
        return 2
    # Blocked before the first validator starts. A child inherits the mask, so a signal sent to
    # the whole process group (Ctrl-C in a terminal) leaves a validator to finish its short job
    # while the sidecar takes the signal once the validator is done (`_validated` always waits
    # for it or kills it), and the sidecar is never stopped halfway through starting.
    signal.pthread_sigmask(signal.SIG_BLOCK, _CONTROL_SIGNALS)
    if args.control is not None:
        from .mesh.sidecar import run_control

        return run_control(args, _CONTROL_SIGNALS, _validated, _log_bound)
    from .file_watch import ConfigWatcher
    from .folder_watch import file_digest
    from .proxy import Proxy
    from .reloads import engine_problems

    # Taken before the file is read: the watcher reloads a change made after this at once.
    loaded = file_digest(args.config)
    try:
        document = _validated(args.config)
    except _Invalid as refusal:
        print(refusal, file=sys.stderr)
        return 1
    proxy = Proxy(document, workers=args.workers, drain_timeout=args.drain_timeout,
                  source=lambda: _validated(args.config))
    try:
        proxy.start()
    except _native.ConfigRejected as error:
        print(engine_problems(str(args.config), error), file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    _log_bound(proxy, document)
    watcher = ConfigWatcher(args.config, lambda: _reload(proxy, "file changed"), loaded) if args.watch else None
    if watcher is not None:
        watcher.start()
    while True:
        received = signal.sigwait(_CONTROL_SIGNALS)
        if received != signal.SIGHUP:
            break
        _reload(proxy, "SIGHUP")
    log.info("%s received: draining for up to %gs", signal.Signals(received).name, args.drain_timeout)
    # No reload from here on: a change to the file now would only be refused.
    if watcher is not None:
        watcher.stop()
    proxy.stop()
    log.info("stopped")
    return 0


def _run_flags_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of run's flags, if anything."""
    mesh_flags = {"token_file": "--token-file", "service": "--service", "app": "--app"}
    if args.control is not None:
        absent = [flag for key, flag in mesh_flags.items() if getattr(args, key) is None]
        return f"--control needs {', '.join(absent)}" if absent else None
    only_mesh = {"namespace": "--namespace", "state_dir": "--state-dir", "capture": "--capture"}
    given = [flag for key, flag in {**mesh_flags, **only_mesh}.items()
             if getattr(args, key) is not None]
    if not given:
        return None
    return f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --control only"


def _log_bound(proxy: Proxy, document: EngineDocument) -> None:
    for name, address in proxy.listeners().items():
        log.info("listener %s on %s (%s)", name, address, document.listener_protocols.get(name, "?"))
    if proxy.admin_address is not None:
        log.info("admin on http://%s/", proxy.admin_address)
    log.info("ready: %d worker threads, config version %d", proxy.stats()["workers"], proxy.version)


def _reload(proxy: Proxy, trigger: str) -> None:
    from .reloads import Refused, reload_and_log

    # Logged and counted either way; a refusal leaves the running config in place.
    with contextlib.suppress(Refused):
        reload_and_log(proxy, trigger)


class _Invalid(ValueError):
    """The config file was refused by its validator; the message is the report to show."""


def _validated(path: Path) -> EngineDocument:
    """Validates the config file in a child process, as ``meshproxy validate`` would, and
    returns it as the engine document. Raises :class:`_Invalid` with the child's report."""
    import subprocess

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


if __name__ == "__main__":
    sys.exit(main())
