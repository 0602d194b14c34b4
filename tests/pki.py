"""Certificates for tests: a throwaway CA and workload credentials from it, written to files
as a sidecar reads them (``meshproxy.ca`` does the work)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from meshproxy.ca import CertificateAuthority

TRUST_DOMAIN = "mesh.local"
# For a CA that issues leaves all through a test: no leaf may outlive its CA, and a leaf's
# default ttl is a day.
CA_TTL = timedelta(days=7)


class CredentialFiles(NamedTuple):
    cert: Path
    key: Path
    bundle: Path


def make_ca(tmp_path: Path, trust_domain: str = "mesh.local",
            ttl: timedelta = timedelta(days=2)) -> CertificateAuthority:
    """A new CA, also saved to ``tmp_path/ca-<trust_domain>`` for commands that take a CA_DIR."""
    ca = CertificateAuthority.create(trust_domain, ttl)
    ca.save(ca_dir(tmp_path, trust_domain))
    return ca


def ca_dir(tmp_path: Path, trust_domain: str = "mesh.local") -> Path:
    return tmp_path / f"ca-{trust_domain}"


def issue(ca: CertificateAuthority, spiffe_id: str, out_dir: Path, **kw: Any) -> CredentialFiles:
    """Issue for ``spiffe_id`` and write the files to ``out_dir``. ``kw`` goes to
    :meth:`CertificateAuthority.issue`: ``ttl``, ``not_before``/``not_after`` (for expired or
    not-yet-valid certificates), ``dns_names``."""
    return CredentialFiles(*ca.issue(spiffe_id, **kw).save(out_dir))
