"""A new key and certificate signing request, made by a short-lived child of the sidecar:

    python -m meshproxy.mesh.keygen KEY_FILE SPIFFE_ID      # writes KEY_FILE (0600), prints the CSR

The key is ECDSA P-256, written only to the sidecar's state folder; the control plane gets the
CSR. A child does this because `cryptography` costs the sidecar 8 MiB of resident memory for as
long as it runs, for a key made once a day; the child needs it for a tenth of a second.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# A key and a CSR take milliseconds; importing cryptography a tenth of a second.
_TIMEOUT = 60.0


class KeygenError(RuntimeError):
    """The child failed; the message says how."""


def new_key_and_csr(key_file: Path, spiffe_id: str) -> bytes:
    """Runs the child; returns the CSR (PEM) for the key it wrote to ``key_file``."""
    command = [sys.executable, "-m", "meshproxy.mesh.keygen", str(key_file), spiffe_id]
    try:
        child = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise KeygenError(f"making a key did not finish in {_TIMEOUT:g}s") from None
    if child.returncode != 0 or b"BEGIN CERTIFICATE REQUEST" not in child.stdout:
        report = child.stderr.decode(errors="replace").strip()
        raise KeygenError(f"making a key failed: {report or f'exit status {child.returncode}'}")
    return child.stdout


def _main(argv: list[str]) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from .state import write_atomically

    if len(argv) != 2:
        print("usage: python -m meshproxy.mesh.keygen KEY_FILE SPIFFE_ID", file=sys.stderr)
        return 2
    key_file, spiffe_id = Path(argv[0]), argv[1]
    key = ec.generate_private_key(ec.SECP256R1())
    # The SPIFFE ID is the control plane's to decide; the CSR names the one asked for, so that
    # a control plane's log of it reads right.
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spiffe_id.rsplit("/", 1)[-1])]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_atomically(key_file, pem, private=True)
    sys.stdout.buffer.write(csr.public_bytes(serialization.Encoding.PEM))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
