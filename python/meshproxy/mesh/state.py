"""The state folder of a sidecar that follows the control plane: what it keeps on disk so that a
restart while the control plane is unreachable serves at once, as before.

    <state>/cert.pem, key.pem (0600), bundle.pem   the credentials the engine reads
    <state>/identity.json                          their SPIFFE ID, trust domain, lifetime
    <state>/config.json                            the last config the sidecar ran (a sidecar
                                                   config: `meshproxy validate` reads it)
    <state>/inbound.json                           the inbound address it last bound

Every file is replaced by rename, never written in place, so a crash leaves the old file or the
new one, not half of one. The folder is readable by its user only: it holds the private key.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

_serial = itertools.count()

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
BUNDLE_FILE = "bundle.pem"


class IdentityRecord(NamedTuple):
    """What the sidecar knows of the certificate it holds, without parsing it (the sidecar does
    not load an X.509 library: see ``keygen.py``)."""

    spiffe_id: str
    trust_domain: str
    issued: int
    """Seconds since the epoch when it was received: the start of the lifetime renewal halves."""
    not_after: int

    def renew_at(self) -> float:
        """About half-way through its lifetime, when a renewal starts."""
        return self.issued + (self.not_after - self.issued) / 2

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.not_after


class StateDir:
    def __init__(self, path: Path) -> None:
        # Absolute: the config names the credential files, and the validator reads them.
        self.path = path = Path(os.path.abspath(path))
        self.cert = path / CERT_FILE
        self.key = path / KEY_FILE
        self.bundle = path / BUNDLE_FILE
        self.next_key = path / "key.next.pem"
        self.identity_record = path / "identity.json"
        self.config = path / "config.json"
        self.next_config = path / "config.next.json"
        self.inbound_record = path / "inbound.json"

    def create(self) -> None:
        """Makes the folder, readable by this user only."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    # --- credentials -------------------------------------------------------------------

    def identity(self) -> IdentityRecord | None:
        """The saved credentials' record, or None without a complete, readable set."""
        record = _read_json(self.identity_record)
        if record is None or not all(path.is_file() for path in (self.cert, self.key, self.bundle)):
            return None
        try:
            return IdentityRecord(str(record["spiffe_id"]), str(record["trust_domain"]), int(record["issued"]),
                                  int(record["not_after"]))
        except (KeyError, TypeError, ValueError):
            return None

    def save_identity(self, cert_pem: bytes, bundle_pem: bytes, record: IdentityRecord) -> None:
        """Puts the new key (written to ``next_key`` by keygen) in place with its certificate.
        The key first: a certificate is never on disk beside a key it does not match for
        longer than one rename, and the engine refuses such a pair, keeping the one it runs."""
        os.replace(self.next_key, self.key)
        write_atomically(self.cert, cert_pem)
        write_atomically(self.bundle, bundle_pem)
        write_atomically(self.identity_record, json.dumps(record._asdict(), indent=1).encode())

    def save_bundle(self, bundle_pem: bytes) -> bool:
        """Writes a new CA bundle (from SDS); False when it is the one on disk already."""
        try:
            if self.bundle.read_bytes() == bundle_pem:
                return False
        except OSError:
            pass
        write_atomically(self.bundle, bundle_pem)
        return True

    # --- config ------------------------------------------------------------------------

    def write_next_config(self, config: dict[str, Any]) -> Path:
        """The config about to be validated; one key per line, so that the validator's line
        numbers point somewhere useful."""
        write_atomically(self.next_config, (json.dumps(config, indent=1) + "\n").encode())
        return self.next_config

    def keep_next_config(self) -> None:
        """The config just validated and applied becomes the last good one."""
        os.replace(self.next_config, self.config)

    def save_config(self, config: dict[str, Any]) -> None:
        write_atomically(self.config, (json.dumps(config, indent=1) + "\n").encode())

    def saved_config(self) -> dict[str, Any] | None:
        config = _read_json(self.config)
        return config if isinstance(config, dict) else None

    # --- the inbound address -----------------------------------------------------------

    def last_inbound(self) -> str | None:
        record = _read_json(self.inbound_record)
        address = record.get("bound") if isinstance(record, dict) else None
        return address if isinstance(address, str) else None

    def save_inbound(self, bound: str) -> None:
        write_atomically(self.inbound_record, json.dumps({"bound": bound}).encode())


def default_state_dir(namespace: str, service: str, version: str, outbound: str) -> Path:
    """One folder per instance on a host, found again by a restart with the same flags:
    ``$XDG_STATE_HOME/meshproxy/<ns>.<service>.<version>.<outbound port>``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    port = outbound.rpartition(":")[2]
    return Path(base) / "meshproxy" / f"{namespace}.{service}.{version}.{port}"


def write_atomically(path: Path, data: bytes, *, private: bool = False) -> None:
    """Writes ``data`` to a new file beside ``path`` and renames it over ``path``."""
    # Not tempfile: it would cost the sidecar most of a megabyte of modules (shutil, bz2, lzma).
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{next(_serial)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
