"""The registry: which instances of which services are running, each under a lease.

An instance registers when its sidecar's ADS stream starts; its lease is renewed while a stream
of it is connected (at every sweep, at least every lease/4). When its last stream ends, it is
kept until its lease runs out (from the last renewal, so a killed sidecar leaves within its
lease of the kill), so a short disconnect
(a control-plane restart, a network blip) does not drop a healthy instance from its peers'
endpoints; if no stream comes back, the sweep removes it. ``Leave`` removes it at once (a
draining sidecar). Everything is kept in the store, so a restarted control plane serves the
endpoints it knew, each under a fresh lease (at least twice the sidecars' reconnect back-off, so
one still backing off is not dropped), until their sidecars reconnect or it runs out.

Runs on the event loop (no locks): changes call ``on_change`` with the (service, namespace)
pairs whose endpoints changed, which the push machinery debounces.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from meshproxy.mesh.names import RECONNECT_CAP_S, NodeMetadata, app_port, node_id

from .store.base import InstanceRecord, Store

log = logging.getLogger("meshcontrol.registry")

ServiceKey = tuple[str, str]
"""(service, namespace)"""


@dataclass(slots=True)
class Instance:
    node_id: str
    service: str
    namespace: str
    version: str
    address: str
    admin: str
    app_port: int = 0
    """The app's port, learnt at registration: a captured client reaches the app at this
    instance's IP and this port (see ``capture_destination``)."""
    streams: int = 0
    """ADS streams of this node now connected; the lease runs only while there are none."""
    expires: float = 0.0
    """time.monotonic() when the lease runs out (when ``streams`` is 0)."""
    renewed: float = 0.0
    """time.monotonic() of the last renewal while connected."""
    since: float = 0.0
    """time.time() of the registration, for ``meshctl status``."""

    @property
    def key(self) -> ServiceKey:
        return self.service, self.namespace

    @property
    def connected(self) -> bool:
        return self.streams > 0

    def record(self) -> InstanceRecord:
        return InstanceRecord(self.node_id, self.service, self.namespace, self.version, self.address, self.admin,
                              self.app_port)

    @property
    def capture_destination(self) -> str | None:
        """``IP:PORT`` a captured client connects to for this instance (its IP, the app port),
        or None when its app port is unknown."""
        if not self.app_port:
            return None
        return f"{self.address.rpartition(':')[0]}:{self.app_port}"


async def sleep_or_wake(event: asyncio.Event, delay: float) -> None:
    """Waits until ``event`` is set or ``delay`` passes, leaving the event as it was. (Not
    asyncio.wait_for: on Python 3.11 it can swallow a cancellation that comes as the wait ends,
    and a stop would hang.)"""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=delay)
    finally:
        waiter.cancel()


