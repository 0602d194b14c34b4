"""What locust saw, read from the files one headless run leaves behind.

The counts come from `--json-file`, written at shutdown from the final stats. The `_stats.csv`
is no good for that: locust rewrites it once a second while the run goes on and not again at
the end, so it misses the last second and every request finished during `--stop-timeout`
(locust issues #1806, #2299). Failure messages come from `_failures.csv`, written the same way:
only their kinds are shown, and those of the last second may be missing (locust.html has them all).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RequestTotals:
    requests: int
    failures: int
    median_ms: int
    p99_ms: int
    max_ms: int


@dataclass
class LocustTotals:
    requests: int
    failures: int
    by_name: dict[str, RequestTotals]  # "METHOD name" as locust groups them
    failure_reasons: list[tuple[str, str]]  # (request, error)


def read_locust_totals(json_file: Path, failures_csv: Path) -> LocustTotals:
    by_name: dict[str, RequestTotals] = {}
    for entry in json.loads(json_file.read_text()):
        # Response times are bucketed by locust (exact below 100 ms, then 2 significant digits).
        times = sorted((float(ms), count) for ms, count in entry["response_times"].items())
        by_name[f"{entry['method']} {entry['name']}"] = RequestTotals(
            entry["num_requests"],
            entry["num_failures"],
            _percentile(times, 0.50),
            _percentile(times, 0.99),
            round(entry["max_response_time"] or 0),
        )
    reasons: list[tuple[str, str]] = []
    if failures_csv.exists():
        with open(failures_csv, newline="") as rows:
            for row in csv.DictReader(rows):
                reasons.append((f"{row['Method']} {row['Name']}", row["Error"]))
    return LocustTotals(
        requests=sum(t.requests for t in by_name.values()),
        failures=sum(t.failures for t in by_name.values()),
        by_name=by_name,
        failure_reasons=reasons,
    )


def _percentile(times: list[tuple[float, int]], fraction: float) -> int:
    total = sum(count for _, count in times)
    seen = 0
    for ms, count in times:
        seen += count
        if seen >= fraction * total:
            return round(ms)
    return 0
