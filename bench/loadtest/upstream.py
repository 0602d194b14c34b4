"""One instance of the `orders` service the load test puts behind meshproxy (stdlib only).

    GET  /orders        200, a short JSON list
    GET  /orders/ID     200, one JSON order
    POST /orders        201, JSON: the bytes of body received
    anything else       404

Every answer carries `x-upstream: NAME`, so the load can check where the proxy routed it.
Run as ``python upstream.py --name v1 --fd N`` on a listening socket the parent bound: the port
is known before the process starts, and no other process can take it in between.
"""

from __future__ import annotations

import argparse
import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OrdersHandler(BaseHTTPRequestHandler):
    name = "?"
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; without this, Nagle holds the second back until the
    # proxy's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if parts == ["orders"]:
            self._send_json(
                200, {"upstream": self.name, "orders": [{"id": 1}, {"id": 2}, {"id": 3}]}
            )
        elif len(parts) == 2 and parts[0] == "orders":
            self._send_json(
                200, {"upstream": self.name, "order": {"id": parts[1], "status": "shipped"}}
            )
        else:
            self._send_json(404, {"upstream": self.name, "error": "not found"})

    def do_POST(self) -> None:
        received = len(self._read_body())
        if self.path.split("?", 1)[0].rstrip("/") == "/orders":
            self._send_json(201, {"upstream": self.name, "received": received})
        else:
            self._send_json(404, {"upstream": self.name, "error": "not found"})

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while size := int(self.rfile.readline().split(b";", 1)[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return body
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _send_json(self, status: int, document: object) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-upstream", self.name)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--name", required=True, help="the value of x-upstream")
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening TCP socket")
    args = parser.parse_args()

    handler = type("NamedOrdersHandler", (OrdersHandler,), {"name": args.name})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=args.fd)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
