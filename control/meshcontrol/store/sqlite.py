"""The default store: one SQLite file, ``mesh.db`` in the data directory (``meshctl serve
--data``), written through one connection guarded by a lock, so any thread may call it.

Every revision holds the whole set of resources, as a list of document digests; a document's
text is kept once per distinct content (``documents``), so a revision costs a few bytes per
resource whatever the documents' size, and a rollback is just another revision that lists an
old revision's digests. The current set is also kept in memory: readers never touch the file.

WAL journal with ``synchronous=NORMAL``: a commit survives the process being killed (what
"versions survive a restart" needs); only a power loss may drop the last commits, never
corrupting the file. The file holds the CA key: it is created readable by its owner only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..resources.keys import key_of
from .base import InstanceRecord, Key, Resource, Revision, Store, TokenRecord

log = logging.getLogger(__name__)

FILE_NAME = "mesh.db"
_SCHEMA_VERSION = 2
# next_version() reserves this many versions per write: a version is asked for on every push,
# and a write (with its sync) per push would make the store the push's bottleneck. A restart
# skips what was reserved and not used; versions only have to grow.
_VERSION_BLOCK = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (digest TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revisions (
    number INTEGER PRIMARY KEY, time REAL NOT NULL, message TEXT NOT NULL,
    members TEXT NOT NULL  -- JSON list of document digests, in key order
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, digest TEXT NOT NULL, service TEXT NOT NULL, namespace TEXT NOT NULL,
    expires INTEGER NOT NULL, revoked INTEGER NOT NULL, created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ca (id INTEGER PRIMARY KEY CHECK (id = 1), cert BLOB NOT NULL, key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    node_id TEXT PRIMARY KEY, service TEXT NOT NULL, namespace TEXT NOT NULL, version TEXT NOT NULL,
    address TEXT NOT NULL, admin TEXT NOT NULL, app_port INTEGER NOT NULL DEFAULT 0
);
"""
# What a store of an older schema needs to read as this one, by the version it has.
_MIGRATIONS = {1: "ALTER TABLE instances ADD COLUMN app_port INTEGER NOT NULL DEFAULT 0"}


