"""Big files: aliases that expand exponentially are refused, while a mesh-sized file written
out in full (more nodes than any alias expansion may produce) is read."""

from __future__ import annotations

import pytest
from meshproxy.config import ConfigError
from meshproxy.config.yaml_source import read_yaml

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join(['*' + previous] * 10)}]\n" for previous, name in zip("abcde", "bcdef")
)


def test_aliases_expanding_past_the_limit_are_refused() -> None:
    with pytest.raises(ConfigError, match="document too large \\(too many nodes after expanding aliases\\)"):
        read_yaml(LAUGHS, "laughs.yaml")


def test_a_file_with_more_nodes_than_that_but_no_aliases_is_read() -> None:
    document = read_yaml("[" + ", ".join(["1"] * 200_001) + "]", "big.yaml")
    assert isinstance(document.data, list) and len(document.data) == 200_001


def test_aliases_within_the_limit_expand() -> None:
    document = read_yaml("a: &a [1, 2]\nb: [*a, *a]\n", "small.yaml")
    assert document.data == {"a": [1, 2], "b": [[1, 2], [1, 2]]}
