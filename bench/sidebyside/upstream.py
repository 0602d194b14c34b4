"""The upstream every target forwards to: one nginx worker on the load core, answering a fixed
body over HTTP/1.1 on one port and h2c on another (configs/upstream-nginx.conf)."""

from __future__ import annotations

from pathlib import Path

from .anchors import Anchors
from .cores import LOAD_CORE
from .probe import check_forwarding
from .servers import Server
from .templates import render


class Upstream:
    def __init__(self, anchors: Anchors, workdir: Path, h1_port: int, h2c_port: int) -> None:
        self.h1_port, self.h2c_port = h1_port, h2c_port
        values = {"workdir": workdir, "upstream_h1": self.h1_port, "upstream_h2c": self.h2c_port}
        config = render("upstream-nginx.conf", values, workdir)
        self.server = Server(
            "upstream nginx",
            [str(anchors.nginx), "-p", str(workdir), "-c", str(config), "-e", "stderr"],
            LOAD_CORE,
            workdir / "upstream-nginx.log",
        )

    def start(self) -> None:
        """Starts nginx and proves both ports answer."""
        self.server.start([self.h1_port, self.h2c_port])
        check_forwarding(self.h1_port, h2c=False)
        check_forwarding(self.h2c_port, h2c=True)

    def stop(self) -> None:
        self.server.stop()
