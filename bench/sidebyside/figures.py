"""The figures a measured run yields, their names and units, and how repeated runs combine."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Figure:
    """`ratio`: whether meshproxy ÷ target means anything for this figure (for how busy a core
    was, it does not: it describes the run, not the proxy)."""

    label: str
    unit_format: str
    lower_is_better: bool
    ratio: bool = True


# One name per figure, used in the JSON, the table and the chart alike.
FIGURES = {
    "rps": Figure("requests/s", "{:,.0f}", lower_is_better=False),
    "proxy_cpu_us_per_req": Figure("proxy cpu µs/req", "{:.1f}", lower_is_better=True),
    "proxy_core_busy_pct": Figure("proxy core busy %", "{:.0f}", True, ratio=False),
    "proxy_core_others_pct": Figure("proxy core, others %", "{:.0f}", True, ratio=False),
    "load_core_busy_pct": Figure("load core busy %", "{:.0f}", True, ratio=False),
    "p50_us": Figure("p50 µs", "{:,.0f}", lower_is_better=True),
    "p99_us": Figure("p99 µs", "{:,.0f}", lower_is_better=True),
    "added_p50_us": Figure("added p50 µs", "{:,.1f}", lower_is_better=True),
    "added_p99_us": Figure("added p99 µs", "{:,.1f}", lower_is_better=True),
    "rss_mib": Figure("proxy RSS MiB (peak)", "{:.1f}", lower_is_better=True),
    "rss_idle_mib": Figure("proxy RSS MiB idle", "{:.1f}", lower_is_better=True),
    "upstream_cpu_us_per_req": Figure("upstream cpu µs/req", "{:.1f}", lower_is_better=True),
}


@dataclass(frozen=True)
class RunFigures:
    """One measured run. Proxy figures are None for the direct target."""

    requests: int
    seconds: float
    rps: float
    p50_us: float
    p99_us: float
    upstream_cpu_us_per_req: float
    proxy_cpu_us_per_req: float | None
    proxy_core_busy_pct: float | None
    proxy_core_others_pct: float
    load_core_busy_pct: float
    rss_mib: float | None
    rss_end_mib: float | None


@dataclass
class Outcome:
    """A target's result in one scenario: "ok" with its runs and their medians, "error" or
    "n/a" with the reason."""

    status: str
    reason: str | None = None
    runs: list[RunFigures] = field(default_factory=list)
    figures: dict[str, float | None] = field(default_factory=dict)

    def summarise(self) -> None:
        """Each figure becomes the median of that figure over the runs: the machine is noisy,
        and one slow run should not decide a ratio."""
        for name in asdict(self.runs[0]):
            values = [getattr(run, name) for run in self.runs]
            if all(value is not None for value in values):
                self.figures[name] = statistics.median(values)
            else:
                self.figures[name] = None

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "reason": self.reason,
            "figures": self.figures,
            "runs": [asdict(run) for run in self.runs],
        }
