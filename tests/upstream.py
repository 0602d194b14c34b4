"""A real HTTP/1.1 + h2c upstream for the integration tests (hypercorn serving a small ASGI app).

Every response says which upstream answered and what it received, so tests can check routing,
splits, header edits and rewrites from the client side:

    /anything          200 JSON: upstream, method, path, query, http_version, headers
    /bytes/N           N bytes streamed in 64 KiB chunks
    /chunked/N         the same without a content-length: chunked over HTTP/1.1, ended by its last chunk
    /delay/MS          the JSON answer after MS milliseconds
    /late-body/MS      response headers at once, then the body ("late") after MS milliseconds
    /status/N          an empty response with status N
    /upload            reads the request body; JSON: upstream, received (bytes)

Run as ``python tests/upstream.py --name v1 --fd N`` on a socket the test bound (no port race);
``--name`` and ``--fd`` may be given several times, for one process serving several upstreams
(each named by the socket a request came in on), whose latencies are then alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
from typing import Any

CHUNK = b"x" * 65536


def app_named(names: dict[int, str]) -> Any:
    """The app; ``names`` maps each listening port to the upstream name it answers as."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        name = names[scope["server"][1]] if len(names) > 1 else next(iter(names.values()))
        path: str = scope["path"]
        parts = path.strip("/").split("/")
        if parts[0] in ("bytes", "chunked") and len(parts) == 2:
            await _stream(send, int(parts[1]), known_length=parts[0] == "bytes")
            return
        if parts[0] == "late-body" and len(parts) == 2:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
            # hypercorn writes the headers with the first body message: an empty one sends them now.
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            await asyncio.sleep(int(parts[1]) / 1000)
            await send({"type": "http.response.body", "body": b"late"})
            return
        if parts[0] == "status" and len(parts) == 2:
            await send({"type": "http.response.start", "status": int(parts[1]), "headers": [(b"x-upstream", name.encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        received = 0
        while True:
            message = await receive()
            received += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if parts[0] == "delay" and len(parts) == 2:
            await asyncio.sleep(int(parts[1]) / 1000)
        document = {
            "upstream": name,
            "method": scope["method"],
            "path": path,
            "query": scope["query_string"].decode(),
            "http_version": scope["http_version"],
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "received": received,
            # The proxy's side of the connection: tells pooled connections apart.
            "client_port": (scope.get("client") or ("", 0))[1],
        }
        body = json.dumps(document).encode()
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"x-upstream", name.encode())],
        })
        await send({"type": "http.response.body", "body": body})

    return app


async def _stream(send: Any, size: int, known_length: bool = True) -> None:
    headers = [(b"content-type", b"application/octet-stream")]
    if known_length:
        headers.append((b"content-length", str(size).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    remaining = size
    while remaining > 0:
        chunk = CHUNK[: min(remaining, len(CHUNK))]
        remaining -= len(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
    if size == 0:
        await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", action="append", required=True)
    parser.add_argument("--fd", type=int, action="append", required=True)
    args = parser.parse_args()
    ports = [socket.socket(fileno=os.dup(fd)).getsockname()[1] for fd in args.fd]

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{fd}" for fd in args.fd]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 75
    # hypercorn closes a connection after 1,000 requests by default, and drops streams still
    # in flight when it does; tests that push thousands of requests would measure that.
    config.keep_alive_max_requests = 1_000_000_000
    config.backlog = 2048
    asyncio.run(serve(app_named(dict(zip(ports, args.name, strict=True))), config))


if __name__ == "__main__":
    main()
