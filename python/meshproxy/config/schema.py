"""JSON Schema for the config file, for editors and for the engine's own schema tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from .docstrings import attribute_docstrings
from .duration import format_duration
from .model import Config


class SchemaGenerator(GenerateJsonSchema):
    """pydantic's JSON Schema generator, writing what the config's users write: durations as
    `15s`, and each field's docstring as its description. The control plane's resource
    documents use it too."""

    def encode_default(self, dft: Any) -> Any:
        # pydantic renders timedelta defaults as ISO 8601 ("PT15S"), a form the config does
        # not accept; show them the way a user would write them.
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        # Each field's docstring is its description, read here rather than when the models are
        # built: validating a config never needs them (see docstrings.py).
        json_schema = super().model_schema(schema)
        model: type[BaseModel] = schema["cls"]
        properties = json_schema.get("properties", {})
        for name, doc in attribute_docstrings(model).items():
            field = model.model_fields.get(name)
            # As pydantic would: a description given to the field itself wins; the docstring
            # wins over one its type gives (a Duration's).
            if field is None or field.description is not None:
                continue
            key = field.alias or name
            if key in properties:
                properties[key]["description"] = doc
        return json_schema


def json_schema() -> dict[str, Any]:
    """The schema of a config document (validation side: the forms a user may write)."""
    return Config.model_json_schema(by_alias=True, schema_generator=SchemaGenerator)
