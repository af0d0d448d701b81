"""The server side of an accepted WebSocket for the front: websockets' sans-I/O ``Protocol``
(server, already OPEN: the handshake was answered through h11) on an asyncio stream pair.

Control frames are handled by websockets (PONG to kubectl's 5 s PINGs, the close handshake);
``recv`` hands out data frames (a fragmented message arrives as its frames, ``fin`` on the
last), ``None`` once the peer closed or the connection ended.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

__all__ = ["WsServer", "accept_key"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    """RFC 6455 ``Sec-WebSocket-Accept``."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


class WsServer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, initial: bytes = b"",
                 max_size: int = 16 * 1024 * 1024) -> None:
        self.reader, self.writer = reader, writer
        self.protocol = Protocol(Side.SERVER, state=State.OPEN, max_size=max_size)
        self._frames: list[Frame] = []
        self.closed = asyncio.Event()
        """Set once the peer's close frame or EOF arrived."""
        if initial:
            self._feed(initial)

    def _feed(self, data: bytes) -> None:
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for frame in self.protocol.events_received():
            if frame.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
                self._frames.append(frame)
            elif frame.opcode is Opcode.CLOSE:
                self.closed.set()
        self._flush()
        if self.protocol.state is State.CLOSED or not data:
            self.closed.set()

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)
            elif self.writer.can_write_eof() and not self.writer.is_closing():
                try:
                    self.writer.write_eof()
                except OSError:
                    pass

    async def recv(self) -> Frame | None:
        """The next data frame, or None at the end (close frame or EOF)."""
        while not self._frames:
            if self.closed.is_set():
                return None
            try:
                data = await self.reader.read(65536)
            except ConnectionError:
                data = b""
            self._feed(data)
            await self.drain()
        return self._frames.pop(0)

    async def send_binary(self, data: bytes) -> None:
        if self.protocol.state is not State.OPEN:
            raise ConnectionError("WebSocket closing")
        self.protocol.send_binary(data)
        self._flush()
        await self.drain()

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except ConnectionError:
            self.closed.set()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send our close frame (the close handshake's first half)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
            await self.drain()

    async def wait_closed(self, timeout: float) -> None:
        """Keep reading (discarding data) until the peer closes, at most ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while await self.recv() is not None:
                    pass
        except TimeoutError:
            pass
        finally:
            self.writer.close()
