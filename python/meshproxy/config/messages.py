"""Shared vocabulary for problems found while validating: how a validator reports one, how a
value is quoted in a message, and the :class:`Finding` that checks hand to the loader.

Validators raise :func:`invalid` (a pydantic custom error of type ``meshproxy``) with a message
already in final user-facing form; :mod:`.translate` then passes it through untouched, while
pydantic's built-in errors get rewritten there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticCustomError

from .errors import Path

ERROR_TYPE = "meshproxy"
_MAX_SHOWN = 60


def invalid(message: str, at: Path = ()) -> PydanticCustomError:
    """An error for a validator to raise. ``at`` points below the validated value: a model
    validator checking two fields together can still name the one field at fault."""
    # The message travels in the context, not the template, so braces in user input
    # (a regex like `a{2}`) are never mistaken for template fields.
    return PydanticCustomError(ERROR_TYPE, "{message}", {"message": message, "at": at})


def duplicate_names(field: str, what: str, names: Iterable[str | None]) -> Iterator[tuple[Path, str]]:
    """Each name used again in the list ``field``: where it is and the message saying so,
    pointing at its first use. An unnamed item (None) repeats nothing. One rule for every
    list of named things, in the sidecar's config and in the control plane's resources."""
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name is None:
            continue
        if name in first:
            yield (field, i, "name"), f"duplicate {what} name {show(name)}; already used by {field}[{first[name]}]"
        else:
            first[name] = i


def show(value: Any) -> str:
    """A value as it should appear quoted in a message, kept short."""
    text = repr(value) if isinstance(value, str) else _yaml_like(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def describe(value: Any) -> str:
    """A value's YAML kind and, for scalars, the value: used in "expected X, got Y"."""
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return f"boolean {_yaml_like(value)}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {show(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} {show(value)}"


def _yaml_like(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Finding:
    """A problem at ``path``, before it is tied to a source and line. ``anchor`` is the node
    whose line to report when the path itself has none (a missing key: its parent mapping)."""

    path: Path
    message: str
    anchor: Path | None = None

    @property
    def line_path(self) -> Path:
        return self.path if self.anchor is None else self.anchor
