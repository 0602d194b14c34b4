"""meshproxy's config: YAML files validated against one schema, with errors that name the
file, the line, the field path and what would be valid.

    cfg = load_config("examples/orders.yaml")
    engine.apply(cfg.engine_json())

Modules, in the order a document flows through them: ``yaml_source`` (text to data plus
lines), ``model`` (the schema; ``fields``, ``addresses``, ``duration`` hold its value types),
``translate`` (pydantic errors to messages), ``checks`` (cross-section and engine checks),
``load`` (the entry points), ``errors`` (what they raise), ``schema`` (JSON Schema).
"""

from .errors import ConfigError, ConfigIssue
from .load import coerce_config, load_config, parse_config
from .model import (
    AccessLog,
    Admin,
    Cluster,
    Config,
    Endpoint,
    HeaderEdits,
    HeaderMatch,
    Limits,
    Listener,
    Route,
    RouteMatch,
    Tracing,
    WeightedCluster,
)
from .schema import json_schema

__all__ = [
    "AccessLog",
    "Admin",
    "Cluster",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Endpoint",
    "HeaderEdits",
    "HeaderMatch",
    "Limits",
    "Listener",
    "Route",
    "RouteMatch",
    "Tracing",
    "WeightedCluster",
    "coerce_config",
    "json_schema",
    "load_config",
    "parse_config",
]
