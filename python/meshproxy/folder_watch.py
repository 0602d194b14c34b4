"""A watch on folders (watchfiles) that calls back on its own thread after each batch of changes:
what the config file watch, the identity files' watch and the file discovery source share.

Folders are watched rather than files: tools replace a file by renaming a new one over it, and
Kubernetes swaps a symlink (``..data``) to a new folder of files, which a watch on the old file
would miss. Not recursive: every way of replacing a file shows as a change directly in its
folder.

Each owner reads its files before the watch starts, and watchfiles puts its watch in place
only once its generator runs, on the watch's thread: a change in between raises no event. So
the watch tells its owner once it is in place (``on_watching``), and the owner then compares
the files with what it read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

# watchfiles logs every batch of changes at INFO; the sidecar says what it did about them.
logging.getLogger("watchfiles").setLevel(logging.WARNING)

# How often the watch loop checks whether it should stop: bounds how long stop() takes, and how
# long after the watch is in place `on_watching` comes when nothing changes.
_STOP_CHECK_MS = 500


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


EMPTY_DIGEST = _digest(b"")
"""The digest of an empty file."""


def file_digest(path: str | os.PathLike[str]) -> bytes | None:
    """A digest of the file's bytes (following symlinks), or None when it cannot be read."""
    try:
        return _digest(Path(path).read_bytes())
    except OSError:
        return None


class FolderWatch:
    """Calls ``on_change()`` after each batch of changes in ``folders`` (those ``concerns``
    accepts, given the changed path), a batch ending once the folders have been quiet for
    ``quiet_ms`` or after ``debounce_ms`` at the latest. Calls ``on_watching()`` once the watch
    is in place, unless a batch of changes comes first (then ``on_change()`` stands for it): the
    owner compares its files with what it read before ``start()``, since a change made before
    the watch was in place raised no event. A watch that cannot run calls ``on_failure`` with the
    error and ends."""

    def __init__(self, folders: Sequence[str], on_change: Callable[[], None], *, name: str,
                 on_watching: Callable[[], None], on_failure: Callable[[Exception], None],
                 concerns: Callable[[str], bool] | None = None, debounce_ms: int, quiet_ms: int = 50) -> None:
        self._folders = tuple(folders)
        self._on_change = on_change
        self._on_watching = on_watching
        self._on_failure = on_failure
        self._concerns = concerns
        self._debounce_ms = debounce_ms
        self._quiet_ms = quiet_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        from watchfiles import watch  # only a sidecar that watches something needs it

        concerns = self._concerns
        watch_filter = None if concerns is None else (lambda _change, path: concerns(path))
        # Yields on each timeout too: the first yield, a change or a timeout, comes once the
        # watch is in place, which is when the owner's files can be compared with what it read.
        changes = watch(*self._folders, watch_filter=watch_filter, stop_event=self._stop,
                        debounce=self._debounce_ms, step=self._quiet_ms, rust_timeout=_STOP_CHECK_MS,
                        yield_on_timeout=True, raise_interrupt=False, recursive=False)
        first = True
        try:
            for batch in changes:
                if batch:
                    self._on_change()
                elif first:
                    self._on_watching()
                first = False
        except (OSError, RuntimeError) as error:
            self._on_failure(error)
