"""Hot reload of ``meshproxy run``: watches the config file and reloads when its bytes change.

The file's folder is watched, not the file: editors save by writing a new file and renaming it
over the old one, and Kubernetes updates a mounted ConfigMap by swapping a symlink
(``..data``) beside it, and a watch on the old file would see neither. Any change in the folder
makes the watcher read the config file again; it reloads only when the bytes differ from the
last ones it saw, so other files in the folder, or a file saved unchanged, cost one read and
no reload.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from .folder_watch import EMPTY_DIGEST, FolderWatch, file_digest

log = logging.getLogger("meshproxy")

# A save is a burst of events (write, or create and rename); changes are taken once the folder
# has been quiet for _QUIET_MS, and after _DEBOUNCE_MS at the latest while it keeps changing.
_QUIET_MS = 50
_DEBOUNCE_MS = 150


class ConfigWatcher:
    """Calls ``reload`` (on its own thread) whenever the file at ``path`` holds new bytes.
    ``loaded`` is the digest of the bytes the running config was read from, taken before that
    read: a change between that read and the watch starting is reloaded at once."""

    def __init__(self, path: str | os.PathLike[str], reload: Callable[[], object], loaded: bytes | None) -> None:
        self._path = Path(os.path.abspath(path))
        self._reload = reload
        self._seen = loaded
        # Checked once the watch is in place too: a change between the read of the running
        # config and the watch starting is not missed.
        self._watch = FolderWatch([str(self._path.parent)], self._reload_if_changed, name="meshproxy-config-watch",
                                  on_watching=self._reload_if_changed,
                                  on_failure=lambda error: log.error(
                                      "cannot watch %s for changes (%s); reload with SIGHUP or POST /reload",
                                      self._path, error),
                                  debounce_ms=_DEBOUNCE_MS, quiet_ms=_QUIET_MS)

    def start(self) -> None:
        self._watch.start()

    def stop(self) -> None:
        self._watch.stop()

    def _reload_if_changed(self) -> None:
        digest = file_digest(self._path)
        # Unreadable (say, between an unlink and a rename): the next event brings it back.
        if digest is None or digest == self._seen:
            return
        # Empty: a file written in place is truncated first and written after, and a busy
        # machine can let the watch see it in between. No config is empty; the write that
        # follows brings the next event.
        if digest == EMPTY_DIGEST:
            log.info("%s is empty; waiting for it to be written (the running config stays)", self._path)
            return
        self._seen = digest
        self._reload()
