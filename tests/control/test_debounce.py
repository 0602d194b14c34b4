"""Pushes wait for a quiet debounce window after a change, but never more than a second after
the first change of a burst, so a steady stream of changes cannot hold pushes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from meshcontrol.ca import CertificateAuthority
from meshcontrol.identity import Authenticator
from meshcontrol.registry import Registry
from meshcontrol.store.sqlite import SqliteStore
from meshcontrol.telemetry import Telemetry
from meshcontrol.xds.server import MAX_DEBOUNCE_S, AdsServer
from meshcontrol.xds.snapshot import Snapshots


def pushes_for(tmp_path: Path, changes_every: float, changing_for: float, debounce: float) -> list[float]:
    """When pushes happen (seconds after the first change) for changes at a steady rate."""
    store = SqliteStore(tmp_path / "mesh")
    ca = CertificateAuthority.open(store, "mesh.local")

    async def run() -> list[float]:
        registry = Registry(store, 10, lambda _: None)
        snapshots = Snapshots(registry, ca.bundle_pem(), "mesh.local")
        ads = AdsServer(store, registry, snapshots, ca, Authenticator(ca, store, lambda: "mesh.local"), Telemetry(),
                        debounce)
        ads.start([])
        pushed: list[float] = []
        start = time.monotonic()
        ads._push = lambda *_: pushed.append(time.monotonic() - start)  # type: ignore[method-assign]
        pusher = asyncio.create_task(ads.run())
        while time.monotonic() - start < changing_for:
            ads.store_changed(0)
            await asyncio.sleep(changes_every)
        await asyncio.sleep(debounce * 3)
        pusher.cancel()
        return pushed

    return asyncio.run(run())


def test_a_burst_of_changes_makes_one_push_after_the_quiet_window(tmp_path: Path) -> None:
    pushed = pushes_for(tmp_path, changes_every=0.02, changing_for=0.3, debounce=0.1)
    assert len(pushed) == 1
    assert 0.3 + 0.1 - 0.03 <= pushed[0] < 0.3 + 0.1 + 0.1


def test_steady_changes_are_pushed_at_least_every_second(tmp_path: Path) -> None:
    pushed = pushes_for(tmp_path, changes_every=0.05, changing_for=2.5, debounce=0.1)
    # Never quiet for 100 ms: the cap pushes each second, then the quiet window ends the last burst.
    assert len(pushed) == 3
    assert [round(p) for p in pushed[:2]] == [round(MAX_DEBOUNCE_S), round(2 * MAX_DEBOUNCE_S)]
