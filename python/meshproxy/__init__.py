"""meshproxy: a service-mesh sidecar proxy whose data path is Rust, driven from Python.

Embed it in a Python app::

    async with meshproxy.Proxy("sidecar.yaml") as proxy:
        print(proxy.address("outbound"))

or run it as a sidecar: ``meshproxy run --config sidecar.yaml``.
"""

import os
from typing import TYPE_CHECKING

# mimalloc, the engine's allocator, hands freed memory back to the OS after a second by default;
# after 10 ms instead, a sidecar's RSS follows its open connections closely (measured: 72 MB ->
# 38 MB after a burst of 1,000 connections) for a few madvise calls. Read when the engine loads;
# an operator's own setting wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "10")

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
