"""How busy each core is, from /proc/stat: before the benchmark starts (figures taken while a
build or a test suite runs on the same cores are worth less, so the report says so) and during
each run (to tell whether the proxy or the load side was the bottleneck, and whether anything
else ran on the proxy's core)."""

from __future__ import annotations

import time
from pathlib import Path

# The proxies under test run here, one worker each; the upstream, the load tool and this runner
# share the other core, so the proxy under load has a core to itself.
PROXY_CORE = 0
LOAD_CORE = 1

CoreTimes = dict[int, tuple[int, int]]  # core -> (idle ticks, total ticks)


def core_times() -> CoreTimes:
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(field) for field in fields[:8]]  # user .. steal
            times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))  # idle + iowait, total
    return times


def busy_pct(before: CoreTimes, after: CoreTimes) -> dict[int, float]:
    """Percent of the time between the two readings each core was not idle."""
    busy = {}
    for core, (idle_after, total_after) in after.items():
        idle_before, total_before = before[core]
        total = total_after - total_before
        busy[core] = round(100 * (1 - (idle_after - idle_before) / total), 1) if total else 0.0
    return busy


def busy_now(seconds: float = 2.0) -> dict[int, float]:
    """How busy each core is over the next `seconds`."""
    before = core_times()
    time.sleep(seconds)
    return busy_pct(before, core_times())
