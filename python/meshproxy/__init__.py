"""meshproxy: a service-mesh sidecar proxy whose data path is Rust, driven from Python.

Embed it in a Python app::

    async with meshproxy.Proxy("sidecar.yaml") as proxy:
        print(proxy.address("outbound"))

or run it as a sidecar: ``meshproxy run --config sidecar.yaml``.
"""

import os
from typing import TYPE_CHECKING

# mimalloc, the engine's allocator, hands freed memory back to the OS after a second by default;
# sooner, a sidecar's RSS follows its open connections closely (1 s after a burst of 1,000
# connections: ~91 MB at mimalloc's default, ~64 MB at 30 ms). Much sooner costs CPU: pages
# freed and reused between requests are faulted back in (h2c -> HTTP/1.1: 0.6-1.1 faults per
# request at 10 ms, 0.37 at 30 ms; bench/NOTES.md). Read when the engine loads; an operator's
# own setting wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "30")

from ._native import __version__  # noqa: E402  (after the allocator setting above)

if TYPE_CHECKING:
    from .config import Config, ConfigError, ConfigIssue, coerce_config, load_config, parse_config
    from .engine_document import EngineDocument
    from .proxy import Proxy

__all__ = [
    "Config",
    "ConfigError",
    "ConfigIssue",
    "EngineDocument",
    "Proxy",
    "__version__",
    "coerce_config",
    "load_config",
    "parse_config",
]

# The public names are imported on first use (PEP 562): the config schema brings pydantic, which
# `meshproxy run` keeps out of the long-running sidecar (it validates in a child process).
_HOMES = {
    "Config": "config",
    "ConfigError": "config",
    "ConfigIssue": "config",
    "EngineDocument": "engine_document",
    "Proxy": "proxy",
    "coerce_config": "config",
    "load_config": "config",
    "parse_config": "config",
}

if not TYPE_CHECKING:
    # Hidden from type checkers, which would otherwise accept any attribute of the package.

    def __getattr__(name: str) -> object:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(f"{__name__}.{home}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
