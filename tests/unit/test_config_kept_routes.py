"""Routes kept from the config validated last (config/kept.py): a route given exactly as before
is the route validated before, and anything else about a route — a changed field, a value of
another type, an edit of the caller's dict since — is validated as new, with its own path in
any problem. The engine document is the same text either way."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from meshproxy.config import Config, ConfigError
from meshproxy.config.load import read_config


def mesh(routes: int = 6) -> dict[str, Any]:
    table: list[dict[str, Any]] = [
        {
            "name": f"r{k}",
            "match": {"host": f"svc-{k}.mesh.local", "path_prefix": f"/api/v{k}/", "headers": {"x-tenant": f"t{k}"}},
            "cluster": "a" if k % 2 else "b",
            "timeout": "2s",
        }
        for k in range(routes)
    ]
    table.append({"name": "canary", "split": [{"cluster": "a", "weight": 90}, {"cluster": "b", "weight": 10}]})
    return {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": table}],
        "clusters": [
            {"name": "a", "endpoints": [{"address": "127.0.0.1:8081"}]},
            {"name": "b", "endpoints": [{"address": "127.0.0.1:8082"}]},
        ],
    }


def validated(data: dict[str, Any]) -> Config:
    return read_config(copy.deepcopy(data))[0]


def routes_of(cfg: Config) -> list[Any]:
    return list(cfg.listeners[0].routes)


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        read_config(copy.deepcopy(data))
    return [f"{issue.path}: {issue.message}" for issue in caught.value.issues]


def test_a_route_given_again_exactly_is_the_route_validated_before() -> None:
    first, again = routes_of(validated(mesh())), routes_of(validated(mesh()))
    assert all(a is b for a, b in zip(first, again))


@pytest.mark.parametrize(
    ("change", "read"),
    [
        (lambda r: r.update(timeout="250ms"), lambda r: r.timeout.total_seconds() == 0.25),
        (lambda r: r["match"]["headers"].update({"x-tenant": "other"}), lambda r: r.match_.headers["x-tenant"].exact == "other"),
        (lambda r: r["match"].update(path_prefix="/v9/"), lambda r: r.match_.path_prefix == "/v9/"),
        (lambda r: r.update(cluster="b" if r["cluster"] == "a" else "a"), lambda r: r.cluster == "a"),
        (lambda r: r["match"].update(method="POST"), lambda r: r.match_.method == ["POST"]),
    ],
    ids=["timeout", "header match", "path prefix", "cluster", "method"],
)
def test_a_changed_route_is_validated_anew_and_the_others_are_kept(change: Any, read: Any) -> None:
    before = routes_of(validated(mesh()))
    data = mesh()
    change(data["listeners"][0]["routes"][2])
    after = routes_of(validated(data))
    assert after[2] is not before[2] and read(after[2])
    assert all(after[k] is before[k] for k in range(len(before)) if k != 2)


def test_a_changed_split_weight_is_validated_anew() -> None:
    validated(mesh())
    data = mesh()
    data["listeners"][0]["routes"][-1]["split"][1]["weight"] = 30
    cfg = validated(data)
    assert [w.weight for w in routes_of(cfg)[-1].split] == [90, 30]
    assert '"weight":30' in cfg.engine_json()


def test_an_equal_value_of_another_type_is_not_taken_for_the_kept_one() -> None:
    # 10.0 == 10 in Python; strict validation refuses a float where an integer is expected.
    validated(mesh())
    data = mesh()
    data["listeners"][0]["routes"][-1]["split"][1]["weight"] = 10.0
    assert errors(data) == ["listeners[0].routes[6].split[1].weight: expected an integer, got number 10.0"]


def test_a_dict_edited_after_its_validation_is_validated_again() -> None:
    data = mesh()
    read_config(data)
    data["listeners"][0]["routes"][3]["timeout"] = "soon"
    (problem,) = errors(data)
    assert problem.startswith("listeners[0].routes[3].timeout: ")


def test_a_problem_among_kept_routes_is_reported_at_its_own_path() -> None:
    validated(mesh())
    data = mesh()
    data["listeners"][0]["routes"][4]["match"]["path_prefix"] = "no-slash"
    del data["listeners"][0]["routes"][1]["cluster"]
    got = errors(data)
    assert [line.split(":")[0] for line in got] == ["listeners[0].routes[1]", "listeners[0].routes[4].match.path_prefix"]
    # Rules across routes and sections still run on kept routes.
    data = mesh()
    data["listeners"][0]["routes"][5]["name"] = "r0"
    assert [line.split(";")[0] for line in errors(data)] == ["listeners[0].routes[5].name: duplicate route name 'r0'"]
    data = mesh()
    data["clusters"] = data["clusters"][:1]
    assert [line.split(";")[0] for line in errors(data)] == [
        f"listeners[0].routes[{k}].cluster: unknown cluster 'b'" for k in (0, 2, 4)
    ] + ["listeners[0].routes[6].split[1].cluster: unknown cluster 'b'"]


def test_a_refused_config_leaves_the_kept_routes_as_they_were() -> None:
    before = routes_of(validated(mesh()))
    broken = mesh()
    broken["listeners"][0]["routes"][0]["timeout"] = "soon"
    errors(broken)
    assert all(a is b for a, b in zip(before, routes_of(validated(mesh()))))


def test_the_engine_document_is_the_same_text_for_kept_and_new_routes() -> None:
    data = mesh()
    for route in data["listeners"][0]["routes"]:
        route["timeout"] = "3s"  # routes no other config here has: nothing to keep the first time
    new, kept = validated(data), validated(data)
    assert all(a is b for a, b in zip(routes_of(new), routes_of(kept)))
    assert new.engine_json() == kept.engine_json()
    # As pydantic writes the listener itself.
    assert kept.listeners[0].engine_json() == kept.listeners[0].model_dump_json()
