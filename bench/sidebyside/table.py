"""The terminal report: machine facts, then a table per scenario with every target's figures
and, beside each, the ratio meshproxy ÷ that target."""

from __future__ import annotations

from .figures import FIGURES, Outcome
from .suite import ScenarioResult, Settings

SUBJECT = "meshproxy"


def render_report(
    results: list[ScenarioResult],
    machine: dict[str, str | int | float],
    versions: dict[str, str],
    settings: Settings,
) -> str:
    lines = [
        "== Machine",
        (
            f"  cpu: {machine['cpu_model']}, {machine['nproc']} cores, "
            f"{machine['memory_gib']} GiB; {machine['os']}, kernel {machine['kernel']}"
        ),
        f"  busy before start (other processes): {machine['busy_before_start']}",
        *(f"  {name}: {version}" for name, version in versions.items()),
        (
            f"  runs: {settings.seconds}s each after a {settings.warmup_seconds}s warm-up, "
            f"median of {settings.repeats}; proxies pinned to core 0, upstream and load to core 1"
        ),
        f"  (x.xx×) = {SUBJECT} ÷ that target: below 1 means {SUBJECT} is lower",
    ]
    for result in results:
        lines += ["", *_scenario_table(result)]
    return "\n".join(lines)


def _scenario_table(result: ScenarioResult) -> list[str]:
    scenario, outcomes = result.scenario, result.outcomes
    names = list(outcomes)
    subject = outcomes.get(SUBJECT)
    rows = [["", *names]]
    for key in scenario.figures:
        row = [FIGURES[key].label]
        for name in names:
            row.append(_cell(key, outcomes[name], subject if name != SUBJECT else None))
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [f"== {scenario.title}: {scenario.load.describe()}"]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:])
        ]
        lines.append("  " + "   ".join(cells).rstrip())
    for name, outcome in outcomes.items():
        if outcome.status != "ok":
            lines.append(f"  {name}: {outcome.status}: {_first_line(outcome.reason)}")
    for goal in scenario.goals:
        ratio = goal.measured(outcomes, SUBJECT)
        verdict = (
            "no figure"
            if ratio is None
            else f"{ratio:.2f}×, {'met' if goal.met(ratio) else 'not met'}"
        )
        lines.append(f"  goal: {SUBJECT} {goal.describe()}: {verdict}")
    return lines


def _cell(key: str, outcome: Outcome, subject: Outcome | None) -> str:
    if outcome.status != "ok":
        return outcome.status.upper() if outcome.status == "error" else outcome.status
    value = outcome.figures.get(key)
    if value is None:
        return "-"
    text = FIGURES[key].unit_format.format(value)
    if subject is None or subject.status != "ok" or not FIGURES[key].ratio:
        return text
    mine = subject.figures.get(key)
    if mine is None or value <= 0 or mine < 0:  # a ratio of negative latencies means nothing
        return text
    return f"{text} ({mine / value:.2f}×)"


def _first_line(reason: str | None) -> str:
    return (reason or "").strip().splitlines()[0] if reason else ""
