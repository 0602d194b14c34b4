"""The run's record on disk: bench/results/<timestamp>.json, copied to latest.json."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from .suite import ScenarioResult, Settings


def write_results(
    results: list[ScenarioResult],
    machine: dict[str, str | int | float],
    versions: dict[str, str],
    settings: Settings,
    started: datetime,
    into: Path,
) -> Path:
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
            }
            for result in results
        ],
    }
    into.mkdir(parents=True, exist_ok=True)
    path = into / f"{started:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    shutil.copyfile(path, into / "latest.json")
    return path
