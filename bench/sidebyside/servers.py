"""Starting a server pinned to one core, waiting until it listens, and stopping it for sure.

Each server runs in a process group of its own, so stopping it also stops whatever it forked
(nginx workers), and nothing it started outlives the benchmark.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from .lifecycle import stop_process
from .ports import wait_listening


class Server:
    """One server process (and its children), pinned to `core` with taskset."""

    def __init__(self, name: str, argv: list[str], core: int, log: Path) -> None:
        self.name = name
        self._argv = ["taskset", "-c", str(core), *argv]
        self._log_path = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's own pid: taskset execs the server, so it is the root of the tree."""
        assert self._process is not None, f"{self.name} is not started"
        return self._process.pid

    def start(self, ports: list[int]) -> None:
        """Starts the server and returns once every port in `ports` accepts connections."""
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            for port in ports:
                wait_listening(port, alive=self.running)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"{self.name} {error}; its log:\n{self.log_tail()}") from None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def pause(self) -> None:
        """SIGSTOP to the whole group: it takes no CPU until `resume`."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL if it is still there after five seconds; then
        SIGKILL to anything of the group that outlived its leader."""
        if self._process is None:
            return
        # A paused group would leave SIGTERM pending until the timeout.
        self.resume()
        stop_process(self._process, 5.0, group=True)
        self._process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
