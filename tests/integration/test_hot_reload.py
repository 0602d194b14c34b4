"""Hot reload of ``meshproxy run``: the config file is watched (written in place, replaced by
rename as editors do, or swapped by symlink as Kubernetes does), ``POST /reload`` reloads on
request, and reloads from every trigger run one at a time. A broken file is refused with the
message ``validate`` gives, counted, and the running config stays. Real upstreams, real clients,
over loopback."""

from __future__ import annotations

import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import BAD_ROUTE, ProxyProcess, Upstream, one_route_config, served_by, wait_until
from procfs import children

ProxyRunner = Callable[..., ProxyProcess]
Upstreams = Callable[[str], Upstream]
CHANGES = 50
LOAD_CLIENTS = 4
# Generous: only a change that never takes effect should fail the test, not a slow machine.
OBSERVE_WITHIN = 15.0


@pytest.fixture
def admin_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def write_in_place(path: Path, document: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def write_by_rename(path: Path, document: dict[str, Any]) -> None:
    """As editors and ``kubectl cp`` do: a new file renamed over the old one."""
    fresh = path.with_name(f".{path.name}.tmp")
    fresh.write_text(yaml.safe_dump(document, sort_keys=False))
    os.replace(fresh, path)


def app_config(*endpoints: dict[str, Any]) -> dict[str, Any]:
    return one_route_config({"name": "app", "endpoints": list(endpoints)}, admin={"address": "127.0.0.1:0"})


def sidecar_on(tmp_path: Path, meshproxy_run: ProxyRunner, upstream: Upstream, *extra: str) -> tuple[Path, ProxyProcess]:
    """``meshproxy run`` on a config file, written in place, that sends everything to ``upstream``."""
    path = tmp_path / "sidecar.yaml"
    write_in_place(path, app_config({"address": upstream.address}))
    return path, meshproxy_run(path, *extra)


def stats(admin_client: httpx.Client, proxy: ProxyProcess) -> dict[str, Any]:
    document: dict[str, Any] = admin_client.get(f"http://{proxy.admin}/stats").json()
    return document


def change(number: int, upstreams: list[Upstream]) -> tuple[dict[str, Any], str]:
    """Change ``number`` of the series and the upstream that serves once it is in effect. Each
    change moves traffic to the other upstream: every other pair of changes by pointing the
    route at another cluster, the others by changing a cluster's endpoint list."""
    target, other = (upstreams[1], upstreams[0]) if number % 2 else (upstreams[0], upstreams[1])
    config = one_route_config(
        {"name": "one", "endpoints": [{"address": upstreams[0].address}]},
        {"name": "two", "endpoints": [{"address": upstreams[1].address}, {"address": upstreams[2].address, "weight": 0}]},
        admin={"address": "127.0.0.1:0"},
    )
    if (number // 2) % 2:
        config["listeners"][0]["routes"] = [{"name": "by-cluster", "cluster": "one" if target is upstreams[0] else "two"}]
    else:
        config["clusters"][0]["endpoints"] = [{"address": target.address}, {"address": other.address, "weight": 0}]
        config["listeners"][0]["routes"] = [{"name": "by-endpoints", "cluster": "one"}]
    return config, target.name


class Load:
    """Clients sending requests through the proxy, each on its own kept-alive connection, until
    stopped; every outcome is kept."""

    def __init__(self, address: str, clients: int) -> None:
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(address,)) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self, address: str) -> None:
        with httpx.Client(base_url=f"http://{address}", timeout=30) as client:
            while not self._stop.is_set():
                try:
                    self.statuses.append(client.get("/anything").status_code)
                except httpx.HTTPError as error:
                    self.errors.append(repr(error))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_fifty_file_changes_under_load_fail_no_request_and_each_takes_effect(
    tmp_path: Path, meshproxy_run: ProxyRunner, upstreams: Upstreams, admin_client: httpx.Client
) -> None:
    backends = [upstreams("v1"), upstreams("v2"), upstreams("v3")]
    path = tmp_path / "sidecar.yaml"
    initial, serving = change(0, backends)
    write_in_place(path, initial)
    proxy = meshproxy_run(path)
    address = proxy.address("outbound")
    assert served_by(address) == serving

    load = Load(address, LOAD_CLIENTS)
    took: list[float] = []
    try:
        with httpx.Client(base_url=f"http://{address}", timeout=30) as observer:
            for number in range(1, CHANGES + 1):
                config, target = change(number, backends)
                # Both ways files get replaced: in place, and by rename.
                (write_by_rename if number % 2 else write_in_place)(path, config)
                written = time.monotonic()
                deadline = written + OBSERVE_WITHIN
                while observer.get("/anything").json()["upstream"] != target:
                    assert time.monotonic() < deadline, f"change {number} not in effect after {OBSERVE_WITHIN}s"
                    # Polls leave the CPU to the validator and the proxy (two cores, shared).
                    time.sleep(0.005)
                took.append(time.monotonic() - written)
    finally:
        load.stop()

    assert load.errors == []
    assert len(load.statuses) >= CHANGES
    assert set(load.statuses) == {200}
    # One reload per change: none missed, none refused, none doubled. (The last one is counted
    # once its swap has returned, which may be after the observer saw it.)
    wait_until(lambda: stats(admin_client, proxy)["reload_outcomes"]["succeeded"] >= CHANGES, timeout=OBSERVE_WITHIN,
               what="the last reload to be counted")
    counts = stats(admin_client, proxy)
    assert counts["config_version"] == CHANGES + 1
    assert counts["reload_outcomes"] == {"succeeded": CHANGES, "failed": 0}
    print(f"\n{CHANGES} config changes under load ({LOAD_CLIENTS} clients, {len(load.statuses)} requests, all 200): "
          f"write to first request on the new upstream: median {statistics.median(took) * 1000:.0f} ms, "
          f"max {max(took) * 1000:.0f} ms, min {min(took) * 1000:.0f} ms", file=sys.stderr)


