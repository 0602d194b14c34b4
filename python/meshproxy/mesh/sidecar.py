"""``meshproxy run --control``: a sidecar that follows the control plane instead of a config file.

    start   the saved config (a restart: serves at once, control plane or not), else join with the
            token and run the base config (inbound listener to the app, outbound with no routes)
    then    register the inbound address the engine bound (ADS node metadata), apply each push
            through the reload path, renew the certificate at half-life
    SIGTERM Mesh.Leave (peers drop this instance and ACK that), then the usual drain

The mesh client (join, renewals, the ADS stream, Leave) runs on an asyncio loop of its own
thread; the main thread starts the engine and waits for signals, as in file mode. Nothing here
imports the config schema: every config is validated by the child ``meshproxy validate`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .. import _native
from . import mesh_pb2, names
from .channel import Target, unary, verified
from .identity import Identity, JoinRefused, describe
from .join_token import JoinToken
from .state import IdentityRecord, StateDir, default_state_dir

if TYPE_CHECKING:
    from ..engine_document import EngineDocument
    from ..proxy import Proxy
    from .translate import Local

log = logging.getLogger("meshproxy")

T = TypeVar("T")
LEAVE = "/meshproxy.mesh.v1.Mesh/Leave"
# How long peers get to drop this instance before its inbound listener closes; Leave answers
# sooner once they have ACKed endpoints without it.
LEAVE_WAIT_MS = 2000


class Stopped(Exception):
    """SIGINT or SIGTERM arrived while the sidecar was starting."""


def run_control(args: argparse.Namespace, signals: set[signal.Signals], validate: Callable[[Path], EngineDocument],
                announce: Callable[[Proxy, EngineDocument], None]) -> int:
    """Runs until SIGINT/SIGTERM; returns the exit status. ``validate`` checks a config file in a
    child (ValueError with the report), ``announce`` logs the bound listeners as file mode does."""
    try:
        token = _read_token(args.token_file)
        namespace = _check_token(token, args.service, args.namespace)
        target = Target.parse(args.control)
    except ValueError as error:
        print(f"meshproxy run: {error}", file=sys.stderr)
        return 1
    state = StateDir(args.state_dir or default_state_dir(namespace, args.service, args.version, args.outbound))
    state.create()
    mesh = MeshLoop()
    mesh.start()
    try:
        identity = Identity(target, token, state)
        record = _identity(identity, mesh, signals)
        started = _start_engine(args, state, record, validate)
    except Stopped:
        mesh.stop()
        return 0
    except (JoinRefused, ValueError, OSError) as error:
        mesh.stop()
        print(f"meshproxy run: {error}", file=sys.stderr)
        return 1
    proxy, document, local, config = started
    announce(proxy, document)
    bound = proxy.address(names.INBOUND)
    state.save_inbound(bound)
    node_id = names.node_id(args.service, namespace, bound)
    metadata = names.NodeMetadata(args.service, namespace, args.version, inbound=bound,
                                  admin=proxy.admin_address or "", outbound=proxy.address(names.OUTBOUND), app=args.app,
                                  capture=",".join(args.capture or ()))
    from .ads import AdsClient
    from .apply import Applier

    applier = Applier(proxy, state, local, validate, config)

    def tls() -> Any:
        return verified(state.bundle.read_text(), state.cert, state.key)

    ads = AdsClient(target, node_id, metadata, tls, applier, identity.renew_soon)

    async def renewed(new: IdentityRecord) -> None:
        if new.trust_domain != applier.local.trust_domain:
            # The engine takes a certificate of another trust domain only with a config of it:
            # the next apply brings both.
            applier.local = applier.local._replace(trust_domain=new.trust_domain)
            log.info("certificate renewed into trust domain %s: %s, valid until %s", new.trust_domain,
                     new.spiffe_id, _when(new.not_after))
            ads.poke()
            return
        try:
            await asyncio.to_thread(applier.reload_identity)
        except ValueError as error:
            log.error("renewed certificate refused by the engine, keeping the current one: %s", error)
            return
        log.info("certificate renewed: %s, valid until %s", new.spiffe_id, _when(new.not_after))

    mesh.submit(ads.run())
    mesh.submit(identity.keep_renewed(renewed))
    log.info("following the control plane at %s as node %s (state in %s)", target, node_id, state.path)
    while True:
        received = signal.sigwait(signals)
        if received != signal.SIGHUP:
            break
        from ..reloads import Refused, reload_and_log

        try:
            reload_and_log(proxy, "SIGHUP")
        except Refused:
            pass
    log.info("%s received: leaving the mesh, then draining for up to %gs", signal.Signals(received).name,
             args.drain_timeout)
    _leave(mesh, target, tls, node_id)
    mesh.stop()
    proxy.stop()
    log.info("stopped")
    return 0


# === Starting ===


def _read_token(path: Path) -> JoinToken:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ValueError(f"--token-file {path}: cannot read it: {error.strerror or error}") from None
    try:
        return JoinToken.decode(text)
    except ValueError as error:
        raise ValueError(f"--token-file {path}: {error}") from None


def _check_token(token: JoinToken, service: str, namespace: str | None) -> str:
    """The namespace to run in: --namespace, else the token's; the token must name both."""
    namespace = namespace or token.namespace
    if (service, namespace) != (token.service, token.namespace):
        raise ValueError(f"the join token is for service {token.service!r} in namespace {token.namespace!r}, not "
                         f"{service!r} in {namespace!r}; make one with 'meshctl token create --service {service} "
                         f"--namespace {namespace}'")
    return namespace


