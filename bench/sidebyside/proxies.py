"""How each proxy under test is configured and started: one worker each, its config template
in configs/, and the routes it cannot serve."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .anchors import Anchors
from .targets import Route


@dataclass(frozen=True)
class Proxy:
    name: str
    template: str
    argv: Callable[[Anchors, Path, Path], list[str]]  # (anchors, config, workdir) -> command
    unsupported: dict[Route, str] = field(default_factory=dict)


PROXIES = (
    Proxy(
        name="meshproxy",
        template="meshproxy.yaml",
        argv=lambda bins, config, _: [
            str(bins.meshproxy),
            "run",
            "-c",
            str(config),
            "--workers",
            "1",
            "--drain-timeout",
            "1",
        ],
    ),
    Proxy(
        name="envoy",
        template="envoy.yaml",
        argv=lambda bins, config, _: [
            # No hot restart: no shared-memory region to set up, and no clash between runs.
            str(bins.envoy),
            "-c",
            str(config),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "warn",
        ],
    ),
    Proxy(
        name="haproxy",
        template="haproxy.cfg",
        # -db: stay in the foreground as one process (no daemon, no master-worker).
        argv=lambda bins, config, _: [str(bins.haproxy), "-db", "-f", str(config)],
    ),
    Proxy(
        name="nginx",
        template="nginx-proxy.conf",
        # -e stderr: nginx would otherwise open /var/log/nginx/error.log before reading the config.
        argv=lambda bins, config, workdir: [
            str(bins.nginx),
            "-p",
            str(workdir),
            "-c",
            str(config),
            "-e",
            "stderr",
        ],
        unsupported={
            Route.H2C_H2C: "nginx cannot speak HTTP/2 to an upstream (proxy_http_version is 1.0 or 1.1)",
        },
    ),
)
