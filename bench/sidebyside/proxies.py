"""How each proxy under test is configured and started: one worker each, its config template
in configs/ with the values it fills in, and the routes it cannot serve. PROXIES run with their
defaults; BUSY_POLLING_PROXIES are the line-up of the busy-polling stage (scenario 4b)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .anchors import Anchors
from .targets import Route


@dataclass(frozen=True)
class Proxy:
    name: str
    template: str
    argv: Callable[[Anchors, Path, Path], list[str]]  # (anchors, config, workdir) -> command
    unsupported: dict[Route, str] = field(default_factory=dict)
    # The template's own markers (the lineup fills in ports and paths).
    values: dict[str, object] = field(default_factory=dict)


def meshproxy_run(meshproxy: Path, config: Path) -> list[str]:
    """meshproxy's command line in every run: one worker, and a short drain on stop."""
    return [str(meshproxy), "run", "-c", str(config), "--workers", "1", "--drain-timeout", "1"]


MESHPROXY = Proxy(
    name="meshproxy",
    template="meshproxy.yaml",
    values={"busy_poll": "0"},
    argv=lambda bins, config, _: meshproxy_run(bins.meshproxy, config),
)
ENVOY = Proxy(
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
)
HAPROXY = Proxy(
    name="haproxy",
    template="haproxy.cfg",
    values={"busy_polling": ""},
    # -db: stay in the foreground as one process (no daemon, no master-worker).
    argv=lambda bins, config, _: [str(bins.haproxy), "-db", "-f", str(config)],
)
NGINX = Proxy(
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
        Route.TCP: "nginx proxies TCP with its stream module, which Debian's nginx loads only when configured to",
    },
)

PROXIES = (MESHPROXY, ENVOY, HAPROXY, NGINX)

BUSY_POLL_WINDOW = "300us"
"""meshproxy's window in the busy-polling stages: longer than the gap between one response and
the next request at concurrency 1 here (about 100 µs), so it is spent only when traffic stops."""

BUSY_POLLING_PROXIES = (
    replace(MESHPROXY, values={"busy_poll": BUSY_POLL_WINDOW}),
    # Envoy has no such setting: the same Envoy, for the ratio the issue asks against it.
    ENVOY,
    # HAProxy's `busy-polling` spins even when idle, so it runs only in this stage.
    replace(HAPROXY, values={"busy_polling": "busy-polling"}),
)
