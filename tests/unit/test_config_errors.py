"""Error reporting: each problem is one issue, at the right line and path, in words that say
what would be valid; YAML-level problems are caught before the schema sees the data."""

from __future__ import annotations

import pickle

import pytest
from meshproxy.config import ConfigError, ConfigIssue, parse_config
from meshproxy.config.errors import format_path, parse_path

HEAD = "listeners:\n  - name: outbound\n    address: 127.0.0.1:15001\n"


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="c.yaml")
    return str(caught.value).splitlines()


def test_issue_formatting() -> None:
    assert str(ConfigIssue("a.yaml", 3, "clusters[0].lb", "bad")) == "a.yaml:3: clusters[0].lb: bad"
    assert str(ConfigIssue("<dict>", None, "workers", "bad")) == "<dict>: workers: bad"
    assert str(ConfigIssue("a.yaml", 1, "", "bad")) == "a.yaml:1: bad"


def test_error_lists_issues_in_file_order_and_survives_pickling() -> None:
    error = ConfigError(
        [ConfigIssue("f", 9, "b", "second"), ConfigIssue("f", None, "", "last"), ConfigIssue("f", 2, "a", "first")]
    )
    assert str(error) == "f:2: a: first\nf:9: b: second\nf: last"
    assert [i.message for i in pickle.loads(pickle.dumps(error)).issues] == ["first", "second", "last"]


def test_every_problem_is_reported_once_with_its_own_line() -> None:
    text = """\
workers: many
limits: {max_concurrent_streams: 0}
listeners:
  - name: outbound
    address: 127.0.0.1:99999
    protocol: quic
    routes:
      - match: {method: 5, headers: {x-a: 7}}
        cluster: c
        timeout: soon
admin: 127.0.0.1:15000
clusters:
  - {name: c, lb: fastest, endpoints: [{address: "127.0.0.1:80", weight: -1}], extra: 1}
"""
    assert _errors(text) == [
        "c.yaml:1: workers: expected an integer, got string 'many'",
        "c.yaml:2: limits.max_concurrent_streams: 0 is out of range; expected an integer from 1 to 65535",
        "c.yaml:5: listeners[0].address: '127.0.0.1:99999' is not a valid address; expected a port from 0 to 65535 after the colon",
        "c.yaml:6: listeners[0].protocol: 'quic' is not valid; expected one of auto, http1, http2, tcp",
        "c.yaml:8: listeners[0].routes[0].match.headers.x-a: expected a value to match exactly, or a mapping "
        "with one of exact, present, regex; got integer 7",
        "c.yaml:8: listeners[0].routes[0].match.method: expected an HTTP method or a list of methods, got integer 5",
        "c.yaml:10: listeners[0].routes[0].timeout: 'soon' is not a valid duration; expected a number with a unit ms, s, m or h (e.g. 250ms, 1.5s, 2m) or a number of seconds",
        "c.yaml:11: admin: expected a mapping, got string '127.0.0.1:15000'",
        "c.yaml:13: clusters[0].lb: 'fastest' is not valid; expected one of round_robin, random, least_request, p2c_ewma, ring_hash, maglev",
        "c.yaml:13: clusters[0].endpoints[0].weight: -1 is out of range; expected an integer from 0 to 1000000",
        "c.yaml:13: clusters[0].extra: unknown key 'extra'; valid keys: name, lb, protocol, connect_timeout, idle_timeout, tls, endpoints, discovery, health_check, outlier_detection, circuit_breakers, original_destination",
    ]


def test_no_pydantic_wording_leaks() -> None:
    text = HEAD + "    routes: [{match: {path: 3, present: 1}, cluster: [x], timeout: yes}]\nclusters: {}\n"
    for line in _errors(text):
        assert "Input should" not in line and "pydantic" not in line and "http" not in line.split(": ", 1)[0]


def test_missing_key_points_at_the_parent_mapping() -> None:
    text = "listeners:\n  - name: outbound\n    address: 127.0.0.1:15001\n    routes:\n      - match: {}\n        cluster: c\nclusters:\n  - lb: random\n    endpoints: [{weight: 2}]\n"
    assert _errors(text) == [
        "c.yaml:8: clusters[0].name: missing required key 'name'",
        "c.yaml:9: clusters[0].endpoints[0].address: missing required key 'address'",
    ]


def test_unknown_key_in_nested_section_lists_that_sections_keys() -> None:
    assert _errors(HEAD + "    routes:\n      - match: {prefix: /}\n        cluster: c\nclusters: [{name: c}]\n") == [
        "c.yaml:5: listeners[0].routes[0].match.prefix: unknown key 'prefix'; "
        "valid keys: host, path, path_prefix, path_regex, headers, method, original_destination, connect, ports"
    ]
    assert _errors(HEAD + "    routes: [{cluster: c, match_: {}}]\nclusters: [{name: c}]\n") == [
        "c.yaml:4: listeners[0].routes[0].match_: unknown key 'match_'; valid keys: "
        "name, match, cluster, split, redirect, direct_response, prefix_rewrite, regex_rewrite, host_rewrite, "
        "rate_limit, fault, mirror, request_headers, response_headers, timeout, timeout_covers, idle_timeout, hash_policy, retry"
    ]


