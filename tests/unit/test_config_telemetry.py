"""The access_log and tracing sections: defaults, what is refused and how it is said, where a
relative access log path points, and what the engine document carries for the span exporter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from meshproxy import EngineDocument
from meshproxy.config import ConfigError, load_config, parse_config
from meshproxy.engine_document import TracingExport
from meshproxy.tracing import traces_url

LISTENERS = "listeners: [{name: outbound, address: '127.0.0.1:15001'}]\n"
ALL_FIELDS = [
    "time", "duration_ms", "listener", "direction", "protocol", "method", "authority", "path", "status", "route",
    "cluster", "upstream_address", "bytes_in", "bytes_out", "request_id", "trace_id", "span_id", "client_address",
    "peer_identity", "error", "grpc_status",
]


def _problem(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text + LISTENERS)
    [issue] = caught.value.issues
    return str(issue)


def test_empty_sections_mean_every_field_of_every_request_and_every_new_trace() -> None:
    cfg = parse_config("access_log: {}\ntracing: {}\n" + LISTENERS)
    assert cfg.access_log is not None and cfg.tracing is not None
    assert (cfg.access_log.path, cfg.access_log.fields, cfg.access_log.sample) == ("stdout", ALL_FIELDS, 1.0)
    assert (cfg.tracing.otlp_endpoint, cfg.tracing.sample, cfg.tracing.service_name) == (
        "http://127.0.0.1:4318", 1.0, "meshproxy")
    document = json.loads(cfg.engine_json())
    assert document["access_log"] == {"path": "stdout", "fields": ALL_FIELDS, "sample": 1.0}


def test_without_the_sections_there_is_no_access_log_and_no_tracing() -> None:
    cfg = parse_config(LISTENERS)
    assert (cfg.access_log, cfg.tracing, cfg.engine_document().tracing) == (None, None, None)


def test_the_field_list_is_the_engines() -> None:
    """Python's list of fields and the engine's agree: the engine fills in its own default."""
    import meshproxy._native as native

    document = json.loads(native.normalize_config(json.dumps({"access_log": {}, "listeners": []})))
    assert document["access_log"]["fields"] == ALL_FIELDS


@pytest.mark.parametrize(("section", "message"), [
    ("access_log: {fields: [status, latency]}", "access_log.fields[1]: 'latency' is not valid; expected one of time, "),
    ("access_log: {fields: [status, path, status]}", "access_log.fields[2]: 'status' is listed twice (as fields[0] too)"),
    ("access_log: {fields: []}", "access_log.fields: expected at least 1 item(s), got none"),
    ("access_log: {sample: 1.5}", "access_log.sample: 1.5 is out of range; expected a number from 0.0 to 1.0"),
    ("access_log: {sample: '0.5'}", "access_log.sample: expected a number, got string '0.5'"),
    ("access_log: {path: ''}", "access_log.path: '' is not a valid file path"),
    ("tracing: {sample: -0.1}", "tracing.sample: -0.1 is out of range; expected a number from 0.0 to 1.0"),
    ("tracing: {otlp_endpoint: 'grpc://collector:4317'}", "tracing.otlp_endpoint: 'grpc://collector:4317' is not a "
                                                         "valid OTLP/HTTP endpoint"),
    ("tracing: {service_name: ''}", "tracing.service_name: must not be empty"),
    ("tracing: {endpoint: 'http://c:4318'}", "tracing.endpoint: unknown key 'endpoint'; valid keys: otlp_endpoint, "
                                             "sample, service_name"),
])
def test_invalid_sections_are_refused_at_their_field(section: str, message: str) -> None:
    assert message in _problem(section + "\n")


def test_a_relative_access_log_path_is_under_the_config_files_folder(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    path = tmp_path / "sidecar.yaml"
    path.write_text("access_log: {path: logs/access.jsonl}\n" + LISTENERS)
    cfg = load_config(path)
    assert cfg.access_log is not None and cfg.access_log.path == str(tmp_path / "logs" / "access.jsonl")
    path.write_text("access_log: {path: stdout}\n" + LISTENERS)
    assert load_config(path).engine_document().engine_json.count('"path":"stdout"') == 1


def test_an_access_log_in_a_missing_folder_is_refused_by_validation(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text("access_log:\n  path: missing/access.jsonl\n" + LISTENERS)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}:2: access_log.path: cannot write '{tmp_path}/missing/access.jsonl': the folder "
        f"'{tmp_path}/missing' does not exist"
    )
    assert not (tmp_path / "missing").exists()


def test_the_engine_document_carries_where_spans_go() -> None:
    cfg = parse_config("tracing: {otlp_endpoint: 'http://collector:4318', service_name: orders, sample: 0}\n" + LISTENERS)
    document = cfg.engine_document()
    assert document.tracing == TracingExport("http://collector:4318", "orders")
    assert EngineDocument.from_json(document.to_json()) == document
    assert json.loads(document.engine_json)["tracing"]["sample"] == 0.0


@pytest.mark.parametrize(("endpoint", "url"), [
    ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
    ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
    ("https://otel.example.com/custom/traces", "https://otel.example.com/custom/traces"),
])
def test_spans_go_to_v1_traces_under_a_base_url(endpoint: str, url: str) -> None:
    assert traces_url(endpoint) == url
