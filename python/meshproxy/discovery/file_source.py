"""Endpoints listed in a file (YAML or JSON, ``[{address, weight}, ...]``), read again whenever
the file changes.

The folder is watched rather than the file: tools replace a file by renaming a new one over it
(and Kubernetes swaps a symlink, ``..data``, to a new folder of files), which a watch on the old
file would miss. A file that cannot be read, or whose content is not an endpoint list, is
refused with a log line and the last good list stays.
"""

from __future__ import annotations

import logging
import os

from ..folder_watch import FolderWatch
from .endpoints import EndpointListError, read_endpoint_file
from .source import OnUpdate

log = logging.getLogger("meshproxy")

# An editor or a tool may write the file in a few steps; a short pause after the last change
# reads it once they are done, and keeps the delay before new endpoints apply small.
_DEBOUNCE_MS = 100
# The name Kubernetes' atomic writer swaps to publish a new set of files in a mounted folder.
_KUBERNETES_SWAP = "..data"


class FileSource:
    def __init__(self, cluster: str, path: str) -> None:
        self.cluster = cluster
        self.path = os.path.abspath(path)
        self.description = f"file {path}"
        folder = os.path.dirname(self.path)
        # Checked once the watch is in place too: a change after start()'s read and before the
        # watch began is not missed.
        self._watch = FolderWatch([folder], self._read, name=f"meshproxy-discovery-file-{cluster}",
                                  on_watching=self._read,
                                  on_failure=lambda error: log.error(
                                      "cluster %s: cannot watch %s (%s); its endpoints change only on a reload",
                                      cluster, folder, error),
                                  concerns=self._concerns_the_file, debounce_ms=_DEBOUNCE_MS)
        self._on_update: OnUpdate | None = None
        self._last_refusal: str | None = None

    def start(self, on_update: OnUpdate) -> None:
        self._on_update = on_update
        self._read()
        self._watch.start()

    def stop(self) -> None:
        self._watch.stop()

    def _concerns_the_file(self, path: str) -> bool:
        return path == self.path or os.path.basename(path) == _KUBERNETES_SWAP

    def _read(self) -> None:
        try:
            endpoints = read_endpoint_file(self.path)
        except OSError as error:
            self._refused(f"cannot read it: {error.strerror or error}")
        except EndpointListError as error:
            self._refused(str(error))
        else:
            self._last_refusal = None
            if self._on_update is not None and not self._watch.stopped:
                self._on_update(self.cluster, endpoints)

    def _refused(self, problem: str) -> None:
        # A file being rewritten may fail the same way at each step; say so once per problem.
        if problem != self._last_refusal:
            log.error("cluster %s: endpoint file %s refused, keeping the last good list: %s",
                      self.cluster, self.path, problem)
        self._last_refusal = problem
