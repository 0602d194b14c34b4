"""The base of every section model of the config schema, and the shapes several sections
share: header matches, method lists, weights, empty defaults.

Models are strict (YAML already gives typed scalars), forbid unknown keys and are frozen (a
Config is an immutable snapshot handed to the engine).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from .fields import HeaderName, Method
from .messages import describe, invalid, show

Weight = Annotated[int, Field(ge=0, le=1_000_000)]


class _Section(BaseModel):
    # strict: YAML already gives typed scalars, so "5" for an int or `yes` for a number is a
    # mistake worth reporting, not something to coerce. frozen: a Config is an immutable
    # snapshot handed to the engine; derive a new one with model_copy(update=...).
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        # The docstrings under fields are the descriptions of the JSON Schema, read by
        # schema.py when one is asked for, not here for every model built (docstrings.py).
    )


def _no_case_duplicates(value: Any) -> Any:
    """Header names are case-insensitive: `X-A` and `x-a` in one mapping would silently merge
    after lowercasing, so reject them before that happens."""
    if isinstance(value, dict):
        seen: dict[str, str] = {}
        for key in value:
            if isinstance(key, str):
                if key.lower() in seen:
                    raise invalid(
                        f"header {show(key)} is listed twice (as {show(seen[key.lower()])} too); "
                        "header names are case-insensitive",
                        at=(key,),
                    )
                seen[key.lower()] = key
    return value


def _header_matches(value: Any) -> Any:
    """The short form `x-channel: beta` means `x-channel: {exact: beta}`; normalize to the
    object form so the engine sees one shape."""
    value = _no_case_duplicates(value)
    if not isinstance(value, dict):
        return value
    for key, match in value.items():
        if not isinstance(match, (str, dict)):
            # Said here because the field takes two shapes: pydantic would name only one.
            raise invalid(
                f"expected a value to match exactly, or a mapping with one of exact, present, "
                f"regex; got {describe(match)}",
                at=(key,),
            )
    return {k: {"exact": v} if isinstance(v, str) else v for k, v in value.items()}


def _by_key(value: dict[str, Any]) -> dict[str, Any]:
    """Mappings are kept sorted by key, so that the engine document of a config is one text
    whatever order its file listed them in."""
    return dict(sorted(value.items()))


def _empty(factory: Callable[[], Any]) -> Any:
    """An empty list or dict default. A literal `[]` or `{}` would be deep-copied for every
    instance (pydantic cannot tell it is never mutated); a factory is one cheap call. The schema
    still shows the default."""
    # Wrapped: pydantic reads the signature of every default factory, and that of a builtin
    # (list, dict) is parsed from its text signature with `tokenize`, whose import and regex
    # cost the `validate` child a few milliseconds.
    return Field(default_factory=lambda: factory(), json_schema_extra={"default": factory()})


def _method_list(value: Any) -> Any:
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, str):
        return [value]
    raise invalid(f"expected an HTTP method or a list of methods, got {describe(value)}")


def _with_key(document: str, key: str, value: str) -> str:
    """The text of a JSON object with one more key, whose value is JSON text already."""
    return f'{document[:-1]},"{key}":{value}}}' if document != "{}" else f'{{"{key}":{value}}}'


class HeaderMatch(_Section):
    """Exactly one of: `exact` value, `present` (true: header must be there, false: absent),
    `regex` (whole value; Rust regex syntax, checked by the engine)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    exact: str | None = None
    present: bool | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> HeaderMatch:
        given = [k for k in ("exact", "present", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise invalid(f"a header match needs exactly one of exact, present, regex; found {found}")
        return self

    @model_serializer(mode="wrap")
    def _only_the_one(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Dump as `{exact: beta}`, never with null siblings, so the document is unambiguous.
        dumped: dict[str, Any] = handler(self)
        return {k: v for k, v in dumped.items() if v is not None}


# Header conditions and method lists, as route matches and authorization rules both write them.
HeaderMatches = Annotated[
    dict[HeaderName, HeaderMatch],
    BeforeValidator(_header_matches, json_schema_input_type=dict[str, str | HeaderMatch]),
    AfterValidator(_by_key),
]
Methods = Annotated[
    list[Method] | None,
    Field(min_length=1),
    BeforeValidator(_method_list, json_schema_input_type=str | list[str] | None),
]
