"""A mutual-TLS client that opens one new connection after another for a while: each a full
handshake (no session resumption), then the HTTP/2 preface both ways, as a sidecar opening a
mesh connection does, then closed. Prints one JSON line:
{"handshakes": N, "seconds": S, "failures": F, "first_failure": "..."}.

Run as its own process, pinned to the load core, by handshakes.py. Standard library only.

Neither load tool fits: h2load cannot present a client certificate, and `openssl s_time -new`
ends every connection with a TCP reset (SO_LINGER 0) right after its last handshake message,
which a server may see before it has written its session tickets: a handshake done, but counted
and logged as a failed one by meshproxy. Nor does s_time learn whether the server accepted its
certificate: in TLS 1.3 a server refuses it only after the client's handshake is over.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import time

# What an HTTP/2 client sends first: the connection preface and an empty SETTINGS frame.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    options = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(options.cert, options.key)
    context.load_verify_locations(options.ca)
    # The server is known by the SPIFFE ID in its certificate, not by a host name; its chain is
    # still checked against the CA.
    context.check_hostname = False
    # As a sidecar connecting to another: HTTP/2.
    context.set_alpn_protocols(["h2"])

    handshakes = failures = 0
    first_failure = None
    started = time.monotonic()
    deadline = started + options.seconds
    while time.monotonic() < deadline:
        try:
            raw = socket.create_connection(("127.0.0.1", options.port), timeout=5)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with context.wrap_socket(raw) as tls:  # takes the connection over, handshakes
                tls.sendall(HTTP2_PREFACE)
                # The server's SETTINGS: in TLS 1.3 a server that refuses the client's
                # certificate says so only now, with an alert instead.
                if not tls.recv(1):
                    raise ConnectionError("the server closed the connection after the handshake")
                # Then the end, as clean as both servers take it: a FIN (each treats the missing
                # close_notify as the end of the connection and closes too; with close_notify,
                # the data the server still sends afterwards is an error to OpenSSL), and
                # everything the server still sends read, so that closing sends no reset.
                tls.shutdown(socket.SHUT_WR)
                while tls.recv(4096):
                    pass
        except OSError as error:  # ssl.SSLError is one
            failures += 1
            first_failure = first_failure or f"{type(error).__name__}: {error}"
            continue
        handshakes += 1
    elapsed = time.monotonic() - started
    print(
        json.dumps(
            {
                "handshakes": handshakes,
                "seconds": round(elapsed, 3),
                "failures": failures,
                "first_failure": first_failure,
            }
        )
    )


if __name__ == "__main__":
    main()
