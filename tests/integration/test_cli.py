"""The ``meshproxy`` command as an operator runs it: ``validate``, ``version``, ``--help`` and
``run`` (listeners logged with their real ports, traffic, signals, reloads, bind failures,
worker threads, a sidecar process without pydantic), always as a subprocess against real
upstreams on loopback."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import meshproxy
import pytest
import yaml
from conftest import (
    BAD_ROUTE,
    ProxyProcess,
    Upstream,
    accepts_connections,
    body_json,
    occupied_address,
    one_route_config,
    served_by,
    wait_until,
)
from procfs import children, mapped_files, worker_threads

ProxyRunner = Callable[..., ProxyProcess]
Upstreams = Callable[[str], Upstream]

# Where the console script lives: beside the interpreter of the venv that installed it.
CONSOLE_SCRIPT = Path(sys.executable).parent / "meshproxy"


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshproxy", *args], check=False, capture_output=True, text=True,
                          timeout=timeout)


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def app_cluster(upstream: Upstream, name: str = "app") -> dict[str, Any]:
    return app_cluster_at(upstream.address, name)


def app_cluster_at(address: str, name: str = "app") -> dict[str, Any]:
    return {"name": name, "endpoints": [{"address": address}]}




def logged(proxy: ProxyProcess, text: str, timeout: float = 15.0) -> str:
    """The first line containing ``text`` that the proxy logged, waited for (the fixture
    keeps reading the log on a thread)."""
    found: list[str] = []

    def seen() -> bool:
        found.extend(line for line in proxy.log_lines if text in line)
        return bool(found)

    try:
        wait_until(seen, timeout=timeout, what=f"a log line containing {text!r}")
    except TimeoutError:
        raise AssertionError(f"no log line containing {text!r}; got:\n{''.join(proxy.log_lines)}") from None
    return found[0]


# --- validate ------------------------------------------------------------------------------


def test_validate_accepts_a_valid_file_with_a_one_line_summary(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "ok.yaml", one_route_config(
        {"name": "app", "endpoints": [{"address": "127.0.0.1:8080"}]},
        {"name": "other", "endpoints": [{"address": "127.0.0.1:8081"}]},
        routes=[{"match": {"path_prefix": "/other"}, "cluster": "other"}, {"cluster": "app"}],
    ))
    result = run_cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: valid (1 listeners, 2 routes, 2 clusters)\n"
    assert result.stderr == ""


BAD_LB = """\
listeners:
  - name: outbound
    address: 127.0.0.1:0
    routes:
      - cluster: app
clusters:
  - name: app
    lb: fastest
    endpoints:
      - address: 127.0.0.1:8080
