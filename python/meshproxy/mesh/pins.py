"""The CA pins of a PEM bundle, read with a few lines of DER walking rather than an X.509 library
(which would cost the sidecar 8 MiB for as long as it runs: see ``keygen.py``).

A pin is ``join_token.ca_pin`` of a certificate's SubjectPublicKeyInfo, the field that
``kubeadm join --discovery-token-ca-cert-hash`` pins too: it stays when the CA certificate is
re-issued with the same key.
"""

from __future__ import annotations

import re
import ssl

from .join_token import ca_pin

_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def certificate_blocks(bundle_pem: str) -> list[str]:
    """The PEM blocks of the certificates in ``bundle_pem``, in order."""
    return [block + "\n" for block in _PEM_CERTIFICATE.findall(bundle_pem)]


def bundle_pins(bundle_pem: str) -> list[str]:
    """The pin of every certificate in ``bundle_pem``, in order. Raises ValueError for a
    certificate that does not parse."""
    return [ca_pin(subject_public_key_info(ssl.PEM_cert_to_DER_cert(block)))
            for block in certificate_blocks(bundle_pem)]


def subject_public_key_info(certificate_der: bytes) -> bytes:
    """The DER of the SubjectPublicKeyInfo of an X.509 certificate (RFC 5280 section 4.1):
    Certificate = SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }."""
    der = certificate_der
    _, content, _ = _element(der, 0, 0x30)  # Certificate
    _, at, _ = _element(der, content, 0x30)  # tbsCertificate: its first field
    if at < len(der) and der[at] == 0xA0:  # the explicit version
        at = _element(der, at)[2]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        at = _element(der, at)[2]
    start, _, end = _element(der, at, 0x30)
    return der[start:end]


def _element(der: bytes, at: int, tag: int | None = None) -> tuple[int, int, int]:
    """(start, content start, end) of the DER element (tag, length, content) at ``at``."""
    try:
        if tag is not None and der[at] != tag:
            raise ValueError(f"not an X.509 certificate: expected tag {tag:#x} at byte {at}, found {der[at]:#x}")
        length = der[at + 1]
        content = at + 2
        if length & 0x80:
            count = length & 0x7F
            if not 0 < count <= 4:
                raise ValueError(f"not an X.509 certificate: bad length at byte {at}")
            length = int.from_bytes(der[content:content + count], "big")
            content += count
    except IndexError:
        raise ValueError("not an X.509 certificate: it ends early") from None
    end = content + length
    if end > len(der):
        raise ValueError("not an X.509 certificate: it ends early")
    return at, content, end
