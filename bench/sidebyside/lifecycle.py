"""Bringing the processes of a run up, waiting until they serve, and taking them down after it,
whatever happened in between: the side-by-side line-ups, `make loadtest`'s mesh and
bench/profile.py all start and stop their processes through here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from .upstream import Upstream


class Lifecycle(ABC):
    """A context manager over `start` and `stop`. On entry everything starts; if starting fails
    part-way, what did start is stopped before the error goes on. On exit everything stops, also
    when the body raised. So `stop` must be safe at any point of `start`, and more than once."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class UpstreamAndProxies(Lifecycle):
    """The upstream first, then the proxies in front of it; stopped the other way round. A
    figure that must not carry what earlier runs left behind restarts the proxies alone."""

    upstream: Upstream

    @abstractmethod
    def start_proxies(self) -> None: ...

    @abstractmethod
    def stop_proxies(self) -> None: ...

    def start(self) -> None:
        self.upstream.start()
        self.start_proxies()

    def restart_proxies(self) -> None:
        self.stop_proxies()
        self.start_proxies()

    def stop(self) -> None:
        self.stop_proxies()
        self.upstream.stop()


def wait_ready(
    ready: Callable[[], bool], alive: Callable[[], bool], timeout: float, interval: float = 0.02
) -> bool:
    """Polls `ready` until it says yes (True), or until `alive()` turns false or `timeout`
    seconds pass (False: the caller tells which by asking `alive()`). An OSError from `ready`
    (nothing listens yet) counts as not ready."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return True
        except OSError:
            pass
        if not alive() or time.monotonic() > deadline:
            return False
        time.sleep(interval)


def stop_process(process: subprocess.Popen[bytes], timeout: float, group: bool = False) -> bool:
    """SIGTERM, then SIGKILL if it has not exited `timeout` seconds later. `group`: the process
    leads a session of its own (start_new_session), the signals go to all of it, and whatever
    of the group outlives its leader (a forked worker) gets SIGKILL too. Returns whether it
    exited on SIGTERM (also when it had already exited)."""

    def send(signum: int) -> None:
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)  # nothing, once it has exited and been reaped

    exited = True
    try:
        send(signal.SIGTERM)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass  # the group is gone already
    except subprocess.TimeoutExpired:
        exited = False
        send(signal.SIGKILL)
        process.wait()
    if group:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return exited
