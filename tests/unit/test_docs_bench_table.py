"""bench/README.md's results table is what bench/readme_table.py writes from the last run's
bench/results/latest.json, and the table shows figures and ratios as the terminal report does."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "readme_table.py"
LATEST = ROOT / "bench" / "results" / "latest.json"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _outcome(**figures: float | None) -> dict[str, Any]:
    return {"status": "ok", "reason": None, "figures": figures, "runs": []}


RESULTS: dict[str, Any] = {
    "started": "2026-12-03T12:35:00+00:00",
    "machine": {"cpu_model": "AMD EPYC", "nproc": 2, "os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.18",
                "busy_before_start": "cpu0 0%, cpu1 0%"},
    "versions": {"meshproxy": "meshproxy 0.1.0", "haproxy": "HAProxy version 2.6.12-1+deb12u4 2026/10/17"},
    "settings": {"seconds": 5, "warmup_seconds": 1, "repeats": 3},
    "scenarios": [
        {
            "key": "http1",
            "title": "1. HTTP/1.1 -> HTTP/1.1, 64 keep-alive connections",
            "results": {
                "meshproxy": _outcome(proxy_cpu_us_per_req=15.7, rps=62343.0),
                "envoy": _outcome(proxy_cpu_us_per_req=31.4, rps=31404.0),
                "haproxy": {"status": "error", "reason": "exited", "figures": {}, "runs": []},
                "direct": _outcome(proxy_cpu_us_per_req=None, rps=79052.0),
            },
            "goals": [{"goal": "meshproxy proxy cpu µs/req ≤ 0.35 × envoy", "ratio": 0.5, "met": False}],
        }
    ],
}


def test_the_committed_table_is_the_last_runs() -> None:
    if not LATEST.exists():
        pytest.skip("no bench/results/latest.json on this machine: `make bench` writes it")
    script = _script()
    readme = script.README.read_text()
    assert readme == script.replace_table(readme, script.render(json.loads(LATEST.read_text()))), (
        "the results table in bench/README.md is stale: run `.venv/bin/python bench/readme_table.py` "
        "(or `make docs`) and commit the result"
    )


def test_a_row_shows_meshproxys_figure_and_its_ratio_to_each_target_and_the_goal() -> None:
    block = _script().render(RESULTS)
    [row] = [line for line in block.splitlines() if "(`http1`)" in line]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == [
        "1. HTTP/1.1 -> HTTP/1.1, 64 keep-alive connections (`http1`)",
        "proxy cpu µs/req",
        "15.7",
        "31.4 (0.50×)",
        "error",
        "≤ 0.35 × envoy: 0.50×, not met",
    ], "direct reports no headline figure, so it has no column"
    assert "Run of 2026-12-03 12:35 UTC: 5 s runs after a 1 s warm-up, median of 3" in block
    assert "haproxy 2.6.12" in block


def test_a_figure_no_target_reports_has_no_row() -> None:
    results = copy.deepcopy(RESULTS)
    results["scenarios"][0]["results"]["meshproxy"]["figures"]["rss_mib"] = None
    block = _script().render(results)
    assert "RSS" not in block


def test_check_mode_fails_on_a_stale_table_and_passes_once_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    results, readme = tmp_path / "latest.json", tmp_path / "README.md"
    results.write_text(json.dumps(RESULTS))
    readme.write_text(f"# bench\n\n{script.BEGIN}\nold figures\n{script.END}\n\nafter\n")
    paths = ["--results", str(results), "--readme", str(readme)]
    assert script.main(["--check", *paths]) == 1
    assert "bench/readme_table.py" in capsys.readouterr().err
    assert script.main(paths) == 0
    assert script.main(["--check", *paths]) == 0
    text = readme.read_text()
    assert "old figures" not in text and text.endswith(f"{script.END}\n\nafter\n")


def test_a_readme_without_markers_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script()
    results, readme = tmp_path / "latest.json", tmp_path / "README.md"
    results.write_text(json.dumps(RESULTS))
    readme.write_text("# bench\n")
    assert script.main(["--results", str(results), "--readme", str(readme)]) == 1
    assert "markers" in capsys.readouterr().err
    assert readme.read_text() == "# bench\n"
