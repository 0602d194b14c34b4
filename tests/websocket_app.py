"""WebSocket peers for the upgrade tests: an echo app served by the `websockets` package in a
thread of its own, recording the close code each session ended with; a raw HTTP/1.1 app that
answers an upgrade with a canned head (the malformed cases); and WebSocket frames by hand, for
an RFC 8441 client written with the `h2` package."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.asyncio.server import Server, ServerConnection, serve


class EchoApp:
    """Echoes each text message as ``echo: <message>``; ``closes`` lists the close code each
    session ended with, as the app received it."""

    def __init__(self) -> None:
        self.closes: list[int | None] = []
        self.paths: list[str] = []
        self.address = ""
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(15):
            raise TimeoutError("the WebSocket app did not start")

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(self._serve())
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        started.set()
        self._loop.run_forever()

    async def _serve(self) -> Server:
        return await serve(self._echo, "127.0.0.1", 0)

    async def _echo(self, session: ServerConnection) -> None:
        self.paths.append(session.request.path if session.request else "")
        try:
            async for message in session:
                await session.send(f"echo: {message!s}")
        except ConnectionClosed:
            pass  # a close code other than 1000 or 1001 ends the iteration with an error
        self.closes.append(session.close_code)

    def stop(self) -> None:
        async def shut_down() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut_down(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._loop.close()


class CannedApp:
    """Answers every request on a connection with ``head`` (bytes), then closes it."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self._socket.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(10)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(4096)
                if not chunk:
                    return
                received += chunk
            connection.sendall(self.head)

    def stop(self) -> None:
        self._socket.close()


def client_frame(text: str) -> bytes:
    """A masked text frame, as a client sends it (RFC 6455 §5.2); short messages only."""
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_frame(code: int) -> bytes:
    payload = struct.pack("!H", code)
    mask = os.urandom(4)
    return bytes([0x88, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frame(data: bytes) -> tuple[int, bytes, bytes]:
    """(opcode, payload, rest) of an unmasked frame from a server at the start of ``data``."""
    opcode, length = data[0] & 0x0F, data[1] & 0x7F
    assert length < 126, "short frames only"
    return opcode, data[2:2 + length], data[2 + length:]


def settings_of(events: list[Any]) -> dict[int, int]:
    """The peer's settings among h2 events."""
    import h2.events

    found: dict[int, int] = {}
    for event in events:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            found.update({key: setting.new_value for key, setting in event.changed_settings.items()})
    return found