class SqliteStore(Store):
    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        folder = Path(data_dir)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / FILE_NAME
        # Created here, owner-only, before SQLite opens it (SQLite gives its -wal and -shm files
        # the database file's permissions).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        found = self._db.execute("PRAGMA user_version").fetchone()[0]
        if found > _SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} was written by a newer meshctl (schema {found}; this one reads {_SCHEMA_VERSION})")
        with self._transaction():
            # A new file has no tables (version 0): the schema makes them whole.
            existing = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'instances'").fetchone()
            for version in range(found, _SCHEMA_VERSION) if existing else ():
                if version in _MIGRATIONS:
                    self._db.execute(_MIGRATIONS[version])
            for statement in _statements(_SCHEMA):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self._callbacks: list[Callable[[int], None]] = []
        self._revision, self._current = self._load_current()
        row = self._db.execute("SELECT value FROM counters WHERE name = 'version'").fetchone()
        self._version_ceiling = row[0] if row else 0
        self._next_version = self._version_ceiling + 1

    # --- resources and revisions ------------------------------------------------------

    def resources(self) -> list[Resource]:
        with self._lock:
            bodies = [self._current[key][1] for key in sorted(self._current)]
        return [json.loads(body) for body in bodies]

    def apply(self, documents: Sequence[Resource], message: str) -> int:
        with self._lock:
            new = dict(self._current)
            for document in documents:
                new[key_of(document)] = _entry(document)
            revision = self._commit(new, message)
        return self._changed(revision)

    def delete(self, key: Key, message: str) -> int:
        with self._lock:
            if key not in self._current:
                raise KeyError(key)
            new = {k: v for k, v in self._current.items() if k != key}
            revision = self._commit(new, message)
        return self._changed(revision)

    def revision(self) -> int:
        with self._lock:
            return self._revision

    def history(self) -> list[Revision]:
        with self._lock:
            rows = self._db.execute("SELECT number, time, message FROM revisions ORDER BY number").fetchall()
        return [Revision(*row) for row in rows]

    def resources_at(self, revision: int) -> list[Resource]:
        with self._lock:
            return [json.loads(body) for _, body in self._members(revision).values()]

    def rollback(self, revision: int) -> int:
        with self._lock:
            changed = self._commit(self._members(revision), f"rollback to {revision}")
        return self._changed(changed)

    # --- xDS versions -----------------------------------------------------------------

    def next_version(self) -> int:
        with self._lock:
            if self._next_version > self._version_ceiling:
                ceiling = self._next_version + _VERSION_BLOCK - 1
                with self._transaction():
                    self._db.execute(
                        "INSERT INTO counters (name, value) VALUES ('version', ?) "
                        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                        (ceiling,),
                    )
                self._version_ceiling = ceiling
            version = self._next_version
            self._next_version += 1
            return version

    # --- join tokens ------------------------------------------------------------------

    def add_token(self, record: TokenRecord) -> None:
        with self._lock, self._transaction():
            self._db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?)", tuple(record))

    def token(self, token_id: str) -> TokenRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return _token(row) if row else None

    def tokens(self) -> list[TokenRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM tokens ORDER BY created, id").fetchall()
        return [_token(row) for row in rows]

    def revoke_token(self, token_id: str) -> None:
        with self._lock, self._transaction():
            if self._db.execute("UPDATE tokens SET revoked = 1 WHERE id = ?", (token_id,)).rowcount == 0:
                raise KeyError(token_id)

    # --- the CA -----------------------------------------------------------------------

    def ca(self) -> tuple[bytes, bytes] | None:
        with self._lock:
            row = self._db.execute("SELECT cert, key FROM ca WHERE id = 1").fetchone()
        return (bytes(row[0]), bytes(row[1])) if row else None

    def set_ca(self, cert_pem: bytes, key_pem: bytes) -> None:
        with self._lock, self._transaction():
            self._db.execute("INSERT OR REPLACE INTO ca (id, cert, key) VALUES (1, ?, ?)", (cert_pem, key_pem))

    # --- instances ----------------------------------------------------------------------

    def instances(self) -> list[InstanceRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM instances ORDER BY node_id").fetchall()
        return [InstanceRecord(*row) for row in rows]

    def put_instance(self, record: InstanceRecord) -> None:
        with self._lock, self._transaction():
            self._db.execute("INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?, ?, ?)", tuple(record))

    def remove_instance(self, node_id: str) -> None:
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM instances WHERE node_id = ?", (node_id,))

    # --- changes ------------------------------------------------------------------------

    def on_change(self, callback: Callable[[int], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # === impl SqliteStore: internals ===

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _commit(self, new: dict[Key, tuple[str, str]], message: str) -> int | None:
        """Writes ``new`` as the next revision (lock held); None when it equals the current set."""
        if {k: d for k, (d, _) in new.items()} == {k: d for k, (d, _) in self._current.items()}:
            return None
        number = self._revision + 1
        members = json.dumps([new[key][0] for key in sorted(new)])
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO documents VALUES (?, ?)", list(new.values()))
            self._db.execute("INSERT INTO revisions VALUES (?, ?, ?, ?)", (number, time.time(), message, members))
        self._revision, self._current = number, new
        return number

    def _changed(self, revision: int | None) -> int:
        """Tells the callbacks (outside the lock: they read the store) and returns the current
        revision."""
        if revision is None:
            return self.revision()
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(revision)
            except Exception:
                # One broken listener must not fail the apply that already happened.
                log.exception("store change callback failed for revision %d", revision)
        return revision

    def _members(self, revision: int) -> dict[Key, tuple[str, str]]:
        """The set of ``revision`` as key -> (digest, body) (lock held). Revision 0 is the
        empty set before the first change."""
        if revision == 0:
            return {}
        row = self._db.execute("SELECT members FROM revisions WHERE number = ?", (revision,)).fetchone()
        if row is None:
            raise KeyError(revision)
        digests: list[str] = json.loads(row[0])
        bodies: dict[str, str] = {}
        # In chunks: a statement takes at most 32766 parameters.
        for start in range(0, len(digests), 500):
            chunk = digests[start : start + 500]
            query = f"SELECT digest, body FROM documents WHERE digest IN ({','.join('?' * len(chunk))})"
            bodies.update(self._db.execute(query, chunk).fetchall())
        return {key_of(json.loads(bodies[d])): (d, bodies[d]) for d in digests}

    def _load_current(self) -> tuple[int, dict[Key, tuple[str, str]]]:
        row = self._db.execute("SELECT MAX(number) FROM revisions").fetchone()
        revision = row[0] or 0
        return revision, self._members(revision)


def _entry(document: Resource) -> tuple[str, str]:
    """(digest, body) of a document: the digest of its canonical JSON (key order aside), the
    body as given, so it reads back in its own key order."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest(), json.dumps(document, separators=(",", ":"))


def _token(row: tuple[str, str, str, str, int, int, int]) -> TokenRecord:
    token_id, digest, service, namespace, expires, revoked, created = row
    return TokenRecord(token_id, digest, service, namespace, expires, bool(revoked), created)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
