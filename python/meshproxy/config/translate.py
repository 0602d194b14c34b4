"""Rewrites pydantic's validation errors into :class:`Finding`s a user can act on.

pydantic says "Input should be 'a', 'b' or 'c'" with a URL; a config user needs "'x' is not
valid; expected one of a, b, c" at a field path. Built-in error types are rewritten here, using
the schema itself (valid keys, literal choices, bounds) so messages never drift from the model.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from .errors import Path, Segment
from .fields import NAME_PATTERN, NAME_RULE
from .messages import ERROR_TYPE, Finding, describe, show
from .model import Config

_EXPECTED_KIND = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "float_type": "a number",
}


def translate(errors: Iterable[ErrorDetails], root: type[BaseModel] = Config) -> list[Finding]:
    return [_one(error, root) for error in errors]


def _one(error: ErrorDetails, root: type[BaseModel]) -> Finding:
    # "[key]" marks an error in a dict key rather than its value; the path names the key either way.
    loc: Path = tuple(seg for seg in error["loc"] if seg != "[key]")
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error["input"]
    last = loc[-1] if loc else ""

    if kind == ERROR_TYPE:
        return Finding(loc + tuple(ctx.get("at", ())), str(ctx["message"]))
    if kind == "missing":
        return Finding(loc, f"missing required key {show(last)}", anchor=loc[:-1])
    if kind == "extra_forbidden":
        keys = _valid_keys(root, loc[:-1])
        return Finding(loc, f"unknown key {show(last)}; valid keys: {', '.join(keys)}")
    if kind == "literal_error":
        choices = _literal_choices(root, loc)
        return Finding(loc, f"{show(value)} is not valid; expected one of {', '.join(choices)}")
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return Finding(loc, f"{show(value)} is out of range; {_range(root, loc)}")
    if kind == "too_short":
        if loc == ("listeners",):
            return Finding(loc, "at least one listener is required")
        return Finding(loc, f"expected at least {ctx.get('min_length', 1)} item(s), got none")
    if kind == "string_too_short":
        return Finding(loc, "must not be empty")
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        return Finding(loc, f"{show(value)} is not a valid name; expected {NAME_RULE}")
    if kind in _EXPECTED_KIND:
        return Finding(loc, f"expected {_EXPECTED_KIND[kind]}, got {describe(value)}")
    return Finding(loc, error["msg"])


# === Reading the schema at a path ===


def _strip(tp: Any) -> Any:
    """Drop Annotated and Optional wrappers: the shape underneath is what the path walks."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def _field(model: type[BaseModel], key: Segment) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if (info.alias or name) == key:
            return info
    return None


def _walk(root: type[BaseModel], loc: Path) -> tuple[Any, FieldInfo | None]:
    """The annotation at ``loc`` and, if the last step was a model field, its FieldInfo."""
    tp: Any = root
    info: FieldInfo | None = None
    for seg in loc:
        tp = _strip(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = _field(tp, seg)
            if info is None:
                return None, None
            tp = info.annotation
        elif origin in (list, Sequence) and isinstance(seg, int):
            tp, info = get_args(tp)[0], None
        elif origin is dict:
            tp, info = get_args(tp)[1], None
        else:
            return None, None
    return tp, info


def _valid_keys(root: type[BaseModel], loc: Path) -> list[str]:
    tp = _strip(_walk(root, loc)[0])
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return []


def _literal_choices(root: type[BaseModel], loc: Path) -> list[str]:
    tp = _strip(_walk(root, loc)[0])
    return [str(c) for c in get_args(tp)] if get_origin(tp) is Literal else []


def _range(root: type[BaseModel], loc: Path) -> str:
    tp, info = _walk(root, loc)
    bounds: dict[str, Any] = {}
    for item in _constraints(tp, info):
        for attr in ("ge", "gt", "le", "lt"):
            if getattr(item, attr, None) is not None:
                bounds[attr] = getattr(item, attr)
    low = bounds["ge"] if "ge" in bounds else (bounds["gt"] + 1 if "gt" in bounds else None)
    high = bounds["le"] if "le" in bounds else (bounds["lt"] - 1 if "lt" in bounds else None)
    # Float bounds (a sampling ratio) take any number between them.
    kind = "a number" if isinstance(low, float) or isinstance(high, float) else "an integer"
    if low is not None and high is not None:
        return f"expected {kind} from {low} to {high}"
    if low is not None:
        return f"expected {kind} of at least {low}"
    return f"expected {kind} of at most {high}"


def _constraints(tp: Any, info: FieldInfo | None) -> list[Any]:
    """Constraint objects from the field and from any Annotated layer inside its type
    (an Optional[Annotated[int, Field(ge=1)]] keeps them inside)."""
    found: list[Any] = list(info.metadata) if info is not None else []
    stack = [tp]
    while stack:
        t = stack.pop()
        if get_origin(t) is Annotated:
            base, *meta = get_args(t)
            stack.append(base)
            for m in meta:
                found.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        elif get_origin(t) in (Union, types.UnionType):
            stack.extend(get_args(t))
    return found
