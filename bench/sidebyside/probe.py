"""One request through a listener, to prove it forwards before anything is measured."""

from __future__ import annotations

import subprocess

UPSTREAM_BODY = "hello from upstream\n"


def check_forwarding(port: int, h2c: bool) -> None:
    """Raises unless GET / on the port answers 200 with the upstream's body, over h2c (prior
    knowledge) or HTTP/1.1 as asked."""
    argv = ["curl", "--silent", "--show-error", "--max-time", "5"]
    argv += ["--http2-prior-knowledge"] if h2c else ["--http1.1"]
    argv += ["--write-out", "\n%{http_code} %{http_version}", f"http://127.0.0.1:{port}/"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    protocol = "h2c" if h2c else "HTTP/1.1"
    if done.returncode != 0:
        raise RuntimeError(f"{protocol} GET / failed: {done.stderr.strip()}")
    body, _, status_line = done.stdout.rpartition("\n")
    status, version = status_line.split()
    if status != "200" or body != UPSTREAM_BODY:
        raise RuntimeError(f"{protocol} GET / answered {status} with body {body!r}")
    if h2c and version != "2":
        raise RuntimeError(f"h2c GET / was answered over HTTP/{version}")
