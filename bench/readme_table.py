#!/usr/bin/env python3
"""Writes the results table of bench/README.md from bench/results/latest.json (what the last
`make bench` wrote), between the `<!-- results:begin -->` and `<!-- results:end -->` markers.

    .venv/bin/python bench/readme_table.py           # rewrite the table; `make docs` runs this
    .venv/bin/python bench/readme_table.py --check   # exit 1 if the table is not latest.json's

One row per scenario and headline figure, one column per target: meshproxy's figure, and beside
every other target's the ratio meshproxy ÷ that target, as the terminal report shows them.
tests/unit/test_docs_bench_table.py fails when the table is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    # Imported (by the tests) rather than run: appended, so bench/profile.py cannot stand in
    # for the standard library's module of that name.
    sys.path.append(str(BENCH))

from sidebyside.figures import FIGURES  # noqa: E402  (needs the path above)

README = BENCH / "README.md"
LATEST = BENCH / "results" / "latest.json"
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
COMMAND = ".venv/bin/python bench/readme_table.py"
SUBJECT = "meshproxy"
# The figures the table shows, in this order, each where the scenario reports it; the JSON
# (and the terminal report) hold every other one.
HEADLINE = (
    "proxy_cpu_us_per_req",
    "added_p50_us",
    "rss_idle_mib",
    "rss_mib",
    "handshakes_per_core_s",
    "proxy_cpu_us_per_handshake",
)


class TableError(Exception):
    """The README or the results cannot give a table: the message says which and why."""


def render(results: dict[str, Any]) -> str:
    """The block between the markers (markers excluded) for one results document."""
    targets: list[str] = []
    for scenario in results["scenarios"]:
        targets += [name for name in scenario["results"] if name not in targets]
    targets.sort(key=lambda name: name != SUBJECT)  # meshproxy first, the rest as run
    # A target that ran and has none of the headline figures (direct: there is no proxy to
    # measure) gets no column; one that failed keeps its column, to say so.
    targets = [target for target in targets if any(_shown(scenario, target) for scenario in results["scenarios"])]
    lines = [
        "",
        f"<!-- Written by bench/readme_table.py from bench/results/latest.json: run `{COMMAND}`. -->",
        "",
        _about(results),
        "",
        "| scenario | figure | " + " | ".join(targets) + " | goal |",
        "|---|---|" + "---:|" * len(targets) + "---|",
    ]
    for scenario in results["scenarios"]:
        shown = [key for key in HEADLINE if _reported(scenario, key)]
        for index, key in enumerate(shown):
            name = f"{scenario['title'].split(':')[0]} (`{scenario['key']}`)" if index == 0 else ""
            cells = [_cell(scenario["results"], target, key) for target in targets]
            goals = "; ".join(_goal(goal) for goal in scenario["goals"] if _goal_figure(goal) == key)
            lines.append(f"| {name} | {FIGURES[key].label.strip()} | " + " | ".join(cells) + f" | {goals} |")
    lines.append("")
    return "\n".join(lines)


def _about(results: dict[str, Any]) -> str:
    machine, settings, versions = results["machine"], results["settings"], results["versions"]
    started = datetime.fromisoformat(results["started"]).astimezone(timezone.utc)
    return (
        f"Run of {started:%Y-%m-%d %H:%M} UTC: {settings['seconds']} s runs after a "
        f"{settings['warmup_seconds']} s warm-up, median of {settings['repeats']}; "
        f"{machine['cpu_model']}, {machine['nproc']} cores, {machine['os']}, kernel {machine['kernel']} "
        f"(busy before the start: {machine['busy_before_start']}); "
        + ", ".join(f"{name} {_version(text)}" for name, text in versions.items())
        + f". (x.xx×) is {SUBJECT} ÷ that target: below 1, {SUBJECT} is lower."
    )


def _version(text: str) -> str:
    """The version number in a tool's own banner (`nginx version: nginx/1.22.1`)."""
    found = re.search(r"\d+\.\d+(?:\.\d+)?", text)
    return found.group(0) if found else text


def _shown(scenario: dict[str, Any], target: str) -> bool:
    outcome = scenario["results"].get(target)
    if outcome is None:
        return False
    return outcome["status"] != "ok" or any(outcome["figures"].get(key) is not None for key in HEADLINE)


def _reported(scenario: dict[str, Any], key: str) -> bool:
    return any(outcome["figures"].get(key) is not None for outcome in scenario["results"].values())


def _cell(outcomes: dict[str, Any], target: str, key: str) -> str:
    """As the terminal report writes it: the figure, and beside another target's the ratio."""
    outcome = outcomes.get(target)
    if outcome is None:
        return ""
    if outcome["status"] != "ok":
        return str(outcome["status"])
    value = outcome["figures"].get(key)
    if value is None:
        return "-"
    figure = FIGURES[key]
    text = figure.unit_format.format(value)
    subject = outcomes.get(SUBJECT)
    if target == SUBJECT or subject is None or subject["status"] != "ok" or not figure.ratio:
        return text
    mine = subject["figures"].get(key)
    if mine is None or value <= 0 or mine < 0:
        return text
    return f"{text} ({mine / value:.2f}×)"


def _goal_figure(goal: dict[str, Any]) -> str | None:
    """The figure a goal is about, read from its text (`meshproxy <label> ≤ 0.8 × haproxy`)."""
    for key, figure in FIGURES.items():
        if goal["goal"].startswith(f"{SUBJECT} {figure.label.strip()} "):
            return key
    return None


def _goal(goal: dict[str, Any]) -> str:
    asked = goal["goal"].split(" ", 1)[1]
    for figure in FIGURES.values():
        asked = asked.removeprefix(figure.label.strip() + " ")
    if goal["ratio"] is None:
        return f"{asked}: no figure"
    return f"{asked}: {goal['ratio']:.2f}×, {'met' if goal['met'] else 'not met'}"


def replace_table(readme: str, block: str) -> str:
    """`readme` with the text between the markers replaced by `block`."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise TableError(f"{README.name} has no {BEGIN} ... {END} markers to write the table between")
    return readme[: start + len(BEGIN)] + block + readme[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write bench/README.md's results table from latest.json.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the table is not what this would write")
    parser.add_argument("--results", type=Path, default=LATEST, help="the results document (default: %(default)s)")
    parser.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if not args.results.exists():
            raise TableError(f"no {args.results}: `make bench` writes it")
        readme = args.readme.read_text()
        wanted = replace_table(readme, render(json.loads(args.results.read_text())))
    except TableError as error:
        print(error, file=sys.stderr)
        return 1
    if args.check:
        if readme != wanted:
            print(f"the results table in {args.readme} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(wanted)
    print(f"wrote the results table of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
