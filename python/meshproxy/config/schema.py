"""JSON Schema for the config file, for editors and for the engine's own schema tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from .duration import format_duration
from .model import Config


class _ConfigSchema(GenerateJsonSchema):
    def encode_default(self, dft: Any) -> Any:
        # pydantic renders timedelta defaults as ISO 8601 ("PT15S"), a form the config does
        # not accept; show them the way a user would write them.
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def json_schema() -> dict[str, Any]:
    """The schema of a config document (validation side: the forms a user may write)."""
    return Config.model_json_schema(by_alias=True, schema_generator=_ConfigSchema)
