"""What a discovery update costs with the mesh-sized config running (10,000 routes, 100,000
endpoints: tests/large_config.py): one cluster's list of 100 endpoints, one address changed.

    set_endpoints  the engine's per-cluster call, as discovery makes it now: that list checked
                   and swapped in, nothing else compiled
    full_apply     the same change as discovery made it before: the engine document rendered
                   with the new list in place, then the engine's apply (parse, compile, swap)
    render         of that, the rendering alone (Python: the document written out as JSON)

Both run against one engine started with the config; each round alternates between two lists,
so every round is a real change. Nothing is asserted about time: compare the two figures.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from meshproxy import _native
from meshproxy.config.load import read_config
from meshproxy.discovery.endpoints import Endpoint
from meshproxy.discovery.merged import MergedSnapshot
from pytest_benchmark.fixture import BenchmarkFixture

CLUSTER = "c500"
UPDATE_ROUNDS = 200
APPLY_ROUNDS = 5

Args = tuple[tuple[Any, ...], dict[str, Any]]


@pytest.fixture(scope="module")
def engine_json(big_config: Callable[[str], dict[str, Any]]) -> str:
    text: str = read_config(big_config("127.0.0.1:1"))[0].engine_json()
    return text


@pytest.fixture(scope="module")
def engine(engine_json: str) -> Iterator[_native.Engine]:
    running = _native.Engine(engine_json, 1)
    yield running
    running.shutdown(0.0)


def two_lists(big_config: Callable[[str], dict[str, Any]]) -> Iterator[tuple[Endpoint, ...]]:
    """The cluster's configured list and the same with its last address replaced, in turn."""
    [cluster] = [c for c in big_config("127.0.0.1:1")["clusters"] if c["name"] == CLUSTER]
    configured = tuple(Endpoint(e["address"], e["weight"]) for e in cluster["endpoints"])
    changed = (*configured[:-1], Endpoint("127.250.0.1:9", 1))
    return itertools.cycle([changed, configured])


def test_set_endpoints(
    benchmark: BenchmarkFixture, engine: _native.Engine, big_config: Callable[[str], dict[str, Any]]
) -> None:
    lists = two_lists(big_config)
    version = engine.version

    def next_list() -> Args:
        return (CLUSTER, next(lists)), {}

    benchmark.pedantic(engine.set_endpoints, setup=next_list, rounds=UPDATE_ROUNDS)
    assert engine.version == version
    benchmark.extra_info["clusters"] = 1_001
    benchmark.extra_info["endpoints_in_the_list"] = 100


def test_full_apply(
    benchmark: BenchmarkFixture, engine: _native.Engine, engine_json: str,
    big_config: Callable[[str], dict[str, Any]],
) -> None:
    lists = two_lists(big_config)
    merged = MergedSnapshot()
    merged.render(engine_json, {CLUSTER: next(lists)})  # parsed once, as discovery kept it parsed
    version = engine.version

    def apply(endpoints: tuple[Endpoint, ...]) -> int:
        return engine.apply(merged.render(engine_json, {CLUSTER: endpoints}))

    benchmark.pedantic(apply, setup=lambda: ((next(lists),), {}), rounds=APPLY_ROUNDS)
    assert engine.version == version + APPLY_ROUNDS


def test_render(benchmark: BenchmarkFixture, engine_json: str, big_config: Callable[[str], dict[str, Any]]) -> None:
    lists = two_lists(big_config)
    merged = MergedSnapshot()
    merged.render(engine_json, {CLUSTER: next(lists)})
    rendered = benchmark.pedantic(lambda: merged.render(engine_json, {CLUSTER: next(lists)}), rounds=APPLY_ROUNDS)
    assert rendered.startswith("{")
