"""What applying a mesh-sized config costs through the Python API: 10,000 routes and 100,000
endpoints (tests/large_config.py), validated, compiled and swapped into a running proxy.

    validate   dict or YAML file -> checked Config (schema and cross-section rules)
    serialize  Config -> the engine document (JSON text)
    compile    the engine's check of that document (parse + compile, nothing runs)
    swap       Proxy.reload of an already validated Config: its cross-section checks, serialize,
               then the engine's apply (parse, compile, swap)
    apply      Proxy.reload of a dict or a file: all of the above, end to end

Each round gets fresh input, so nothing computed for one round is reused by the next.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from meshproxy import Proxy, _native
from meshproxy.config import Config
from meshproxy.config.checks import check_engine
from meshproxy.config.load import read_config
from meshproxy.config.yaml_source import read_yaml
from pytest_benchmark.fixture import BenchmarkFixture

ROUNDS = 5
# Reading the YAML file takes seconds: fewer rounds.
FILE_ROUNDS = 3

Args = tuple[tuple[Any, ...], dict[str, Any]]


def fresh_dict(big_config: Callable[[str], dict[str, Any]]) -> Callable[[], Args]:
    return lambda: ((big_config("127.0.0.1:1"),), {})


def fresh_config(big_config: Callable[[str], dict[str, Any]]) -> Callable[[], Args]:
    return lambda: ((read_config(big_config("127.0.0.1:1"))[0],), {})


def test_validate_from_dict(
    benchmark: BenchmarkFixture, big_config: Callable[[str], dict[str, Any]]
) -> None:
    cfg, _ = benchmark.pedantic(read_config, setup=fresh_dict(big_config), rounds=ROUNDS)
    assert len(cfg.listeners[0].routes) == 10_001


def test_validate_from_file(benchmark: BenchmarkFixture, big_config_file: Path) -> None:
    cfg, _ = benchmark.pedantic(read_config, args=(big_config_file,), rounds=FILE_ROUNDS)
    assert len(cfg.clusters) == 1_001


def test_yaml_parse_of_the_file(benchmark: BenchmarkFixture, big_config_file: Path) -> None:
    text = big_config_file.read_text()
    document = benchmark.pedantic(read_yaml, args=(text, str(big_config_file)), rounds=FILE_ROUNDS)
    assert isinstance(document.data, dict)


def test_serialize(
    benchmark: BenchmarkFixture, big_config: Callable[[str], dict[str, Any]]
) -> None:
    text = benchmark.pedantic(Config.engine_json, setup=fresh_config(big_config), rounds=ROUNDS)
    assert text.startswith("{")


def test_compile(benchmark: BenchmarkFixture, big_config: Callable[[str], dict[str, Any]]) -> None:
    document = read_config(big_config("127.0.0.1:1"))[0].engine_json()
    problems = benchmark.pedantic(_native.check_config, args=(document,), rounds=ROUNDS)
    assert problems == []


def test_engine_check_of_a_config(
    benchmark: BenchmarkFixture, big_config: Callable[[str], dict[str, Any]]
) -> None:
    """serialize + compile, as the loader runs them for a Config it did not validate itself."""
    findings = benchmark.pedantic(check_engine, setup=fresh_config(big_config), rounds=ROUNDS)
    assert findings == []


@pytest.fixture(scope="module")
def proxy(big_config: Callable[[str], dict[str, Any]]) -> Any:
    with Proxy(big_config("127.0.0.1:1")) as running:
        yield running


def test_swap(
    benchmark: BenchmarkFixture, proxy: Proxy, big_config: Callable[[str], dict[str, Any]]
) -> None:
    before = proxy.version
    benchmark.pedantic(proxy.reload, setup=fresh_config(big_config), rounds=ROUNDS)
    assert proxy.version == before + ROUNDS


def test_apply_from_dict(
    benchmark: BenchmarkFixture, proxy: Proxy, big_config: Callable[[str], dict[str, Any]]
) -> None:
    before = proxy.version
    benchmark.pedantic(proxy.reload, setup=fresh_dict(big_config), rounds=ROUNDS)
    assert proxy.version == before + ROUNDS


def test_apply_from_file(benchmark: BenchmarkFixture, proxy: Proxy, big_config_file: Path) -> None:
    before = proxy.version
    benchmark.pedantic(proxy.reload, args=(big_config_file,), rounds=FILE_ROUNDS)
    assert proxy.version == before + FILE_ROUNDS
