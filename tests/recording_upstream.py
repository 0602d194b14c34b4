"""An upstream that records what reaches it, to prove what a proxy did, and did not, forward."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass

import h11
from raw_http import READ_TIMEOUT


@dataclass
class RecordedRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""
    complete: bool = False


class RecordingUpstream:
    """A small HTTP/1.1 upstream (h11) that records every request it parses, so a test can
    prove what did, and did not, reach the upstream. Answers each with JSON naming the path."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests: list[RecordedRequest] = []
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop)]
        self._threads[0].start()

    def targets(self) -> list[str]:
        return [request.target for request in self.requests]

    def stop(self) -> None:
        self._stopped.set()
        self._threads[0].join(timeout=READ_TIMEOUT)  # accepts no more: the list is final
        for thread in self._threads[1:]:
            thread.join(timeout=READ_TIMEOUT)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(sock,))
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(0.1)
        with sock:
            try:
                self._serve_requests(sock)
            except (OSError, h11.ProtocolError):
                pass  # the proxy hung up, or sent what h11 refuses: the connection ends here

    def _serve_requests(self, sock: socket.socket) -> None:
        connection = h11.Connection(h11.SERVER)
        request: RecordedRequest | None = None
        while not self._stopped.is_set():
            event = connection.next_event()
            if event is h11.NEED_DATA:
                try:
                    connection.receive_data(sock.recv(65536))
                except TimeoutError:
                    continue
            elif isinstance(event, h11.Request):
                headers = {name.decode(): value.decode() for name, value in event.headers}
                request = RecordedRequest(event.method.decode(), event.target.decode(), headers)
                self.requests.append(request)
            elif isinstance(event, h11.Data) and request is not None:
                request.body += event.data
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                request.complete = True
                body = json.dumps({"path": request.target}).encode()
                head = h11.Response(status_code=200, headers=[("content-length", str(len(body))), ("x-upstream", "recorder")])
                sock.sendall(connection.send(head) + connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage()))
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()
            else:  # ConnectionClosed, or a request the recorder cannot answer
                return
