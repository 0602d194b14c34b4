"""What a config build leaves to the cycle collector: its objects go to the oldest generation
unscanned, cyclic garbage among them is still collected, and a program's own frozen objects
stay frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from meshproxy.config.gc_pause import cycle_collection_paused


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_objects_built_while_paused_are_in_the_oldest_generation(collector_on: None) -> None:
    with cycle_collection_paused():
        built = [Node() for _ in range(1000)]
    assert gc.isenabled()
    young = {id(o) for generation in (0, 1) for o in gc.get_objects(generation=generation)}
    assert not any(id(node) in young for node in built)
    assert any(o is built[0] for o in gc.get_objects(generation=2))


def test_a_cycle_built_while_paused_is_still_collected(collector_on: None) -> None:
    with cycle_collection_paused():
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None


def test_objects_the_program_froze_stay_frozen(collector_on: None) -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with cycle_collection_paused():
            Node()
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
