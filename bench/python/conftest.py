"""Fixtures for the apply-path benchmarks: the mesh-sized config (tests/large_config.py) as a
dict and as a YAML file, and real upstreams (tests/upstream.py) for the apply-under-load check.
Run with `make microbench`; `make test` does not collect this directory."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

TESTS = Path(__file__).resolve().parents[2] / "tests"
sys.path.insert(0, str(TESTS))

from large_config import large_config  # noqa: E402
from upstreams import Upstream, upstream_pool  # noqa: E402


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Callable[[str], Upstream]]:
    yield from upstream_pool()


@pytest.fixture(scope="session")
def big_config() -> Callable[[str], dict[str, Any]]:
    """The mesh-sized config whose live cluster is the given upstream address."""
    return lambda live: large_config([live])


@pytest.fixture(scope="session")
def big_config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "mesh.yaml"
    path.write_text(yaml.safe_dump(large_config(["127.0.0.1:1"]), sort_keys=False))
    return path
