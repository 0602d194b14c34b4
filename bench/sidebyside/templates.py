"""Config files from the templates in configs/: each `{{name}}` is replaced by a value.

Plain `{{name}}` markers rather than str.format or string.Template, because nginx and Envoy
configs use both braces and dollar signs themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).parent / "configs"
_MARKER = re.compile(r"\{\{(\w+)\}\}")


def render(template: str, values: dict[str, object], into: Path) -> Path:
    """Writes configs/<template> with its markers filled in to `into`/<template>."""
    text = (TEMPLATES / template).read_text()
    unknown = sorted({name for name in _MARKER.findall(text) if name not in values})
    if unknown:
        raise KeyError(f"configs/{template} uses {', '.join(unknown)}, which have no value")
    path = into / template
    path.write_text(_MARKER.sub(lambda marker: str(values[marker.group(1)]), text))
    return path
