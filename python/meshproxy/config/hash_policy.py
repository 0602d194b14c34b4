"""A route's `hash_policy`: what a hashing cluster (`lb: ring_hash` or `maglev`) keys the
route's requests by. The rules (exactly one source per entry, a key for every hashing cluster
and only for those) are the engine's, which the loader's engine check reports at their lines.
"""

from __future__ import annotations

from .fields import HeaderName
from .section import _Section


class HashPolicy(_Section):
    """One source of the hash key; give exactly one field. The key is made of every source the
    request carries, in order; a request carrying none lands on any endpoint."""

    header: HeaderName | None = None
    """A request header's value (e.g. x-user)."""
    cookie: str | None = None
    """A cookie's value (e.g. session)."""
    source_ip: bool | None = None
    """true: the client's IP address."""
