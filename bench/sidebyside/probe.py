"""One request through a listener, to prove it forwards before anything is measured."""

from __future__ import annotations

import subprocess

from .targets import ClientCredentials

UPSTREAM_BODY = "hello from upstream\n"


def check_forwarding(port: int, h2c: bool) -> None:
    """Raises unless GET / on the port answers 200 with the upstream's body, over h2c (prior
    knowledge) or HTTP/1.1 as asked."""
    protocol = "h2c" if h2c else "HTTP/1.1"
    options = ["--http2-prior-knowledge"] if h2c else ["--http1.1"]
    _expect_upstream(protocol, _get(f"http://127.0.0.1:{port}/", options), http2=h2c)


def check_mutual_tls(port: int, client: ClientCredentials) -> None:
    """Raises unless GET / over mutual TLS and HTTP/2 (ALPN) answers 200 with the upstream's
    body, and a client without a certificate is refused."""
    # --insecure: the server's certificate names a SPIFFE ID, not a host name, which is all
    # curl can check; the chain is checked against the CA by the handshake client.
    options = ["--http2", "--insecure"]
    with_cert = options + ["--cert", str(client.cert), "--key", str(client.key)]
    _expect_upstream("mTLS", _get(f"https://127.0.0.1:{port}/", with_cert), http2=True)
    returncode, _, _, status, _ = _get(f"https://127.0.0.1:{port}/", options)
    if returncode == 0:  # an HTTP answer of any status: the handshake let it in
        raise RuntimeError(f"a client without a certificate was answered {status}")


def _get(url: str, options: list[str]) -> tuple[int, str, str, str, str]:
    """curl's exit code, stderr, the body, the status and the HTTP version."""
    argv = ["curl", "--silent", "--show-error", "--max-time", "5", *options]
    argv += ["--write-out", "\n%{http_code} %{http_version}", url]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    body, _, status_line = done.stdout.rpartition("\n")
    status, _, version = status_line.partition(" ")
    return done.returncode, done.stderr.strip(), body, status, version


def _expect_upstream(protocol: str, answer: tuple[int, str, str, str, str], http2: bool) -> None:
    returncode, stderr, body, status, version = answer
    if returncode != 0:
        raise RuntimeError(f"{protocol} GET / failed: {stderr}")
    if status != "200" or body != UPSTREAM_BODY:
        raise RuntimeError(f"{protocol} GET / answered {status} with body {body!r}")
    if http2 and version != "2":
        raise RuntimeError(f"{protocol} GET / was answered over HTTP/{version}")
