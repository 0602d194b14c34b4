"""What /proc tells about a process: its children, the files mapped into it, and its engine's
worker threads."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")
# A thread's name (comm) is cut to 15 bytes: "meshproxy-worker-0" reads "meshproxy-worke".
WORKER_COMM = "meshproxy-worke"


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        # "PID (COMMAND) STATE PPID ...": the command may hold spaces and parentheses.
        if int(text.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def mapped_files(pid: int) -> set[str]:
    """The files mapped into ``pid``: its executable and every shared library it loaded."""
    lines = (PROC / str(pid) / "maps").read_text().splitlines()
    return {line.split(maxsplit=5)[5] for line in lines if len(line.split(maxsplit=5)) == 6}


def worker_threads(pid: int | str) -> list[int]:
    """The thread ids of ``pid``'s (or, for "self", this process's) engine workers that have
    named themselves so far: a worker does so as it starts running, so a list taken at once can
    be short."""
    tasks = (PROC / str(pid) / "task").glob("*/comm")
    return [int(comm.parent.name) for comm in tasks if comm.read_text().strip() == WORKER_COMM]
