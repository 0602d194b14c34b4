"""Child processes of the tests (and of the benchmarks that borrow their harness): a child's
stderr read on a thread and kept, so it never blocks on a full pipe; stopping it for sure; a
free loopback address for it to bind; and the addresses ``meshproxy run`` logs once bound."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from typing import Any

# Logged by ``meshproxy run`` once each address is bound: a port 0 is a real port by then.
LISTENER_LINE = re.compile(r"listener (\S+) on (\S+) ")
ADMIN_LINE = re.compile(r"admin on http://(\S+)/")


def free_address() -> str:
    """A loopback address nothing listens on now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % sock.getsockname()[1]


def bound_addresses(lines: Iterable[str]) -> tuple[dict[str, str], str | None]:
    """The listeners (name: address) and the admin address ``meshproxy run`` logged in ``lines``."""
    listeners: dict[str, str] = {}
    admin = None
    for line in lines:
        if m := LISTENER_LINE.search(line):
            listeners[m.group(1)] = m.group(2)
        if m := ADMIN_LINE.search(line):
            admin = m.group(1)
    return listeners, admin


def follow_stderr(process: subprocess.Popen[str], lines: list[str]) -> threading.Thread:
    """Appends each line ``process`` writes to its stderr (a pipe) to ``lines``, on a thread."""

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def stop_process(process: subprocess.Popen[Any], timeout: float, sig: int = signal.SIGTERM) -> int:
    """Signals ``process`` (if it still runs), kills it if it has not exited ``timeout`` seconds
    later, and returns its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def stop_followed(process: subprocess.Popen[str], reader: threading.Thread, sig: int = signal.SIGTERM,
                  timeout: float = 20) -> int:
    """`stop_process`, then lets ``reader`` (`follow_stderr`'s) take the last lines."""
    code = stop_process(process, timeout, sig)
    reader.join(timeout=5)
    if process.stderr is not None:
        process.stderr.close()
    return code


class LoggedProcess:
    """A child whose stderr is read on a thread (so it never blocks) and kept."""

    def __init__(self, command: list[str], name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.command = command
        self.lines: list[str] = []
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, env=env)
        self._reader = follow_stderr(self.process, self.lines)

    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := regex.search(line):
                    return m
            if self.process.poll() is not None:
                time.sleep(0.1)  # let the reader take the last lines
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}) before logging "
                                   f"{pattern!r}:\n{self.log()}")
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} did not log {pattern!r} in {timeout}s:\n{self.log()}")

    def send(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signals the process, waits for it (kills it after ``timeout``), returns its code."""
        return stop_followed(self.process, self._reader, sig, timeout)