def test_a_broken_file_is_refused_with_the_validate_message_counted_and_the_proxy_keeps_serving(
    tmp_path: Path, meshproxy_run: ProxyRunner, upstreams: Upstreams, admin_client: httpx.Client
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    path, proxy = sidecar_on(tmp_path, meshproxy_run, v1)
    address = proxy.address("outbound")

    path.write_text(BAD_ROUTE)
    issue = f"{path}:5: listeners[0].routes[0].cluster: unknown cluster 'nope'; defined clusters: app\n"
    wait_until(lambda: issue in proxy.log_lines, timeout=OBSERVE_WITHIN, what="the refusal in the log")
    refusal = proxy.log_lines.index(issue) - 1
    assert proxy.log_lines[refusal] == "meshproxy: reload (file changed) refused, keeping the running config:\n"
    assert stats(admin_client, proxy)["reload_outcomes"] == {"succeeded": 0, "failed": 1}
    assert served_by(address) == "v1"

    # POST /reload of the same file answers with the same message.
    response = admin_client.post(f"http://{proxy.admin}/reload")
    assert (response.status_code, response.text) == (422, issue)
    assert stats(admin_client, proxy)["reload_outcomes"] == {"succeeded": 0, "failed": 2}
    assert stats(admin_client, proxy)["config_version"] == 1

    write_by_rename(path, app_config({"address": v2.address}))
    wait_until(lambda: served_by(address) == "v2", timeout=OBSERVE_WITHIN, what="the fixed file to take effect")
    # Counted and logged once the swap has returned, which may be after the first request saw it.
    line = f"meshproxy: reloaded {path}: config version 2 (file changed)\n"
    wait_until(lambda: line in proxy.log_lines, timeout=OBSERVE_WITHIN, what="the reload in the log")
    assert stats(admin_client, proxy)["reload_outcomes"] == {"succeeded": 1, "failed": 2}


def test_a_file_seen_empty_while_written_in_place_is_waited_for_not_refused(
    tmp_path: Path, meshproxy_run: ProxyRunner, upstreams: Upstreams, admin_client: httpx.Client
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    path, proxy = sidecar_on(tmp_path, meshproxy_run, v1)
    address = proxy.address("outbound")

    # Truncated, as a write in place begins; the watch sees it before the write.
    path.write_text("")
    line = f"meshproxy: {path} is empty; waiting for it to be written (the running config stays)\n"
    wait_until(lambda: line in proxy.log_lines, timeout=OBSERVE_WITHIN, what="the wait in the log")
    assert stats(admin_client, proxy)["reload_outcomes"] == {"succeeded": 0, "failed": 0}
    assert served_by(address) == "v1"

    write_in_place(path, app_config({"address": v2.address}))
    wait_until(lambda: served_by(address) == "v2", timeout=OBSERVE_WITHIN, what="the written file to take effect")
    wait_until(lambda: stats(admin_client, proxy)["reload_outcomes"] == {"succeeded": 1, "failed": 0},
               timeout=OBSERVE_WITHIN, what="one reload to be counted")


def test_post_reload_answers_with_the_new_version(
    tmp_path: Path, meshproxy_run: ProxyRunner, upstreams: Upstreams, admin_client: httpx.Client
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    path, proxy = sidecar_on(tmp_path, meshproxy_run, v1, "--no-watch")

    write_in_place(path, app_config({"address": v2.address}))
    response = admin_client.post(f"http://{proxy.admin}/reload")
    assert (response.status_code, response.json()) == (200, {"config_version": 2})
    assert served_by(proxy.address("outbound")) == "v2"
    wait_until(lambda: f"meshproxy: reloaded {path}: config version 2 (POST /reload)\n" in proxy.log_lines,
               timeout=10, what="the reload in the log")


def test_a_config_swapped_in_by_symlink_as_kubernetes_does_is_reloaded(
    tmp_path: Path, meshproxy_run: ProxyRunner, upstreams: Upstreams
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    # A ConfigMap volume: sidecar.yaml -> ..data/sidecar.yaml, ..data -> a timestamped folder.
    first, second = tmp_path / "..2024_01", tmp_path / "..2024_02"
    first.mkdir()
    second.mkdir()
    write_in_place(first / "sidecar.yaml", app_config({"address": v1.address}))
    write_in_place(second / "sidecar.yaml", app_config({"address": v2.address}))
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "sidecar.yaml").symlink_to("..data/sidecar.yaml")
    proxy = meshproxy_run(tmp_path / "sidecar.yaml")
    address = proxy.address("outbound")
    assert served_by(address) == "v1"

    # The update: a new link renamed over ..data; sidecar.yaml itself never changes.
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    wait_until(lambda: served_by(address) == "v2", timeout=OBSERVE_WITHIN, what="the swapped config to take effect")


def test_reloads_from_every_trigger_run_one_at_a_time(
    tmp_path: Path, meshproxy_run: ProxyRunner, upstreams: Upstreams, admin_client: httpx.Client
) -> None:
    # Many routes, so each validator child runs long enough for overlapping ones to be seen.
    clusters = [{"name": f"c{i}", "endpoints": [{"address": f"127.0.0.1:{10_000 + i}"}]} for i in range(1000)]
    routes = [{"match": {"path_prefix": f"/c{i}/"}, "cluster": f"c{i}"} for i in range(1000)]
    app = {"name": "app", "endpoints": [{"address": upstreams("v1").address}]}
    path = tmp_path / "sidecar.yaml"
    write_in_place(path, one_route_config(app, *clusters, routes=[*routes, {"cluster": "app"}],
                                          admin={"address": "127.0.0.1:0"}))
    proxy = meshproxy_run(path, "--no-watch")

    answers: list[httpx.Response] = []
    posts = [threading.Thread(target=lambda: answers.append(admin_client.post(f"http://{proxy.admin}/reload")))
             for _ in range(3)]
    for post in posts:
        post.start()
    proxy.process.send_signal(signal.SIGHUP)
    most_at_once = 0
    # Until all four are counted (a reload is counted once its swap has returned).
    deadline = time.monotonic() + 120
    while any(post.is_alive() for post in posts) or sum(stats(admin_client, proxy)["reload_outcomes"].values()) < 4:
        assert time.monotonic() < deadline, "four reloads did not finish in 120 s"
        # Each child of the sidecar is a `meshproxy validate` run.
        most_at_once = max(most_at_once, len(children(proxy.process.pid)))
    for post in posts:
        post.join()

    assert most_at_once == 1
    assert sorted(answer.json()["config_version"] for answer in answers if answer.status_code == 200) in (
        [2, 3, 4], [2, 3, 5], [2, 4, 5], [3, 4, 5])
    assert stats(admin_client, proxy)["reload_outcomes"] == {"succeeded": 4, "failed": 0}
