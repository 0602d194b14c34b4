"""Endpoints from DNS: a cluster's name resolved again each time its answer's TTL runs out.

The TTL is held between ``min_ttl`` and ``max_ttl``: a TTL of 0 (dnsmasq's default for local
names) would have the sidecar asking without pause, and a day-long one would hide a moved
service. When the DNS does not answer, the last list stays and the source asks again after
``min_ttl``, doubling the wait each time it still does not answer, up to ``max_ttl``.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

from .source import OnUpdate, Settings

log = logging.getLogger("meshproxy")


class DnsSettings(NamedTuple):
    name: str
    record: str
    """``A``, ``AAAA`` or ``SRV``."""
    port: int | None
    """The endpoints' port for A and AAAA records; SRV records carry their own."""
    resolver: tuple[str, int] | None
    """``(ip, port)`` of the DNS server to ask; None: the system's (/etc/resolv.conf)."""
    min_ttl: float
    max_ttl: float

    @classmethod
    def read(cls, settings: Settings) -> DnsSettings:
        """From a cluster's ``discovery`` object as the engine document writes it (validated:
        durations as whole milliseconds, ``"1000ms"``)."""
        resolver = settings.get("resolver")
        return cls(
            name=settings["name"],
            record=settings["record"],
            port=settings.get("port"),
            resolver=_ip_and_port(resolver) if resolver is not None else None,
            min_ttl=_seconds(settings["min_ttl"]),
            max_ttl=_seconds(settings["max_ttl"]),
        )


class DnsSource:
    def __init__(self, cluster: str, settings: DnsSettings) -> None:
        self.cluster = cluster
        self.settings = settings
        at = f" at {_show_resolver(settings.resolver)}" if settings.resolver else ""
        self.description = f"dns {settings.record} {settings.name}{at}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"meshproxy-discovery-dns-{cluster}", daemon=True)
        self._on_update: OnUpdate | None = None
        self._failures = 0
        self._last_problem: str | None = None
        self._delay = settings.min_ttl

    def start(self, on_update: OnUpdate) -> None:
        self._on_update = on_update
        self._delay = self._resolve()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()  # at most one query's lifetime

    def _follow(self) -> None:
        while not self._stop.wait(self._delay):
            self._delay = self._resolve()

    def _resolve(self) -> float:
        """Resolves once, reports the list, and says how long to wait before the next time."""
        from .dns_resolve import Unavailable, resolve, resolver_for  # dnspython: only with a DNS source

        low, high = self.settings.min_ttl, self.settings.max_ttl
        try:
            # A resolver per query: the system's is read from /etc/resolv.conf, which may change.
            answer = resolve(resolver_for(self.settings), self.settings)
        except Unavailable as problem:
            self._failures += 1
            self._say(str(problem), "keeping the last list until it answers", logging.ERROR)
            return min(high, low * 2.0 ** min(self._failures - 1, 30))
        self._failures = 0
        if answer.endpoints:
            if self._last_problem is not None:
                log.info("cluster %s: %s answers again", self.cluster, self.description)
            self._last_problem = None
        else:
            self._say("no records", "the cluster has no endpoints", logging.WARNING)
        if self._on_update is not None and not self._stop.is_set():
            self._on_update(self.cluster, answer.endpoints)
        return min(high, max(low, answer.ttl))

    def _say(self, problem: str, consequence: str, level: int) -> None:
        # A DNS that stays down fails the same way each time; say so once until that changes.
        if problem != self._last_problem:
            log.log(level, "cluster %s: %s: %s; %s", self.cluster, self.description, problem, consequence)
        self._last_problem = problem


def _seconds(duration: str) -> float:
    return int(duration.removesuffix("ms")) / 1000


def _ip_and_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _show_resolver(resolver: tuple[str, int]) -> str:
    ip, port = resolver
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
