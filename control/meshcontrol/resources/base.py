"""What every resource document shares: the stored form's type and the models' strictness."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

Resource = dict[str, Any]


class Document(BaseModel):
    # As the sidecar's config sections: unknown keys are errors, YAML's typed scalars are not
    # coerced ("5" is not a number), validated values never change.
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, validate_by_alias=True, validate_by_name=False, serialize_by_alias=True
    )
