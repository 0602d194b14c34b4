"""Routes kept from one validation to the next, with their engine-document text.

A mesh's control plane sends the whole config again for each change, and most of its ten
thousand routes are the ones it sent last time: validating each of them again (~3.5 us) and
writing it out for the engine again (~1.5 us) was a third of a reload. A route whose input is
exactly one a config validated last time is that config's validated route: validation is a
function of the route's own input (rules across routes and sections still run on the whole
config), so the model it gave is the one it would give again.

"Exactly" is the input's ``marshal`` serialization: equal bytes mean an equal value of the
same types (``1``, ``1.0`` and ``True`` differ, as strict validation tells them apart), and
the bytes are a copy, so a caller mutating the dict it passed changes nothing kept. Input that
``marshal`` cannot write (a date from YAML, an object of the caller's own) is simply validated.

Only what a config validated successfully is kept, and only until the next one succeeds: the
memory held is one config's routes, which the running config shares.
"""

from __future__ import annotations

import marshal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

# No back-references (version 3 on): the bytes of a value do not depend on which of its
# objects something else also holds.
_MARSHAL_VERSION = 2


class _Entry(Generic[M]):
    __slots__ = ("model", "text")

    def __init__(self, model: M) -> None:
        self.model = model
        self.text: str | None = None
        """The model's engine-document JSON, once written."""


class KeptModels(Generic[M]):
    """The models a config validated last, by the bytes of their input."""

    def __init__(self, model: type[M]) -> None:
        self._serializer = model.__pydantic_serializer__
        self._last: dict[bytes, _Entry[M]] = {}
        self._by_id: dict[int, _Entry[M]] = {}
        # The entries the validation in progress (in this thread or task) used or made.
        self._collecting: ContextVar[dict[bytes, _Entry[M]] | None] = ContextVar("collecting", default=None)

    @contextmanager
    def validation(self) -> Iterator[None]:
        """Around one config's validation: once it succeeds, what it validated is kept instead
        of what was kept before."""
        collected: dict[bytes, _Entry[M]] = {}
        token = self._collecting.set(collected)
        try:
            yield
        finally:
            self._collecting.reset(token)
        # Not reached when the validation raised: what the failed config validated is dropped.
        self._last = collected
        self._by_id = {id(entry.model): entry for entry in collected.values()}

    def validate_list(self, value: Any, validate: Callable[[Any], list[M]]) -> list[M]:
        """``validate`` (the schema's validation of the list, which checks only its items)
        applied to ``value``, where an item exactly as a config validated last time gives the
        model it gave then. Problems are reported at the paths of the list as given."""
        if not isinstance(value, list):
            return validate(value)
        last, collecting = self._last, self._collecting.get()
        try:
            keys: list[bytes | None] = [marshal.dumps(item, _MARSHAL_VERSION) for item in value]
        except ValueError:
            keys = [_input_key(item) for item in value]
        found = [last.get(key) if key is not None else None for key in keys]
        new = [i for i, entry in enumerate(found) if entry is None]
        models = [entry.model if entry is not None else None for entry in found]
        if new:
            try:
                validated = validate([value[i] for i in new])
            except ValueError:
                # Validated again in place, kept items and all, for the paths of the problems.
                validate([item if model is None else model for item, model in zip(value, models)])
                raise
            for i, model in zip(new, validated):
                models[i] = model
                found[i] = _Entry(model)
        if collecting is not None:
            collecting.update((key, entry) for key, entry in zip(keys, found) if key is not None)  # type: ignore[misc]
        return models  # type: ignore[return-value]

    def json_list(self, models: Sequence[M]) -> str:
        """The models as a JSON array, each written as the schema writes it: a kept model's
        text is written once, and used again by every config that keeps it."""
        by_id, serializer = self._by_id, self._serializer
        texts = []
        for model in models:
            entry = by_id.get(id(model))
            if entry is None or entry.model is not model:
                texts.append(serializer.to_json(model).decode())
                continue
            if entry.text is None:
                entry.text = serializer.to_json(model).decode()
            texts.append(entry.text)
        return f"[{','.join(texts)}]"


def _input_key(item: Any) -> bytes | None:
    try:
        return marshal.dumps(item, _MARSHAL_VERSION)
    except ValueError:
        return None
