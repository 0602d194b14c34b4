"""A whole mesh on loopback for tests and benchmarks: a real ``meshctl serve`` process, real
``meshproxy run --control`` sidecars joined by tokens, and real apps behind them.

    with LocalMesh(tmp_path, lease="3s") as mesh:
        mesh.apply(MESH_YAML)
        orders = mesh.sidecar("orders", version="v1", app=start_upstream("orders-v1"))
        frontend = mesh.sidecar("frontend", app=start_upstream("frontend"))
        mesh.wait_acked()                       # every sidecar ACKed the newest config
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from processes import LoggedProcess, bound_addresses, free_address
from upstreams import Upstream, start_upstreams_together, wait_until

BIN = Path(sys.executable).parent
MESHCTL = str(BIN / "meshctl")
TYPES = ("clusters", "endpoints", "listeners", "routes", "secrets")


class Sidecar(LoggedProcess):
    def __init__(self, command: list[str], name: str, service: str, namespace: str, version: str) -> None:
        super().__init__(command, name)
        self.service, self.namespace, self.version = service, namespace, version
        self.listeners: dict[str, str] = {}
        self.admin = ""

    def wait_ready(self, timeout: float = 60) -> Sidecar:
        """Until the engine runs and ``/ready`` answers 200: it has its first config."""
        self.wait_for_line(r"ready:", timeout)
        listeners, admin = bound_addresses(self.lines)
        self.listeners.update(listeners)
        self.admin = admin or self.admin
        wait_until(self._ready, timeout=timeout, what=f"{self.name}'s /ready")
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"http://{self.admin}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def outbound(self) -> str:
        return self.listeners["outbound"]

    @property
    def inbound(self) -> str:
        return self.listeners["inbound"]

    def endpoints(self, cluster: str) -> list[str]:
        """The endpoint addresses the sidecar's engine runs for ``cluster`` now."""
        clusters = httpx.get(f"http://{self.admin}/clusters", timeout=10).json()
        return sorted(e["address"] for e in clusters.get(cluster, {}).get("endpoints", []))


class LocalMesh:
    """``meshctl serve`` in ``folder`` plus the sidecars the test starts; all stopped on exit."""

    def __init__(self, folder: Path, *, lease: str = "10s", extra: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.data = folder / "mesh"
        self.grpc = free_address()
        self.api = free_address()
        self.lease = lease
        self.extra = extra
        self.server: LoggedProcess | None = None
        self.sidecars: list[Sidecar] = []

    # --- the control plane -------------------------------------------------------------

    def start(self) -> LocalMesh:
        self.server = LoggedProcess(
            [MESHCTL, "serve", "--data", str(self.data), "--grpc", self.grpc, "--api", self.api,
             "--lease", self.lease, *self.extra], "meshctl serve")
        wait_until(self._api_ready, timeout=30, what="meshctl serve's API")
        return self

    def _api_ready(self) -> bool:
        assert self.server is not None
        if self.server.process.poll() is not None:
            raise RuntimeError(f"meshctl serve exited ({self.server.process.returncode}):\n{self.server.log()}")
        try:
            return httpx.get(f"http://{self.api}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop_server(self, sig: int = signal.SIGTERM) -> None:
        if self.server is not None:
            self.server.stop(sig)

    def __enter__(self) -> LocalMesh:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        for sidecar in self.sidecars:
            sidecar.stop(timeout=15)
        self.stop_server()

    def meshctl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([MESHCTL, "--server", f"http://{self.api}", *args], input=input,
                                capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"meshctl {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def apply(self, documents: str) -> None:
        self.meshctl("apply", "-f", "-", input=documents)

    def token(self, service: str, namespace: str = "default", *extra: str) -> Path:
        path = self.folder / f"{service}.{namespace}.{len(list(self.folder.glob('*.token')))}.token"
        path.write_text(self.meshctl("token", "create", "--service", service, "--namespace", namespace, *extra).stdout)
        return path

    def status(self) -> list[dict[str, Any]]:
        """``meshctl status -o json``, read from the API directly: polled, a process per call
        would be too slow to time a push."""
        rows: list[dict[str, Any]] = httpx.get(f"http://{self.api}/v1/status", timeout=10).json()
        return rows

    def wait_acked(self, timeout: float = 15) -> None:
        """Until every connected sidecar has ACKed what was last sent of every type."""

        def acked() -> bool:
            rows = [row for row in self.status() if row.get("connected")]
            return bool(rows) and all(
                row["types"][t]["acked"] == row["types"][t]["sent"] for row in rows for t in row["types"])

        wait_until(acked, timeout=timeout, what="every sidecar to ACK")

    # --- sidecars ------------------------------------------------------------------------

    def sidecar(self, service: str, *, app: str, namespace: str = "default", version: str = "v1",
                token: Path | None = None, inbound: str = "127.0.0.1:0", outbound: str | None = None,
                admin: str | None = None, state: Path | None = None, wait: bool = True) -> Sidecar:
        index = len(self.sidecars)
        command = [
            str(BIN / "meshproxy"), "run", "--control", self.grpc,
            "--token-file", str(token or self.token(service, namespace)),
            "--service", service, "--namespace", namespace, "--version", version, "--app", app,
            "--inbound", inbound, "--outbound", outbound or free_address(), "--admin", admin or free_address(),
            "--state-dir", str(state or self.folder / f"state-{service}-{namespace}-{version}-{index}"),
            "--drain-timeout", "5",
        ]
        sidecar = Sidecar(command, f"sidecar {service}.{namespace} {version} #{index}", service, namespace, version)
        self.sidecars.append(sidecar)
        if wait:
            sidecar.wait_ready()
        return sidecar

    def caller_of(self, apps: Iterable[tuple[str, str]], sees: Mapping[str, int], *, caller: str = "frontend",
                  namespace: str = "default") -> Sidecar:
        """A sidecar for each of ``apps`` (service, its app's address) and one for ``caller`` (no
        app), which is returned once it has ``sees[cluster]`` endpoints in each cluster and every
        sidecar ACKed."""
        calling = self.sidecar(caller, namespace=namespace, app="127.0.0.1:9")
        for service, app in apps:
            self.sidecar(service, namespace=namespace, app=app)
        until(lambda: all(len(calling.endpoints(cluster)) == count for cluster, count in sees.items()),
              what=f"{caller} to see {', '.join(sees)}")
        self.wait_acked()
        return calling

    def restart(self, sidecar: Sidecar) -> Sidecar:
        """The same command again (same state folder and addresses), after the old one stopped."""
        again = Sidecar(sidecar.command, sidecar.name + " (restarted)", sidecar.service, sidecar.namespace,
                        sidecar.version)
        self.sidecars.append(again)
        return again.wait_ready()


def apps_by_name(*names: str) -> Iterator[dict[str, Upstream]]:
    """The apps behind a test's sidecars, started together and stopped together, for an
    ``apps`` fixture to ``yield from``."""
    upstreams = start_upstreams_together(list(names))
    try:
        yield {upstream.name: upstream for upstream in upstreams}
    finally:
        upstreams[0].stop()  # one process serves them all


def until(condition: Callable[[], bool], timeout: float = 15, what: str = "condition") -> float:
    """Waits like ``wait_until`` and returns how long it took, in seconds."""
    started = time.monotonic()
    wait_until(condition, timeout=timeout, what=what)
    return time.monotonic() - started


os.environ.setdefault("NO_PROXY", "*")
