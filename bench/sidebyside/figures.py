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
    "proxy_cpu_us_per_req": Figure("proxy cpu µs/req", "{:,.1f}", lower_is_better=True),
    # The system part of that CPU: the sockets' syscalls, TCP/IP and wake-ups, the same work
    # for every proxy making the same calls; the rest is the proxy's own code.
    "proxy_kernel_us_per_req": Figure("  of which kernel", "{:,.1f}", lower_is_better=True),
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
    "handshakes_per_core_s": Figure("handshakes/s per core", "{:,.0f}", lower_is_better=False),
    "proxy_cpu_us_per_handshake": Figure("proxy cpu µs/handshake", "{:,.1f}", lower_is_better=True),
    "handshakes_per_s": Figure("handshakes/s (client-bound)", "{:,.0f}", lower_is_better=False),
}


@dataclass(frozen=True)
class Goal:
    """A ratio asked of meshproxy: its `figure` ÷ the `against` target's, at most `ratio` for a
    figure where lower is better, at least `ratio` otherwise."""

    figure: str
    against: str
    ratio: float

    def describe(self) -> str:
        relation = "≤" if FIGURES[self.figure].lower_is_better else "≥"
        return f"{FIGURES[self.figure].label} {relation} {self.ratio:g} × {self.against}"

    def met(self, ratio: float) -> bool:
        return ratio <= self.ratio if FIGURES[self.figure].lower_is_better else ratio >= self.ratio

    def measured(self, outcomes: dict[str, Outcome], subject: str) -> float | None:
        """`subject`'s figure ÷ the other target's, when both have a positive one."""
        mine, theirs = outcomes.get(subject), outcomes.get(self.against)
        if mine is None or theirs is None or mine.status != "ok" or theirs.status != "ok":
            return None
        numerator, denominator = mine.figures.get(self.figure), theirs.figures.get(self.figure)
        if numerator is None or denominator is None or numerator < 0 or denominator <= 0:
            return None
        return numerator / denominator


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
    proxy_kernel_us_per_req: float | None
    proxy_core_busy_pct: float | None
    proxy_core_others_pct: float
    load_core_busy_pct: float
    rss_mib: float | None
    rss_end_mib: float | None

    def progress(self) -> str:
        parts = [
            f"{self.rps:,.0f} req/s",
            f"p50 {self.p50_us:,.0f} µs",
            f"p99 {self.p99_us:,.0f} µs",
        ]
        if self.proxy_cpu_us_per_req is not None:
            parts.append(f"proxy {self.proxy_cpu_us_per_req:.1f} µs/req ({self.proxy_kernel_us_per_req:.1f} kernel)")
            parts.append(f"core {self.proxy_core_busy_pct:.0f}% busy")
            parts.append(f"RSS {self.rss_mib:.1f} MiB")
        parts.append(f"upstream {self.upstream_cpu_us_per_req:.1f} µs/req")
        parts.append(f"others on proxy core {self.proxy_core_others_pct:.0f}%")
        parts.append(f"load core {self.load_core_busy_pct:.0f}% busy")
        return ", ".join(parts)


@dataclass(frozen=True)
class HandshakeFigures:
    """One measured run of full mutual-TLS handshakes against a listener. Per core: what one
    core would complete at the CPU each handshake cost the proxy (1 s ÷ cpu per handshake);
    the client, on the load core, costs more per handshake than a server and sets the rate."""

    handshakes: int
    seconds: float
    handshakes_per_s: float
    proxy_cpu_us_per_handshake: float
    handshakes_per_core_s: float
    proxy_core_busy_pct: float
    proxy_core_others_pct: float
    load_core_busy_pct: float

    def progress(self) -> str:
        return (
            f"{self.handshakes_per_s:,.0f} handshakes/s, "
            f"proxy {self.proxy_cpu_us_per_handshake:.1f} µs/handshake "
            f"({self.handshakes_per_core_s:,.0f} per core-second), "
            f"core {self.proxy_core_busy_pct:.0f}% busy, "
            f"others on proxy core {self.proxy_core_others_pct:.0f}%, "
            f"load core {self.load_core_busy_pct:.0f}% busy"
        )


@dataclass
class Outcome:
    """A target's result in one scenario: "ok" with its runs and their medians, "error" or
    "n/a" with the reason."""

    status: str
    reason: str | None = None
    runs: list[RunFigures | HandshakeFigures] = field(default_factory=list)
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
