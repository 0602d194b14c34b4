"""docs/config-reference.md is what docs/generate_config_reference.py writes from the schema,
and the generator's walk reaches every key the schema has."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from meshproxy.config import json_schema

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "docs" / "generate_config_reference.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_config_reference", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up by name
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_is_what_the_schema_gives() -> None:
    generator = _generator()
    written = generator.OUTPUT.read_text()
    assert written == generator.render(), (
        "docs/config-reference.md is stale: run `make docs` "
        "(.venv/bin/python docs/generate_config_reference.py) and commit the result"
    )


def test_every_key_of_the_json_schema_has_a_row() -> None:
    """The JSON Schema is built by pydantic on its own; the reference's walk must find the
    same keys, nested sections, lists and mappings included."""
    generator = _generator()
    rows = [row.path for group in generator.top_level_keys() for row in group]
    schema = json_schema()
    assert sorted(rows) == sorted(_schema_paths(schema, schema, "")), "the reference and the JSON Schema name different keys"
    assert len(rows) == len(set(rows)), "a key has two rows"


def test_check_mode_names_the_command_when_the_file_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    generator = _generator()
    stale = tmp_path / "config-reference.md"
    stale.write_text("# Config reference\n")
    monkeypatch.setattr(generator, "OUTPUT", stale)
    assert generator.main(["--check"]) == 1
    assert "make docs" in capsys.readouterr().err
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0


def _schema_paths(node: dict[str, Any], root: dict[str, Any], prefix: str) -> list[str]:
    """The key paths under a JSON Schema object, written as the reference writes them."""
    paths: list[str] = []
    for key, value in _resolve(node, root).get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        paths.append(path)
        paths.extend(_below(value, root, path))
    return paths


def _below(node: dict[str, Any], root: dict[str, Any], path: str) -> list[str]:
    node = _resolve(node, root)
    for option in node.get("anyOf", []):
        found = _below(option, root, path)
        if found:
            return found
    if node.get("type") == "array" and "items" in node:
        return _below(node["items"], root, path + "[]")
    if isinstance(node.get("additionalProperties"), dict):
        return _below(node["additionalProperties"], root, path + ".<name>")
    if "properties" in node:
        return _schema_paths(node, root, path)
    return []


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = root["$defs"][name]
    return node