def test_header_names_differing_only_in_case_are_one_header() -> None:
    text = (
        HEAD
        + "    routes:\n      - match: {headers: {X-Channel: beta, x-channel: gamma}}\n        cluster: c\nclusters: [{name: c}]\n"
    )
    assert _errors(text) == [
        "c.yaml:5: listeners[0].routes[0].match.headers.x-channel: header 'x-channel' is listed twice "
        "(as 'X-Channel' too); header names are case-insensitive"
    ]


def test_header_match_needs_one_condition() -> None:
    text = (
        HEAD
        + "    routes:\n      - match:\n          headers:\n            x-a: {}\n        cluster: c\nclusters: [{name: c}]\n"
    )
    assert _errors(text) == [
        "c.yaml:7: listeners[0].routes[0].match.headers.x-a: a header match needs exactly one of exact, present, regex; found none"
    ]


def test_listeners_on_equal_addresses_spelled_differently_collide() -> None:
    text = "listeners:\n  - {name: a, address: '[::1]:80'}\n  - {name: b, address: '[0:0::1]:80'}\n  - {name: c, address: '[::1]:0'}\n  - {name: d, address: '[::1]:0'}\n"
    assert _errors(text) == [
        "c.yaml:3: listeners[1].address: listener 'b' and listener 'a' (listeners[0]) both use address [0:0::1]:80; "
        "each listener needs its own address"
    ]


def test_every_unknown_cluster_is_reported() -> None:
    text = (
        HEAD
        + "    routes:\n      - cluster: a\n      - split: [{cluster: b, weight: 1}, {cluster: c, weight: 1}]\nclusters: [{name: c}, {name: d}]\n"
    )
    assert _errors(text) == [
        "c.yaml:5: listeners[0].routes[0].cluster: unknown cluster 'a'; defined clusters: c, d",
        "c.yaml:6: listeners[0].routes[1].split[0].cluster: unknown cluster 'b'; defined clusters: c, d",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "c.yaml: the config is empty; expected a mapping with at least 'listeners'"),
        ("# only a comment\n", "c.yaml: the config is empty; expected a mapping with at least 'listeners'"),
        ("just text\n", "c.yaml:1: expected a mapping, got string 'just text'"),
        (
            "a: 1\n---\nb: 2\n",
            "c.yaml:2: invalid YAML: expected a single document in the stream, but found another document",
        ),
        (
            "listeners: [\n",
            "c.yaml:2: invalid YAML: expected the node content, but found '<stream end>' (while parsing a flow node on line 2)",
        ),
        ("a: *nothing\n", "c.yaml:1: invalid YAML: found undefined alias 'nothing'"),
        ("? [a, b]\n: 1\n", "c.yaml:1: a mapping key must be a plain string"),
        (
            "workers: !!python/object:os.system 1\n",
            "c.yaml:1: workers: unsupported YAML tag tag:yaml.org,2002:python/object:os.system",
        ),
        ("workers: !!binary aGk=\nworkers: 2\n", "c.yaml:2: workers: duplicate key 'workers'; first defined on line 1"),
        (
            "listeners:\n  - &a {name: a, address: '127.0.0.1:0', routes: [*a]}\n",
            "c.yaml:2: listeners[0].routes[0]: recursive YAML alias; a config must be a tree",
        ),
    ],
    ids=[
        "empty",
        "comment-only",
        "scalar",
        "two-documents",
        "unclosed",
        "undefined-alias",
        "complex-key",
        "python-tag",
        "duplicate",
        "recursive",
    ],
)
def test_yaml_level_problems(text: str, expected: str) -> None:
    assert _errors(text) == [expected]


def test_merge_keys_fill_in_without_overriding() -> None:
    cfg = parse_config(
        "listeners: [{name: l, address: '127.0.0.1:0'}]\n"
        "clusters:\n"
        "  - &base {name: a, lb: random, protocol: http2}\n"
        "  - {<<: *base, name: b, lb: round_robin}\n"
    )
    b = cfg.clusters[1]
    assert (b.name, b.lb, b.protocol) == ("b", "round_robin", "http2")


def test_keys_are_read_as_written() -> None:
    """`on:` is YAML 1.1 for true; as a header name it must stay the string 'on'."""
    cfg = parse_config(
        HEAD + "    routes: [{cluster: c, request_headers: {add: {on: 'x', 200: 'y'}}}]\nclusters: [{name: c}]\n"
    )
    assert cfg.listeners[0].routes[0].request_headers.add == {"on": "x", "200": "y"}


@pytest.mark.parametrize(
    "path",
    [
        (),
        ("workers",),
        ("listeners", 0, "routes", 12, "match", "path_regex"),
        ("headers", "x-channel", "regex"),
        ("add", "x mesh"),
        ("add", 'we"ird\\'),
    ],
)
def test_path_notation_round_trips(path: tuple[str | int, ...]) -> None:
    assert parse_path(format_path(path)) == path


def test_path_notation() -> None:
    assert (
        format_path(("listeners", 0, "routes", 1, "match", "path_regex")) == "listeners[0].routes[1].match.path_regex"
    )
    assert format_path(("headers", "a.b")) == 'headers["a.b"]'
    assert parse_path("clusters[3].endpoints[0].address") == ("clusters", 3, "endpoints", 0, "address")
