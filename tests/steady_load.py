"""Continuous, bounded HTTP/1.1 load from a few client threads, counting every outcome: for
checks that something (a config swap) happens under traffic without failing a request.

    with SteadyLoad(f"http://{address}", host="live.mesh.local") as load:
        ...                                     # reload, wait for load.count() to grow, ...
    assert load.failures() == []
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from types import TracebackType

import httpx


class SteadyLoad:
    """``clients`` threads each send GET requests back to back until stopped, or until
    ``max_requests`` each or ``max_seconds`` have passed (a load test always ends)."""

    def __init__(
        self, base_url: str, *, host: str, clients: int = 4, max_requests: int = 50_000, max_seconds: float = 120
    ) -> None:
        self._base_url = base_url
        self._host = host
        self._max_requests = max_requests
        self._deadline = time.monotonic() + max_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._statuses: Counter[int] = Counter()
        self._upstreams: Counter[str] = Counter()
        self._errors: list[str] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def count(self) -> int:
        with self._lock:
            return sum(self._statuses.values()) + len(self._errors)

    def failures(self) -> list[str]:
        """Every request that did not get a 200: its status or its error."""
        with self._lock:
            bad = [f"status {status} x{n}" for status, n in self._statuses.items() if status != 200]
            return bad + self._errors

    def upstreams(self) -> Counter[str]:
        """How many 200s each upstream (its ``x-upstream`` header) answered."""
        with self._lock:
            return Counter(self._upstreams)

    def _run(self) -> None:
        with httpx.Client(base_url=self._base_url, headers={"host": self._host}, timeout=30) as client:
            for _ in range(self._max_requests):
                if self._stop.is_set() or time.monotonic() > self._deadline:
                    return
                try:
                    response = client.get("/")
                except httpx.HTTPError as error:
                    with self._lock:
                        self._errors.append(f"{type(error).__name__}: {error}")
                    continue
                with self._lock:
                    self._statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self._upstreams[response.headers.get("x-upstream", "?")] += 1
