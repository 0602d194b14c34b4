"""CPU time and resident memory of processes and all their descendants, read from /proc.

A proxy may be one process with threads (Envoy, meshproxy) or a master with forked workers
(nginx), and a mesh target is two sidecars, so every figure is summed over whole trees, found
afresh at each reading.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import NamedTuple, Self

PROC = Path("/proc")
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def process_tree(*roots: int) -> list[int]:
    """The `roots` and every live descendant of them."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None:
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    tree, frontier = [], list(roots)
    while frontier:
        pid = frontier.pop()
        tree.append(pid)
        frontier.extend(children.get(pid, []))
    return tree


class CpuTimes(NamedTuple):
    """User and system (kernel) CPU seconds."""

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system

    def since(self, earlier: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - earlier.user, self.system - earlier.system)


def cpu_seconds(*roots: int) -> float:
    """User plus system CPU time of the trees so far, all threads included."""
    return cpu_times(*roots).total


def cpu_times(*roots: int) -> CpuTimes:
    """User and system CPU time of the trees so far, all threads included."""
    user = system = 0
    for pid in process_tree(*roots):
        stat = _read_stat(pid)
        if stat is not None:
            user += int(stat[11])
            system += int(stat[12])
    return CpuTimes(user / CLOCK_TICKS_PER_SECOND, system / CLOCK_TICKS_PER_SECOND)


def rss_bytes(*roots: int) -> int:
    """Sum of VmRSS over the trees. Pages shared between a master and its workers count once per
    process, as `ps` would show them."""
    total = 0
    for pid in process_tree(*roots):
        try:
            status = (PROC / str(pid) / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


class PeakRss:
    """Samples the trees' RSS on a thread while a load runs; `peak` is the largest sample,
    `last` the last one taken before the load ended."""

    def __init__(self, *roots: int, interval: float = 0.1) -> None:
        self._roots = roots
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak = 0
        self.last = 0

    def __enter__(self) -> Self:
        self._record()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._record()

    def _record(self) -> None:
        self.last = rss_bytes(*self._roots)
        self.peak = max(self.peak, self.last)


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses):
    index 0 is the state, 1 the parent pid, 11 utime, 12 stime."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()
