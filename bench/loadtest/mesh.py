"""The mesh under load: three `orders` upstreams and a `meshproxy run` in front of them.

`Mesh` is a context manager: on entry every upstream serves and the proxy's /ready answers 200;
on exit the proxy gets SIGTERM (and drains) and the upstreams are stopped, also when the body
raised. Processes log to files in the output directory.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx

# The bench's shared lifecycle (sidebyside/) is one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidebyside.lifecycle import Lifecycle, stop_process, wait_ready  # needs the path above
from sidebyside.ports import free_ports

UPSTREAM = Path(__file__).with_name("upstream.py")
LISTENER = "outbound"
# The README's example mesh: v1 on two endpoints (weights 1 and 2), v2 on one; a 90/10 split
# and a header route sending the beta channel to v2.
UPSTREAMS = [("orders-v1", "v1", 1), ("orders-v1", "v1", 2), ("orders-v2", "v2", 1)]
CONFIG = """\
admin:
  address: 127.0.0.1:{admin_port}
listeners:
  - name: {listener}
    address: 127.0.0.1:{listener_port}
    routes:
      - name: beta
        match: {{host: orders, headers: {{x-channel: beta}}}}
        cluster: orders-v2
      - name: split
        match: {{host: orders, path_prefix: /}}
        split:
          - {{cluster: orders-v1, weight: 90}}
          - {{cluster: orders-v2, weight: 10}}
clusters:
{clusters}
"""


class Mesh(Lifecycle):
    def __init__(
        self,
        meshproxy: Path,
        directory: Path,
        workers: int | None = None,
        ready_timeout: float = 15.0,
    ) -> None:
        self.meshproxy = meshproxy
        self.directory = directory
        self.workers = workers
        self.ready_timeout = ready_timeout
        self.listener_address = ""
        self.admin_address = ""
        self._upstreams: list[subprocess.Popen[bytes]] = []
        self._proxy: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        endpoints: dict[str, list[str]] = {}
        for cluster, name, weight in UPSTREAMS:
            address = self._start_upstream(name, len(self._upstreams))
            endpoints.setdefault(cluster, []).append(
                f"      - {{address: {address}, weight: {weight}}}"
            )
        clusters = "\n".join(
            f"  - name: {cluster}\n    endpoints:\n" + "\n".join(lines)
            for cluster, lines in endpoints.items()
        )
        # The engine binds the listener and admin ports itself; these are free ports of the
        # loopback, taken the moment before the proxy starts.
        listener_port, admin_port = free_ports(2)
        config = self.directory / "meshproxy.yaml"
        config.write_text(
            CONFIG.format(
                admin_port=admin_port,
                listener=LISTENER,
                listener_port=listener_port,
                clusters=clusters,
            )
        )
        self.listener_address = f"127.0.0.1:{listener_port}"
        self.admin_address = f"127.0.0.1:{admin_port}"

        command = [str(self.meshproxy), "run", "--config", str(config), "--drain-timeout", "5"]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        with open(self.directory / "meshproxy.log", "wb") as log:
            self._proxy = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready()

    def _start_upstream(self, name: str, index: int) -> str:
        with socket.socket() as listening:
            listening.bind(("127.0.0.1", 0))
            listening.listen(1024)
            with open(self.directory / f"upstream-{index}-{name}.log", "wb") as log:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        str(UPSTREAM),
                        "--name",
                        name,
                        "--fd",
                        str(listening.fileno()),
                    ],
                    pass_fds=[listening.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self._upstreams.append(process)
            host, port = listening.getsockname()
        # The socket listens before the child starts: connections queue until it accepts.
        return f"{host}:{port}"

    def _wait_ready(self) -> None:
        proxy = self._proxy
        assert proxy is not None

        def ready() -> bool:
            try:
                return admin_get(self.admin_address, "/ready")[0] == 200
            except httpx.TransportError:
                return False

        if wait_ready(ready, lambda: proxy.poll() is None, self.ready_timeout, interval=0.05):
            return
        if proxy.poll() is not None:
            log = (self.directory / "meshproxy.log").read_text(errors="replace")
            raise RuntimeError(
                f"meshproxy exited with status {proxy.returncode} before it was ready:\n{log}"
            )
        raise RuntimeError(
            f"meshproxy's admin http://{self.admin_address}/ready did not answer 200 within {self.ready_timeout:g}s"
        )

    def stop(self) -> None:
        """SIGTERM to the proxy (it drains, then exits), then the upstreams; idempotent."""
        if self._proxy is not None and not stop_process(self._proxy, 15):
            print("meshproxy did not exit within 15s of SIGTERM; killed it", file=sys.stderr)
        for process in self._upstreams:
            stop_process(process, 5)

    @property
    def proxy_exit_status(self) -> int | None:
        return None if self._proxy is None else self._proxy.poll()


def admin_get(address: str, path: str) -> tuple[int, bytes]:
    response = httpx.get(f"http://{address}{path}", timeout=5)
    return response.status_code, response.content
