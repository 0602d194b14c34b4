"""The run's record on disk: bench/results/<timestamp>.json, copied to latest.json."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from .figures import Goal
from .suite import ScenarioResult, Settings
from .table import SUBJECT


def write_results(
    results: list[ScenarioResult],
    machine: dict[str, str | int | float],
    versions: dict[str, str],
    settings: Settings,
    started: datetime,
    into: Path,
    latest: bool,
) -> Path:
    """Writes `<timestamp>.json` into `into`; a whole run (`latest`) also as `latest.json`, which
    the README table is written from: a partial or quick one must not replace it."""
    document = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine,
        "versions": versions,
        "settings": asdict(settings),
        "scenarios": [
            {
                "key": result.scenario.key,
                "title": result.scenario.title,
                "load": result.scenario.load.describe(),
                "route": result.scenario.route.value,
                "results": {name: outcome.to_json() for name, outcome in result.outcomes.items()},
                "goals": [_goal_json(goal, result) for goal in result.scenario.goals],
            }
            for result in results
        ],
    }
    into.mkdir(parents=True, exist_ok=True)
    path = into / f"{started:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    if latest:
        shutil.copyfile(path, into / "latest.json")
    return path


def _goal_json(goal: Goal, result: ScenarioResult) -> dict[str, object]:
    ratio = goal.measured(result.outcomes, SUBJECT)
    return {
        "goal": f"{SUBJECT} {goal.describe()}",
        "ratio": None if ratio is None else round(ratio, 3),
        "met": None if ratio is None else goal.met(ratio),
    }
