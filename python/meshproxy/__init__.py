"""meshproxy: a service-mesh sidecar proxy whose data path is Rust, driven from Python.

Embed it in a Python app::

    async with meshproxy.Proxy("sidecar.yaml") as proxy:
        print(proxy.address("outbound"))

or run it as a sidecar: ``meshproxy run --config sidecar.yaml``.
"""

from ._native import __version__
from .config import Config, ConfigError, ConfigIssue, coerce_config, load_config, parse_config
from .proxy import Proxy

__all__ = [
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Proxy",
    "__version__",
    "coerce_config",
    "load_config",
    "parse_config",
]