def _identity(identity: Identity, mesh: MeshLoop, signals: set[signal.Signals]) -> IdentityRecord:
    """The saved certificate while it is valid, else a new one (joining, waiting for the control
    plane as long as it takes)."""
    record = identity.record
    if record is not None and not record.expired():
        log.info("identity %s from %s, valid until %s", record.spiffe_id, identity.state.path,
                 _when(record.not_after))
        return record

    def unreachable(error: str, delay: float) -> None:
        log.warning("control plane at %s unreachable (%s); retrying the join in %.1fs", identity.target, error, delay)

    record = mesh.wait(identity.join_until_joined(unreachable), signals)
    log.info("joined the mesh as %s, certificate valid until %s", record.spiffe_id, _when(record.not_after))
    return record


def _start_engine(args: argparse.Namespace, state: StateDir, record: IdentityRecord,
                  validate: Callable[[Path], EngineDocument]) -> tuple[Proxy, EngineDocument, Local, dict[str, Any]]:
    """Starts the engine on the saved config, else on the base config. With --inbound port 0
    the port bound last time is tried first: peers may still have it (the control plane is
    down, or has not seen the restart yet)."""
    from ..proxy import Proxy
    from .translate import Local, base_config

    addresses = [args.inbound]
    last = state.last_inbound()
    if args.inbound.endswith(":0") and last is not None and last.rpartition(":")[0] == args.inbound[:-2]:
        addresses.insert(0, last)
    saved = state.saved_config()
    for address in addresses:
        local = Local(inbound=address, outbound=args.outbound, admin=args.admin, app=args.app,
                      trust_domain=record.trust_domain, cert=str(state.cert), key=str(state.key),
                      bundle=str(state.bundle))
        config = _with_local(saved, local) if saved is not None else base_config(local)
        try:
            document = validate(state.write_next_config(config))
        except ValueError as refusal:
            if saved is None:
                raise
            log.warning("the saved config is refused, starting from the base config:\n%s", refusal)
            saved, config = None, base_config(local)
            document = validate(state.write_next_config(config))
        # The identity files are not watched: the renewal rewrites them and has the engine read
        # them then; a watch would also wake on every config the folder takes.
        proxy = Proxy(document, workers=args.workers, drain_timeout=args.drain_timeout,
                      source=lambda: validate(state.config), watch_identity=False)
        try:
            proxy.start()
        except OSError as error:
            if address is not addresses[-1]:
                log.info("inbound %s (bound last time) is taken (%s); binding %s", address, error, addresses[-1])
                continue
            raise
        except _native.ConfigRejected as error:
            raise ValueError(f"{state.next_config}: {error}") from None
        state.keep_next_config()
        if saved is not None:
            log.info("serving the saved config from %s until the control plane answers", state.config)
        else:
            # Routes and peers come with the first push: the app should not call out before.
            proxy.hold_ready("waiting for the first config from the control plane")
        return proxy, document._replace(source=str(state.config)), local, config
    raise AssertionError("unreachable")


