"""Rotation of the sidecar's mesh credentials: watches the folders of the identity's cert, key
and bundle files (watchfiles) and has the engine read them again after a change. New
handshakes use the new set at once; open connections carry on. A set that fails the engine's
checks (say, a new certificate written before its key) is refused and the current one stays,
until the next change brings a good set.

Folders rather than the files themselves are watched: certificate tooling replaces files by
renaming new ones over them (or, in Kubernetes, by swapping a symlink), and a watch on the
old file would miss that.

The engine reads the files before the watch is in place (at start, and on a reload naming
other files), so a rotation written in between raises no event: the watcher is made before the
engine reads the files, takes their digests then, and once its watch is in place reloads if
the files no longer match them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from .folder_watch import FolderWatch, file_digest

log = logging.getLogger("meshproxy")

# Writers put cert, key and bundle in place one after another; waiting this long after the last
# change lets a rotation land as one reload.
_DEBOUNCE_MS = 200


class IdentityWatcher:
    """Calls ``reload`` (on its own thread) after each change in the folders of ``files``, and
    once its watch is in place if the files changed since it was made. Make it before the
    engine reads the files, start it after."""

    def __init__(self, files: Sequence[str], reload: Callable[[], None]) -> None:
        self.files = tuple(files)
        folders = sorted({os.path.dirname(os.path.abspath(f)) for f in files})
        self._reload = reload
        self._last_refusal: str | None = None
        # Taken before the engine's read: a change after this is reloaded, one before it was read.
        self._loaded = self._digests()
        self._watch = FolderWatch(folders, self._reload_once, name="meshproxy-identity-watch",
                                  on_watching=self._reload_if_changed,
                                  on_failure=lambda error: log.error(
                                      "cannot watch the identity files in %s (%s); rotation needs a restart or a "
                                      "reload", ", ".join(folders), error),
                                  debounce_ms=_DEBOUNCE_MS)

    def start(self) -> None:
        self._watch.start()

    def stop(self) -> None:
        self._watch.stop()

    def _digests(self) -> tuple[bytes | None, ...]:
        return tuple(file_digest(file) for file in self.files)

    def _reload_if_changed(self) -> None:
        if self._digests() != self._loaded:
            self._reload_once()

    def _reload_once(self) -> None:
        try:
            self._reload()
        except ValueError as refusal:
            message = str(refusal.args[0] if refusal.args else refusal)
            # A half-written set fails each time a file of it changes; say so once per reason.
            if message != self._last_refusal:
                log.error("new identity files refused, keeping the current credentials: %s", message)
            self._last_refusal = message
        else:
            self._last_refusal = None
            log.info("identity files changed: new handshakes use the new credentials")
