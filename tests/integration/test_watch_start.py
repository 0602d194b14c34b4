"""The watches of the config file, the identity files and endpoint files: each owner reads its
files, then starts its watch, which watchfiles puts in place on the watch's own thread some
time later. A change in between raises no event; once the watch is in place, the owner compares
the files with what it read. Here each change lands in that window for sure, with real files
and real watches: only that comparison can find it."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import yaml
from conftest import wait_until
from meshproxy.discovery.endpoints import Endpoint
from meshproxy.discovery.file_source import FileSource
from meshproxy.file_watch import ConfigWatcher
from meshproxy.folder_watch import file_digest
from meshproxy.identity_watch import IdentityWatcher


def replace_file(path: Path, text: str) -> None:
    """Writes ``path`` the way deployment tools do: a new file renamed over the old one."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    os.replace(new, path)


def test_the_config_watch_reloads_a_change_made_after_the_read_and_before_it_started(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    replace_file(config, "workers: 1\n")
    loaded = file_digest(config)  # as `meshproxy run` takes it, before its first read
    reloaded = threading.Event()
    watcher = ConfigWatcher(config, reloaded.set, loaded)
    replace_file(config, "workers: 2\n")
    watcher.start()
    try:
        wait_until(reloaded.is_set, what="the change made before the watch started to be reloaded")
    finally:
        watcher.stop()


def test_the_identity_watch_reloads_a_rotation_made_after_the_read_and_before_it_started(tmp_path: Path) -> None:
    files = [tmp_path / name for name in ("cert.pem", "key.pem", "bundle.pem")]
    for file in files:
        replace_file(file, f"first {file.name}\n")
    reloads: list[None] = []
    # Made before the engine would read the files, as the proxy makes it.
    watcher = IdentityWatcher([str(file) for file in files], lambda: reloads.append(None))
    replace_file(files[1], "second key.pem\n")
    replace_file(files[0], "second cert.pem\n")
    watcher.start()
    try:
        wait_until(lambda: len(reloads) > 0, what="the rotation made before the watch started to be reloaded")
    finally:
        watcher.stop()


def test_a_file_source_reads_a_change_made_after_its_first_read_and_before_its_watch_started(
        tmp_path: Path) -> None:
    path = tmp_path / "endpoints.yaml"
    replace_file(path, yaml.safe_dump([{"address": "127.0.0.1:1001"}]))
    lists: list[Sequence[Endpoint]] = []

    def on_update(cluster: str, endpoints: Sequence[Endpoint]) -> None:
        lists.append(endpoints)
        if len(lists) == 1:
            # The first report comes from start()'s own read, before it starts the watch.
            replace_file(path, yaml.safe_dump([{"address": "127.0.0.1:1002"}]))

    source = FileSource("app", str(path))
    source.start(on_update)
    try:
        wait_until(lambda: [e.address for e in lists[-1]] == ["127.0.0.1:1002"],
                   what="the list written before the watch started to be read")
    finally:
        source.stop()