def _with_local(saved: dict[str, Any], local: Local) -> dict[str, Any]:
    """The saved config with this start's own addresses and credentials (the flags may differ
    from the last run's)."""
    from .translate import base_config

    base = base_config(local)
    config = {**saved, "identity": base["identity"]}
    if "admin" in base:
        config["admin"] = base["admin"]
    else:
        config.pop("admin", None)
    own = {names.INBOUND: local.inbound, names.OUTBOUND: local.outbound}
    config["listeners"] = [{**listener, "address": own.get(listener.get("name"), listener.get("address"))}
                           for listener in saved.get("listeners", [])]
    app = [{"address": local.app, "weight": 1}]
    config["clusters"] = [{**cluster, "endpoints": app} if cluster.get("name") == names.APP_CLUSTER else cluster
                          for cluster in saved.get("clusters", [])]
    return config


# === Leaving ===


def _leave(mesh: MeshLoop, target: Target, tls: Callable[[], Any], node_id: str) -> None:
    """Mesh.Leave, waiting at most about LEAVE_WAIT_MS: a control plane that is down does not
    hold up the drain."""
    async def leave() -> mesh_pb2.LeaveResponse:
        timeout = LEAVE_WAIT_MS / 1000 + 1
        return await asyncio.wait_for(unary(target, tls(), LEAVE, mesh_pb2.LeaveRequest(
            node_id=node_id, wait_ms=LEAVE_WAIT_MS), mesh_pb2.LeaveResponse, timeout=timeout), timeout)

    started = time.monotonic()
    try:
        answer = mesh.submit(leave()).result()
    except Exception as error:  # noqa: BLE001 (whatever failed, the drain goes on)
        log.warning("could not leave the mesh (%s); draining anyway: peers drop this instance when its lease "
                    "runs out", describe(error))
        return
    log.info("left the mesh in %.2fs: %d peer(s) confirmed they stopped sending here, %d did not in time",
             time.monotonic() - started, answer.acknowledged, answer.pending)


# === The mesh client's thread ===


class MeshLoop:
    """An asyncio loop on a thread of its own, for the mesh client's coroutines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="meshproxy-mesh", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def wait(self, coroutine: Coroutine[Any, Any, T], signals: set[signal.Signals]) -> T:
        """The coroutine's result; raises Stopped (cancelling it) on SIGINT or SIGTERM."""
        future = self.submit(coroutine)
        while True:
            try:
                return future.result(timeout=0)
            except concurrent.futures.TimeoutError:
                pass
            # Signals stay blocked (sigwait takes them later); look for one now and then.
            caught = signal.sigtimedwait(signals, 0.1)
            if caught is not None and caught.si_signo != signal.SIGHUP:
                future.cancel()
                log.info("%s received while starting: stopping", signal.Signals(caught.si_signo).name)
                raise Stopped()

    def stop(self) -> None:
        """Cancels every task and ends the thread."""
        async def cancel_all() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if not self._thread.is_alive():
            return
        try:
            self.submit(cancel_all()).result(timeout=5)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
