"""The run as a picture: a row of bar panels per scenario, one bar per target in each panel."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a benchmark machine
import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.axes import Axes
from matplotlib.ticker import StrMethodFormatter

from .figures import FIGURES
from .suite import ScenarioResult

_COLOURS = {
    "meshproxy": "#d62728",
    "envoy": "#9467bd",
    "haproxy": "#1f77b4",
    "nginx": "#2ca02c",
    "direct": "#7f7f7f",
}


def draw_chart(results: list[ScenarioResult], title: str, path: Path) -> Path:
    columns = max(len(result.scenario.charted) for result in results)
    figure = plt.figure(figsize=(4.6 * columns, 3.6 * len(results)), layout="constrained")
    figure.suptitle(title, fontsize=13)
    for row, result in zip(figure.subfigures(len(results), 1, squeeze=False)[:, 0], results):
        row.suptitle(result.scenario.title, fontsize=11, fontweight="bold", x=0.01, ha="left")
        panels = row.subplots(1, columns, squeeze=False)[0]
        for panel, key in zip(panels, result.scenario.charted):
            _panel(panel, result, key)
        for panel in panels[len(result.scenario.charted) :]:
            panel.axis("off")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _panel(panel: Axes, result: ScenarioResult, key: str) -> None:
    names = list(result.outcomes)
    heights, labels = [], []
    for name in names:
        outcome = result.outcomes[name]
        value = outcome.figures.get(key) if outcome.status == "ok" else None
        heights.append(value or 0.0)
        if outcome.status != "ok":
            labels.append(outcome.status)
        elif value is None:
            labels.append("-")
        else:
            labels.append(FIGURES[key].unit_format.format(value))
    bars = panel.bar(names, heights, color=[_COLOURS.get(name, "#17becf") for name in names])
    panel.bar_label(bars, labels=labels, fontsize=8, padding=2)
    better = "lower" if FIGURES[key].lower_is_better else "higher"
    panel.set_title(f"{FIGURES[key].label} ({better} is better)", fontsize=9)
    panel.tick_params(axis="x", labelsize=8)
    panel.tick_params(axis="y", labelsize=8)
    panel.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    panel.margins(y=0.2)
