"""The upstream and every proxy under test, started side by side and stopped on exit.

The proxies share core 0, one worker each; only the one under load does any work. The upstream
shares core 1 with the load tool (and this runner), so every proxy gets a core to itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .anchors import Anchors
from .cores import PROXY_CORE
from .lifecycle import UpstreamAndProxies
from .ports import free_ports
from .probe import check_forwarding
from .proxies import PROXIES, Proxy
from .servers import Server
from .targets import SIDECAR_ROUTES, Target
from .templates import render
from .upstream import Upstream

if TYPE_CHECKING:
    from .scenarios import Scenario


class Lineup(UpstreamAndProxies):
    """`exclusive`: only the target being measured runs; the others are paused (SIGSTOP), for a
    line-up with a proxy that spins even when idle (HAProxy's busy-polling)."""

    def __init__(
        self,
        anchors: Anchors,
        workdir: Path,
        proxies: tuple[Proxy, ...] = PROXIES,
        exclusive: bool = False,
    ) -> None:
        self._anchors = anchors
        self._exclusive = exclusive
        self._workdir = workdir
        # All ports in one call: the kernel cannot hand out the same one twice.
        up_h1, up_h2c, *listen = free_ports(2 + len(SIDECAR_ROUTES) * len(proxies))
        self.upstream = Upstream(anchors, workdir, up_h1, up_h2c)
        self._values: dict[str, object] = {
            "workdir": workdir,
            "upstream_h1": self.upstream.h1_port,
            "upstream_h2c": self.upstream.h2c_port,
        }
        self.targets: list[Target] = []
        self._proxies: dict[str, Proxy] = {}
        for index, proxy in enumerate(proxies):
            width = len(SIDECAR_ROUTES)
            ports = dict(zip(SIDECAR_ROUTES, listen[width * index : width * (index + 1)]))
            for route in proxy.unsupported:
                del ports[route]
            self.targets.append(Target(proxy.name, ports, dict(proxy.unsupported)))
            self._proxies[proxy.name] = proxy
        direct = dict(zip(SIDECAR_ROUTES, (up_h1, up_h2c, up_h2c, up_h1), strict=True))
        self.targets.append(Target("direct", direct, direct=True))

    def targets_for(self, scenario: Scenario) -> list[Target]:
        """Every proxy serves every scenario of this lineup (or says why not: `unsupported`)."""
        return self.targets

    def focus(self, measured: Target) -> None:
        """Called before each run of `measured`: in an exclusive line-up, pauses every other
        proxy and resumes this one."""
        if not self._exclusive:
            return
        for target in self.targets:
            for server in target.servers:
                if target is measured:
                    server.resume()
                else:
                    server.pause()

    def start_proxies(self) -> None:
        """Starts every proxy and proves each of its listeners forwards. A proxy that fails is
        marked broken, with the reason, and the others go on."""
        for target in self.targets:
            if not target.direct:
                self._start(target)

    def stop_proxies(self) -> None:
        for target in self.targets:
            for server in target.servers:
                server.stop()

    def _start(self, target: Target) -> None:
        proxy = self._proxies[target.name]
        values = {**self._values, **proxy.values}
        values.update({f"listen_{route.value}": port for route, port in target.ports.items()})
        config = render(proxy.template, values, self._workdir)
        argv = proxy.argv(self._anchors, config, self._workdir)
        server = Server(proxy.name, argv, PROXY_CORE, self._workdir / f"{proxy.name}.log")
        target.servers = (server,)
        target.broken = None
        try:
            server.start(list(target.ports.values()))
        except RuntimeError as error:  # it says why, with the server's log
            target.broken = str(error)
            return
        for route, port in target.ports.items():
            try:
                check_forwarding(port, h2c=route.downstream_h2c)
            except RuntimeError as error:
                target.broken = (
                    f"its {route.value} listener: {error}; its log:\n{server.log_tail()}"
                )
                server.stop()
                return
