"""The defaults of the fields a config may leave out, as the engine has them: each is written once,
in the engine (``rust/config/src/documents.rs``), and the schema's fields take it from there."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from .. import _native

_DEFAULTS: dict[str, Any] = json.loads(_native.CONFIG_DEFAULTS)


def default(key: str) -> Any:
    """The default of ``key`` (``section.field``)."""
    return _DEFAULTS[key]


def default_duration(key: str) -> timedelta:
    """The default of a duration ``key`` (``section.field``; the engine's is in milliseconds)."""
    return timedelta(milliseconds=_DEFAULTS[f"{key}_ms"])
