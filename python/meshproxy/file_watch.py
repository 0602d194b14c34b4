"""Hot reload of ``meshproxy run``: watches the config file and reloads when its bytes change.

The file's folder is watched, not the file: editors save by writing a new file and renaming it
over the old one, and Kubernetes updates a mounted ConfigMap by swapping a symlink
(``..data``) beside it, and a watch on the old file would see neither. Any change in the folder
makes the watcher read the config file again; it reloads only when the bytes differ from the
last ones it saw, so other files in the folder, or a file saved unchanged, cost one read and
no reload.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("meshproxy")
# watchfiles logs every batch of changes at INFO; the sidecar says what it did about them.
logging.getLogger("watchfiles").setLevel(logging.WARNING)

# A save is a burst of events (write, or create and rename); changes are taken once the folder
# has been quiet for _QUIET_MS, and after _DEBOUNCE_MS at the latest while it keeps changing.
_QUIET_MS = 50
_DEBOUNCE_MS = 150
# How often the watch loop checks whether it should stop: bounds how long stop() takes.
_STOP_CHECK_MS = 200


def config_digest(path: str | os.PathLike[str]) -> bytes | None:
    """A digest of the file's bytes (following symlinks), or None when it cannot be read."""
    try:
        return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).digest()
    except OSError:
        return None


class ConfigWatcher:
    """Calls ``reload`` (on its own thread) whenever the file at ``path`` holds new bytes.
    ``loaded`` is the digest of the bytes the running config was read from, taken before that
    read: a change between that read and the watch starting is reloaded at once."""

    def __init__(self, path: str | os.PathLike[str], reload: Callable[[], object], loaded: bytes | None) -> None:
        self._path = Path(os.path.abspath(path))
        self._reload = reload
        self._seen = loaded
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="meshproxy-config-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        from watchfiles import watch

        # Not recursive: the file's folder may be large, and every way of replacing the file
        # (in place, by rename, by symlink swap) shows as a change directly in it.
        changes = watch(self._path.parent, watch_filter=None, stop_event=self._stop, debounce=_DEBOUNCE_MS,
                        step=_QUIET_MS, rust_timeout=_STOP_CHECK_MS, yield_on_timeout=True,
                        raise_interrupt=False, recursive=False)
        watching = False
        try:
            for batch in changes:
                # The first yield (a change or a quiet timeout) comes once the watch is in place:
                # checked then, a change made before it started is not missed.
                if batch or not watching:
                    self._reload_if_changed()
                watching = True
        except (OSError, RuntimeError) as error:
            log.error("cannot watch %s for changes (%s); reload with SIGHUP or POST /reload", self._path, error)

    def _reload_if_changed(self) -> None:
        digest = config_digest(self._path)
        # Unreadable (say, between an unlink and a rename): the next event brings it back.
        if digest is None or digest == self._seen:
            return
        self._seen = digest
        self._reload()