class Registry:
    def __init__(self, store: Store, lease_s: float, on_change: Callable[[set[ServiceKey]], None]) -> None:
        if lease_s <= 0:
            raise ValueError(f"the lease must be positive, got {lease_s}s")
        self.store = store
        self.lease_s = lease_s
        self._on_change = on_change
        self._instances: dict[str, Instance] = {}
        self._by_service: dict[ServiceKey, dict[str, Instance]] = {}
        self._wake = asyncio.Event()
        self.generation = 0
        """Grows with every change: the push machinery tags what it sent with it."""

    # --- reading ------------------------------------------------------------------------

    def get(self, node: str) -> Instance | None:
        return self._instances.get(node)

    def all(self) -> list[Instance]:
        return sorted(self._instances.values(), key=lambda i: (i.namespace, i.service, i.version, i.address))

    def of(self, service: str, namespace: str) -> list[Instance]:
        """The instances of a service, all versions, in a stable order."""
        found = self._by_service.get((service, namespace))
        return sorted(found.values(), key=lambda i: i.address) if found else []

    # --- changing -----------------------------------------------------------------------

    def restore(self) -> None:
        """Takes back the instances the store kept, each under a fresh lease and not connected.
        The lease is at least twice the sidecars' reconnect back-off: each of them learns of the
        restart only at its next attempt."""
        grace = max(self.lease_s, 2 * RECONNECT_CAP_S)
        expires = time.monotonic() + grace
        for record in self.store.instances():
            instance = Instance(*record, streams=0, expires=expires, since=time.time())
            self._add(instance)
        if self._instances:
            log.info("restored %d instance(s) from the store, each for %gs until its sidecar reconnects",
                     len(self._instances), grace)
            self._changed({i.key for i in self._instances.values()})
            self._wake.set()

    def register(self, meta: NodeMetadata) -> str:
        """Registers (or renews) the instance of a stream that starts; returns its node id. The
        same node id, or another one on the same address, is replaced."""
        node = node_id(meta.service, meta.namespace, meta.inbound)
        earlier = self._instances.get(node)
        instance = Instance(node, meta.service, meta.namespace, meta.version, meta.inbound, meta.admin,
                            app_port(meta.app), streams=(earlier.streams if earlier else 0) + 1, since=time.time(),
                            renewed=time.monotonic())
        changed: set[ServiceKey] = set()
        for other in [i for i in self._instances.values() if i.address == instance.address and i.node_id != node]:
            # An address has one instance: a newcomer there means the earlier one is gone.
            changed.add(self._remove(other))
        if earlier is not None:
            self._remove(earlier, persist=False)
            if earlier.record() != instance.record():
                changed |= {earlier.key, instance.key}
            else:
                instance.since = earlier.since
        else:
            changed.add(instance.key)
        self._add(instance)
        if earlier is None or earlier.record() != instance.record():
            self.store.put_instance(instance.record())
        if changed:
            self._changed(changed)
        return node

    def disconnected(self, node: str) -> None:
        """A stream of ``node`` ended: once none is left, its lease starts running."""
        instance = self._instances.get(node)
        if instance is None:
            return  # it left, or was replaced
        instance.streams = max(0, instance.streams - 1)
        if instance.streams == 0:
            instance.expires = instance.renewed + self.lease_s
            self._wake.set()

    def leave(self, node: str) -> bool:
        """Removes ``node`` now; False when it is not registered."""
        instance = self._instances.get(node)
        if instance is None:
            return False
        self._changed({self._remove(instance)})
        log.info("instance %s left", node)
        return True

    def sweep(self, now: float | None = None) -> float | None:
        """Removes the instances whose lease ran out; returns when the next one runs out."""
        now = time.monotonic() if now is None else now
        for instance in self._instances.values():
            if instance.connected:
                instance.renewed = now
        expired = [i for i in self._instances.values() if not i.connected and i.expires <= now]
        if expired:
            changed = {self._remove(i) for i in expired}
            for instance in expired:
                log.info("instance %s removed: its lease (%gs) ran out with no stream connected",
                         instance.node_id, self.lease_s)
            self._changed(changed)
        waiting = [i.expires for i in self._instances.values() if not i.connected]
        return min(waiting) if waiting else None

    async def run(self) -> None:
        """The sweep: wakes when the next lease runs out (and at least every lease/4), so an
        instance leaves within its lease, not a sweep period later."""
        while True:
            next_expiry = self.sweep()
            delay = self.lease_s / 4
            if next_expiry is not None:
                delay = min(delay, max(0.0, next_expiry - time.monotonic()) + 0.005)
            self._wake.clear()
            await sleep_or_wake(self._wake, delay)

    # --- the indexes --------------------------------------------------------------------

    def _add(self, instance: Instance) -> None:
        self._instances[instance.node_id] = instance
        self._by_service.setdefault(instance.key, {})[instance.node_id] = instance

    def _remove(self, instance: Instance, *, persist: bool = True) -> ServiceKey:
        del self._instances[instance.node_id]
        members = self._by_service[instance.key]
        del members[instance.node_id]
        if not members:
            del self._by_service[instance.key]
        if persist:
            self.store.remove_instance(instance.node_id)
        return instance.key

    def _changed(self, services: set[ServiceKey]) -> None:
        self.generation += 1
        self._on_change(services)
