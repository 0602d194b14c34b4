"""The join token: what ``meshctl token create`` prints and ``meshproxy run --token-file``
reads. It names the one service and namespace the sidecar may join as, carries a secret the
control plane keeps only a hash of, and pins the control plane's CA (the SHA-256 of its public
key, as ``kubeadm join`` pins one), so the sidecar never trusts a control plane it was not
told about.

    mpj1.<base64url of {"id", "secret", "service", "namespace", "ca", "expires"}>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from typing import NamedTuple

PREFIX = "mpj1."


class JoinToken(NamedTuple):
    id: str
    """Public: the control plane finds the token by it, and revokes by it."""
    secret: str
    service: str
    namespace: str
    ca_pin: str
    """``sha256:<hex>`` of the CA certificate's SubjectPublicKeyInfo (DER)."""
    expires: int
    """Seconds since the epoch."""

    def encode(self) -> str:
        payload = {"id": self.id, "secret": self.secret, "service": self.service, "namespace": self.namespace,
                   "ca": self.ca_pin, "expires": self.expires}
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> JoinToken:
        """Raises ValueError saying what is wrong with ``text``."""
        text = text.strip()
        if not text.startswith(PREFIX):
            raise ValueError(f"not a join token: it should start with {PREFIX!r} (made by 'meshctl token create')")
        body = text[len(PREFIX):]
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (binascii.Error, ValueError):
            raise ValueError("not a join token: its body is not base64url JSON (was it cut short?)") from None
        fields = {"id": str, "secret": str, "service": str, "namespace": str, "ca": str, "expires": int}
        if not isinstance(payload, dict) or any(not isinstance(payload.get(k), t) for k, t in fields.items()):
            raise ValueError(f"not a join token: it needs the fields {', '.join(fields)}")
        if not payload["ca"].startswith("sha256:"):
            raise ValueError("not a join token: its CA pin should be 'sha256:<hex>'")
        return cls(payload["id"], payload["secret"], payload["service"], payload["namespace"], payload["ca"],
                   payload["expires"])

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(6)

    @staticmethod
    def new_secret() -> str:
        return secrets.token_urlsafe(24)


def secret_digest(secret: str) -> str:
    """What the control plane stores in place of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def ca_pin(spki_der: bytes) -> str:
    """The pin of a CA, from its certificate's SubjectPublicKeyInfo in DER."""
    return "sha256:" + hashlib.sha256(spki_der).hexdigest()
