"""A watch on folders (watchfiles) that calls back on its own thread after each batch of changes:
what the config file watch, the identity files' watch and the file discovery source share.

Folders are watched rather than files: tools replace a file by renaming a new one over it, and
Kubernetes swaps a symlink (``..data``) to a new folder of files, which a watch on the old file
would miss. Not recursive: every way of replacing a file shows as a change directly in its
folder.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

# watchfiles logs every batch of changes at INFO; the sidecar says what it did about them.
logging.getLogger("watchfiles").setLevel(logging.WARNING)

# How often the watch loop checks whether it should stop: bounds how long stop() takes.
_STOP_CHECK_MS = 500


class FolderWatch:
    """Calls ``on_change()`` after each batch of changes in ``folders`` (those ``concerns``
    accepts, given the changed path), a batch ending once the folders have been quiet for
    ``quiet_ms`` or after ``debounce_ms`` at the latest. With ``check_at_start``, also once the
    watch is in place, so that a change made before it started is not missed. A watch that
    cannot run calls ``on_failure`` with the error and ends."""

    def __init__(self, folders: Sequence[str], on_change: Callable[[], None], *, name: str,
                 on_failure: Callable[[Exception], None], concerns: Callable[[str], bool] | None = None,
                 debounce_ms: int, quiet_ms: int = 50, check_at_start: bool = False) -> None:
        self._folders = tuple(folders)
        self._on_change = on_change
        self._on_failure = on_failure
        self._concerns = concerns
        self._debounce_ms = debounce_ms
        self._quiet_ms = quiet_ms
        self._check_at_start = check_at_start
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
        changes = watch(*self._folders, watch_filter=watch_filter, stop_event=self._stop,
                        debounce=self._debounce_ms, step=self._quiet_ms, rust_timeout=_STOP_CHECK_MS,
                        yield_on_timeout=self._check_at_start, raise_interrupt=False, recursive=False)
        first = True
        try:
            for batch in changes:
                # The first yield (a change or a timeout) comes once the watch is in place.
                if batch or (first and self._check_at_start):
                    self._on_change()
                first = False
        except (OSError, RuntimeError) as error:
            self._on_failure(error)

