"""A cluster's endpoint list, held as two columns instead of one model per endpoint.

A mesh-sized config lists a hundred thousand endpoints: with one pydantic model each, their
validation alone took over a second, and writing them out for the engine a tenth of one. The
engine's reader (``_native.read_endpoints``) checks a whole list in one call when every item is
one the schema certainly accepts, and keeps it as addresses, weights and its engine-document
JSON. Any other list — one with a problem, or an unusual but valid form such as an IPv6
literal — is validated item by item by the schema, so every message and path is the schema's
own.

Reading ``cluster.endpoints[i]`` still gives an :class:`Endpoint` model, made on access.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, ConfigDict, TypeAdapter

from .. import _native

M = TypeVar("M", bound=BaseModel)


class Endpoints(Sequence[M], Generic[M]):
    """An immutable list of endpoint models, stored as columns."""

    __slots__ = ("_model", "addresses", "weights", "_document", "unique")

    def __init__(
        self, model: type[M], addresses: Sequence[str], weights: Sequence[int], document: str | None, unique: bool
    ) -> None:
        self._model = model
        self.addresses = tuple(addresses)
        self.weights = tuple(weights)
        self._document = document
        self.unique = unique
        """Whether the reader already found no address listed twice."""

    def __len__(self) -> int:
        return len(self.addresses)

    @overload
    def __getitem__(self, index: int) -> M: ...
    @overload
    def __getitem__(self, index: slice) -> list[M]: ...
    def __getitem__(self, index: int | slice) -> M | list[M]:
        if isinstance(index, slice):
            return [self._make(a, w) for a, w in zip(self.addresses[index], self.weights[index])]
        return self._make(self.addresses[index], self.weights[index])

    def __iter__(self) -> Iterator[M]:
        return (self._make(a, w) for a, w in zip(self.addresses, self.weights))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Endpoints):
            return (self.addresses, self.weights) == (other.addresses, other.weights)
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Endpoints({list(self)!r})"

    def engine_json(self) -> str:
        """The list as the engine document writes it."""
        if self._document is None:
            items = [{"address": a, "weight": w} for a, w in zip(self.addresses, self.weights)]
            self._document = json.dumps(items, separators=(",", ":"))
        return self._document

    def dump(self) -> list[dict[str, Any]]:
        return [{"address": a, "weight": w} for a, w in zip(self.addresses, self.weights)]

    def _make(self, address: str, weight: int) -> M:
        # Every value was validated when the list was read.
        return self._model.model_construct(address=address, weight=weight)


def endpoints_reader(model: type[M]) -> Callable[[Any], Endpoints[M]]:
    """The validator of an endpoint list whose items are ``model``s."""
    one_by_one: TypeAdapter[list[Any]] = TypeAdapter(list[model], config=ConfigDict(strict=True))  # type: ignore[valid-type]

    def read(value: Any) -> Endpoints[M]:
        if isinstance(value, Endpoints):
            return value
        read = _native.read_endpoints(value)
        if read is not None:
            addresses, weights, document = read
            return Endpoints(model, addresses, weights, document, unique=True)
        # The schema's own validation, for its messages (a ValidationError raised here is
        # reported at this list's path).
        items = one_by_one.validate_python(value)
        return Endpoints(model, [e.address for e in items], [e.weight for e in items], None, unique=False)

    return read


def dump_endpoints(endpoints: Endpoints[Any]) -> list[dict[str, Any]]:
    """The serializer of an endpoint list: what one model per endpoint would dump."""
    return endpoints.dump()
