"""The upstream and every proxy under test, started side by side and stopped on exit.

The proxies share core 0, one worker each; only the one under load does any work. The upstream
shares core 1 with the load tool (and this runner), so every proxy gets a core to itself.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

from .anchors import Anchors
from .ports import free_ports
from .probe import check_forwarding
from .proxies import PROXIES, Proxy
from .servers import Server
from .targets import Route, Target
from .templates import render

PROXY_CORE = 0
LOAD_CORE = 1


class Lineup:
    def __init__(self, anchors: Anchors, workdir: Path) -> None:
        self._anchors = anchors
        self._workdir = workdir
        up_h1, up_h2c, *listen = free_ports(2 + 3 * len(PROXIES))
        self._upstream_ports = [up_h1, up_h2c]
        self._values: dict[str, object] = {
            "workdir": workdir,
            "upstream_h1": up_h1,
            "upstream_h2c": up_h2c,
        }
        config = render("upstream-nginx.conf", self._values, workdir)
        self.upstream = Server(
            "upstream nginx",
            [str(anchors.nginx), "-p", str(workdir), "-c", str(config), "-e", "stderr"],
            LOAD_CORE,
            workdir / "upstream-nginx.log",
        )
        self.targets: list[Target] = []
        self._proxies: dict[str, Proxy] = {}
        for index, proxy in enumerate(PROXIES):
            ports = dict(zip(Route, listen[3 * index : 3 * index + 3]))
            for route in proxy.unsupported:
                del ports[route]
            self.targets.append(Target(proxy.name, ports, dict(proxy.unsupported)))
            self._proxies[proxy.name] = proxy
        direct = {Route.H1_H1: up_h1, Route.H2C_H1: up_h2c, Route.H2C_H2C: up_h2c}
        self.targets.append(Target("direct", direct, direct=True))

    def __enter__(self) -> Self:
        try:
            self.upstream.start(self._upstream_ports)
            up_h1, up_h2c = self._upstream_ports
            check_forwarding(up_h1, h2c=False)
            check_forwarding(up_h2c, h2c=True)
            self.start_proxies()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start_proxies(self) -> None:
        """Starts every proxy and proves each of its listeners forwards. A proxy that fails is
        marked broken, with the reason, and the others go on."""
        for target in self.targets:
            if not target.direct:
                self._start(target)

    def restart_proxies(self) -> None:
        """Fresh processes, for figures that must not carry what earlier runs left behind."""
        for target in self.targets:
            if target.server is not None:
                target.server.stop()
        self.start_proxies()

    def stop(self) -> None:
        for target in self.targets:
            if target.server is not None:
                target.server.stop()
        self.upstream.stop()

    def _start(self, target: Target) -> None:
        proxy = self._proxies[target.name]
        values = dict(self._values)
        values.update({f"listen_{route.value}": port for route, port in target.ports.items()})
        config = render(proxy.template, values, self._workdir)
        argv = proxy.argv(self._anchors, config, self._workdir)
        target.server = Server(proxy.name, argv, PROXY_CORE, self._workdir / f"{proxy.name}.log")
        target.broken = None
        try:
            target.server.start(list(target.ports.values()))
        except RuntimeError as error:  # it says why, with the server's log
            target.broken = str(error)
            return
        for route, port in target.ports.items():
            try:
                check_forwarding(port, h2c=route.downstream_h2c)
            except RuntimeError as error:
                target.broken = (
                    f"its {route.value} listener: {error}; its log:\n{target.server.log_tail()}"
                )
                target.server.stop()
                return