"""


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(BAD_ROUTE, "{file}:5: listeners[0].routes[0].cluster: unknown cluster 'nope'; defined clusters: app",
                 id="unknown-cluster"),
    pytest.param(BAD_LB, "{file}:8: clusters[0].lb: 'fastest' is not valid; expected one of round_robin, random, "
                 "least_request, p2c_ewma, ring_hash, maglev", id="bad-lb"),
])
def test_validate_rejects_an_invalid_file_naming_file_line_path_and_message(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_cli("validate", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [expected.format(file=path)]


def test_validate_engine_document_prints_the_config_as_a_running_proxy_takes_it(tmp_path: Path) -> None:
    config = one_route_config(app_cluster_at("127.0.0.1:8080"), admin={"address": "127.0.0.1:15000"})
    config["listeners"].append({"name": "inbound", "address": "127.0.0.1:0", "protocol": "http2",
                                "routes": [{"cluster": "app"}]})
    path = write_yaml(tmp_path / "ok.yaml", config)
    result = run_cli("validate", "--engine-document", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document = meshproxy.EngineDocument.from_json(result.stdout)
    assert document == meshproxy.load_config(path).engine_document()
    assert document.admin_address == "127.0.0.1:15000"
    assert document.listener_protocols == {"outbound": "auto", "inbound": "http2"}
    assert document.source == str(path)


def test_validate_engine_document_of_an_invalid_file_prints_only_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_ROUTE)
    result = run_cli("validate", "--engine-document", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"{path}:5: listeners[0].routes[0].cluster: unknown cluster 'nope'; defined clusters: app\n"


def test_validate_of_a_missing_file_exits_1_saying_it_cannot_read_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    result = run_cli("validate", str(path))
    assert result.returncode == 1
    assert result.stderr == f"{path}: cannot read config file: No such file or directory\n"


# --- version and help ----------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    pytest.param([sys.executable, "-m", "meshproxy"], id="python-m"),
    pytest.param([str(CONSOLE_SCRIPT)], id="console-script"),
])
def test_version_prints_the_package_version(command: list[str]) -> None:
    result = subprocess.run([*command, "version"], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"meshproxy {meshproxy.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", meshproxy.__version__)


@pytest.mark.parametrize(("args", "mentions"), [
    pytest.param([], ["run", "validate", "wait-ready", "version"], id="top"),
    pytest.param(["run"], ["--config FILE", "--workers N", "--drain-timeout S", "--no-watch", "SIGINT", "SIGTERM",
                           "SIGHUP", "POST /reload", "inbound", "outbound"], id="run"),
    pytest.param(["wait-ready"], ["--admin HOST:PORT", "--timeout S", "GET /ready"], id="wait-ready"),
    pytest.param(["validate"], ["FILE", "FILE:LINE"], id="validate"),
    pytest.param(["version"], ["Print the version"], id="version"),
])
def test_help_of_each_command_describes_it(args: list[str], mentions: list[str]) -> None:
    result = run_cli(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: meshproxy {' '.join(args)}".rstrip())
    for text in mentions:
        assert text in result.stdout


def test_a_command_is_required() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "usage: meshproxy" in result.stderr


# --- run -----------------------------------------------------------------------------------


def test_run_logs_each_listener_with_its_bound_port_and_serves_traffic(
    meshproxy_run: ProxyRunner, upstreams: Upstreams
) -> None:
    v1 = upstreams("v1")
    config = one_route_config(app_cluster(v1), admin={"address": "127.0.0.1:0"})
    config["listeners"].append({"name": "inbound", "address": "127.0.0.1:0", "protocol": "http1",
                                "routes": [{"cluster": "app"}]})
    proxy = meshproxy_run(config)

    listener_lines = [line for line in proxy.log_lines if " listener " in line]
    assert len(listener_lines) == 2
    for name, protocol in [("outbound", "auto"), ("inbound", "http1")]:
        address = proxy.address(name)
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) != 0
        assert f"meshproxy: listener {name} on {address} ({protocol})\n" in listener_lines
        assert served_by(address) == "v1"
    assert re.fullmatch(r"meshproxy: ready: \d+ worker threads, config version 1\n", logged(proxy, "ready:"))


def test_sigterm_lets_a_request_in_flight_finish_then_exits_0(
    meshproxy_run: ProxyRunner, upstreams: Upstreams
) -> None:
    proxy = meshproxy_run(one_route_config(app_cluster(upstreams("v1")), admin={"address": "127.0.0.1:0"}))
    address = proxy.address("outbound")
    result: dict[str, Any] = {}

    def slow_request() -> None:
        try:
            with httpx.Client(timeout=10) as client:
                result["response"] = client.get(f"http://{address}/delay/1500")
        except httpx.HTTPError as error:
            result["error"] = error

    thread = threading.Thread(target=slow_request)
    thread.start()
    # In flight once the engine has sent it upstream, which holds it for 1.5s.
    wait_until(lambda: _sent_upstream(proxy), timeout=5, what="the slow request to reach the upstream")
    assert proxy.stop(signal.SIGTERM) == 0
    thread.join(timeout=10)

    assert "error" not in result, result
    assert result["response"].status_code == 200
    assert body_json(result["response"])["path"] == "/delay/1500"
    assert logged(proxy, "received") == "meshproxy: SIGTERM received: draining for up to 10s\n"
    assert proxy.log_lines[-1] == "meshproxy: stopped\n"
    assert not accepts_connections(address)


def _sent_upstream(proxy: ProxyProcess) -> bool:
    with httpx.Client(timeout=5) as client:
        stats = client.get(f"http://{proxy.admin}/stats").json()
    sent: int = stats["clusters"]["app"]["upstream_requests_total"]
    return sent == 1


def test_sigint_exits_0(meshproxy_run: ProxyRunner, upstreams: Upstreams) -> None:
    proxy = meshproxy_run(one_route_config(app_cluster(upstreams("v1"))), "--drain-timeout", "2.5")
    address = proxy.address("outbound")
    assert proxy.stop(signal.SIGINT) == 0
    assert logged(proxy, "received") == "meshproxy: SIGINT received: draining for up to 2.5s\n"
    assert not accepts_connections(address)


def test_sighup_reloads_a_changed_file(tmp_path: Path, meshproxy_run: ProxyRunner, upstreams: Upstreams) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    config = one_route_config(app_cluster(v1), app_cluster(v2, "canary"))
    path = write_yaml(tmp_path / "sidecar.yaml", config)
    proxy = meshproxy_run(path, "--no-watch")
    address = proxy.address("outbound")
    assert served_by(address, "/canary/x") == "v1"

    config["listeners"][0]["routes"].insert(0, {"match": {"path_prefix": "/canary"}, "cluster": "canary"})
    write_yaml(path, config)
    proxy.process.send_signal(signal.SIGHUP)
    assert logged(proxy, "reloaded") == f"meshproxy: reloaded {path}: config version 2 (SIGHUP)\n"

    assert served_by(address, "/canary/x") == "v2"
    assert served_by(address, "/other") == "v1"
    assert proxy.stop() == 0


def test_sighup_with_a_broken_file_logs_the_refusal_and_keeps_serving(
    tmp_path: Path, meshproxy_run: ProxyRunner, upstreams: Upstreams
) -> None:
    config = one_route_config(app_cluster(upstreams("v1")))
    path = write_yaml(tmp_path / "sidecar.yaml", config)
    proxy = meshproxy_run(path, "--no-watch")
    address = proxy.address("outbound")

    path.write_text(BAD_ROUTE)
    proxy.process.send_signal(signal.SIGHUP)
    issue = f"{path}:5: listeners[0].routes[0].cluster: unknown cluster 'nope'; defined clusters: app\n"
    assert logged(proxy, issue) == issue
    refusal = proxy.log_lines.index(issue) - 1
    assert proxy.log_lines[refusal] == "meshproxy: reload (SIGHUP) refused, keeping the running config:\n"
    assert served_by(address) == "v1"

    # The refused file did not count as a version: the next good one is version 2.
    write_yaml(path, config)
    proxy.process.send_signal(signal.SIGHUP)
    assert logged(proxy, "reloaded") == f"meshproxy: reloaded {path}: config version 2 (SIGHUP)\n"
    assert proxy.stop() == 0


def test_run_with_an_invalid_config_exits_1_with_the_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_LB)
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr == (
        f"{path}:8: clusters[0].lb: 'fastest' is not valid; expected one of round_robin, random, "
        "least_request, p2c_ewma, ring_hash, maglev\n"
    )


def test_run_with_a_listener_address_in_use_exits_1_naming_the_listener_and_address(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    with occupied_address() as busy:
        config = one_route_config(app_cluster(upstreams("v1")))
        config["listeners"].append({"name": "inbound", "address": busy, "routes": [{"cluster": "app"}]})
        path = write_yaml(tmp_path / "sidecar.yaml", config)
        result = run_cli("run", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr == f"{path}: listener 'inbound' cannot bind {busy}: Address already in use (os error 98)\n"


def test_run_with_the_admin_address_in_use_exits_1_naming_the_admin_address(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    with occupied_address() as busy:
        config = one_route_config(app_cluster(upstreams("v1")), admin={"address": busy})
        path = write_yaml(tmp_path / "sidecar.yaml", config)
        result = run_cli("run", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr == f"{path}: admin cannot bind {busy}: Address already in use (os error 98)\n"


def test_workers_option_sets_the_engine_worker_threads(
    meshproxy_run: ProxyRunner, upstreams: Upstreams
) -> None:
    proxy = meshproxy_run(one_route_config(app_cluster(upstreams("v1")), admin={"address": "127.0.0.1:0"}),
                          "--workers", "3")
    assert logged(proxy, "ready:") == "meshproxy: ready: 3 worker threads, config version 1\n"
    assert _worker_threads(proxy.process.pid, 3) == 3
    with httpx.Client(timeout=10) as client:
        assert client.get(f"http://{proxy.admin}/stats").json()["workers"] == 3


def test_workers_option_overrides_the_config(meshproxy_run: ProxyRunner, upstreams: Upstreams) -> None:
    proxy = meshproxy_run(one_route_config(app_cluster(upstreams("v1")), workers=1), "--workers", "2")
    assert _worker_threads(proxy.process.pid, 2) == 2


def test_workers_option_must_be_positive(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(tmp_path / "unused.yaml"), "--workers", "0")
    assert result.returncode == 2
    assert "--workers: must be at least 1, got 0" in result.stderr


def _worker_threads(pid: int, expected: int) -> int:
    """How many threads of ``pid`` are engine workers, once at least ``expected`` are: a new
    thread names itself when it starts running, so a count taken at once can be short."""

    wait_until(lambda: len(worker_threads(pid)) >= expected, timeout=10, what=f"{expected} meshproxy-worker threads")
    return len(worker_threads(pid))


# --- the sidecar process stays small -------------------------------------------------------


def test_importing_the_cli_and_the_embedding_api_leaves_the_config_schema_and_pydantic_unloaded() -> None:
    code = (
        "import sys, meshproxy.cli\n"
        "from meshproxy import EngineDocument, Proxy\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'meshproxy.config'))))\n"
        "print(meshproxy.Config.__module__, 'pydantic' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    # Nothing of the schema until a public name that needs it is used; then it loads.
    assert result.stdout.splitlines() == ["[]", "meshproxy.config.model True"]


def test_the_validator_child_imports_only_the_endpoint_list_reader_of_discovery(tmp_path: Path) -> None:
    # `run` starts this child for every config it loads; the config checks read endpoint files,
    # and nothing else of discovery (its runner, threads, merged snapshot) is any use there.
    (tmp_path / "endpoints.yaml").write_text("- address: 127.0.0.1:8080\n")
    path = write_yaml(tmp_path / "sidecar.yaml", {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "app"}]}],
        "clusters": [{"name": "app", "discovery": {"type": "file", "path": "endpoints.yaml"}}],
    })
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "meshproxy", "validate", "--engine-document",
                             str(path)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert sorted(m for m in imported if m.startswith("meshproxy.discovery")) == [
        "meshproxy.discovery", "meshproxy.discovery.endpoints"]


def test_run_never_loads_pydantic_into_the_sidecar_process_at_start_or_on_reload(
    tmp_path: Path, meshproxy_run: ProxyRunner, upstreams: Upstreams
) -> None:
    config = one_route_config(app_cluster(upstreams("v1")), admin={"address": "127.0.0.1:0"})
    path = write_yaml(tmp_path / "sidecar.yaml", config)
    proxy = meshproxy_run(path)
    # Both ways a sidecar reloads: the file changing (watched) and SIGHUP.
    path.write_text(BAD_ROUTE)
    logged(proxy, "unknown cluster 'nope'")
    write_yaml(path, config)
    assert logged(proxy, "reloaded") == f"meshproxy: reloaded {path}: config version 2 (file changed)\n"
    proxy.process.send_signal(signal.SIGHUP)
    assert logged(proxy, "(SIGHUP)") == f"meshproxy: reloaded {path}: config version 3 (SIGHUP)\n"
    # A scrape loads prometheus_client, and nothing of the schema with it.
    assert httpx.get(f"http://{proxy.admin}/metrics", timeout=10).status_code == 200

    mapped = mapped_files(proxy.process.pid)
    assert any(Path(file).name.startswith("_native.") for file in mapped), mapped  # the engine: the maps are read
    assert [file for file in mapped if "pydantic" in file] == []
    assert served_by(proxy.address("outbound")) == "v1"
    assert proxy.stop() == 0


def test_sigterm_during_a_reload_finishes_the_reload_then_drains_and_leaves_no_validator_behind(
    tmp_path: Path, meshproxy_run: ProxyRunner, upstreams: Upstreams
) -> None:
    # Many routes, so the validator child runs long enough to be seen running.
    clusters = [app_cluster_at(f"127.0.0.1:{10_000 + i}", f"c{i}") for i in range(1000)]
    routes = [{"match": {"path_prefix": f"/c{i}/"}, "cluster": f"c{i}"} for i in range(1000)]
    config = one_route_config(app_cluster(upstreams("v1")), *clusters, routes=[*routes, {"cluster": "app"}])
    path = write_yaml(tmp_path / "sidecar.yaml", config)
    proxy = meshproxy_run(path, "--no-watch")
    pid = proxy.process.pid

    proxy.process.send_signal(signal.SIGHUP)
    validators: list[int] = []
    wait_until(lambda: bool(validators.extend(children(pid)) or validators), timeout=10, what="the validator child")
    assert proxy.stop(signal.SIGTERM) == 0

    reloaded = proxy.log_lines.index(f"meshproxy: reloaded {path}: config version 2 (SIGHUP)\n")
    assert proxy.log_lines[reloaded + 1] == "meshproxy: SIGTERM received: draining for up to 10s\n"
    assert proxy.log_lines[-1] == "meshproxy: stopped\n"
    assert [child for child in validators if Path(f"/proc/{child}").exists()] == []
