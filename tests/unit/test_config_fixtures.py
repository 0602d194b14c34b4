"""Every example and valid fixture loads; every invalid fixture fails with exactly one issue,
the one its first line announces (`# expect: <substring of the error line>`), at that line."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import yaml
from meshproxy.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "configs"
# examples/mesh.yaml is not a sidecar config but meshctl's file: tests/control loads it.
VALID = sorted((FIXTURES / "valid").glob("*.yaml")) + sorted(
    p for p in (ROOT / "examples").glob("*.yaml") if p.name != "mesh.yaml"
)
INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))
# Fixtures only the engine can judge (Rust regex syntax).
def _expectation(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: '"
    return first.removeprefix("# expect: ")


def test_fixture_sets_are_not_empty() -> None:
    assert len(VALID) >= 5
    assert len(INVALID) >= 17


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert cfg.listeners


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_config_reports_one_issue_at_its_line(path: Path) -> None:
    expected = _expectation(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    issues = caught.value.issues
    assert len(issues) == 1, str(caught.value)
    line = str(issues[0])
    assert line.startswith(f"{path}:"), line
    # An expectation starting with ":N: " pins the line number right after the file name.
    wanted = f"{path}{expected}" if expected.startswith(":") else expected
    assert wanted in line, line
    assert str(caught.value) == line


def test_engine_reports_a_bad_header_regex_at_its_line() -> None:
    """The engine's findings come back as paths; the loader turns them into file lines, even
    when the file spells the header name in another case than the normalized document."""
    text = """\
listeners:
  - name: outbound
    address: 127.0.0.1:15001
    routes:
      - match:
          headers:
            X-Id: {regex: "[0-9"}
        cluster: c
clusters: [{name: c}]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="h.yaml")
    [issue] = caught.value.issues
    assert (issue.line, issue.path) == (7, "listeners[0].routes[0].match.headers.x-id.regex")
    assert issue.message == "not a valid regular expression: unclosed character class"


def test_regex_syntax_is_the_engines_not_pythons() -> None:
    """Look-ahead is valid for Python's `re` but not for the Rust regex crate: only the
    engine can say which patterns it will run."""
    text = "listeners: [{name: l, address: '127.0.0.1:0', routes: [{cluster: c, match: {path_regex: '/a(?=b)'}}]}]\nclusters: [{name: c}]\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value) == (
        "<string>:1: listeners[0].routes[0].match.path_regex: not a valid regular expression: "
        "look-around, including look-ahead and look-behind, is not supported"
    )


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_engine_reads_the_document_as_python_wrote_it(path: Path) -> None:
    """One schema, two readers: the engine accepts every valid fixture, and its own
    normalization (every default filled in) changes nothing in the Python document."""
    native = importlib.import_module("meshproxy._native")
    doc = load_config(path).engine_json()
    assert native.check_config(doc) == []
    assert json.loads(native.normalize_config(doc)) == json.loads(doc)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_engine_reading_the_raw_file_agrees_with_python(path: Path) -> None:
    """The drift check: the engine reading the user's file directly (no Python validation, no
    defaults filled in) means exactly what the Python schema made of it."""
    native = importlib.import_module("meshproxy._native")
    raw = json.dumps(yaml.safe_load(path.read_text()))
    assert json.loads(native.normalize_config(raw)) == json.loads(native.normalize_config(load_config(path).engine_json()))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_engine_document_round_trips(path: Path) -> None:
    """The engine document is itself a valid config meaning the same thing: normalization
    (object-form header matches, method lists, "NNNms" durations) is a fixed point."""
    first = load_config(path).engine_json()
    again = parse_config(yaml.dump(json.loads(first)))
    assert again.engine_json() == first
