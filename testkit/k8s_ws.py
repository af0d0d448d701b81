"""A client for Kubernetes' WebSocket stream protocols (v4/v5.channel.k8s.io), as kubectl
>= 1.30 speaks them, built on the websockets library."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame
from websockets.streams import StreamReader
from websockets.typing import Subprotocol


def parse_frames(data: bytes, *, mask: bool) -> tuple[list[Frame], bytes]:
    """Every complete WebSocket frame in ``data``, parsed by websockets (the reference for our
    own shortcuts), and the bytes after the last one."""
    reader = StreamReader()
    reader.feed_data(data)
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=mask)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:
            break  # an incomplete frame: left over
    return frames, bytes(reader.buffer)


async def open_ws(
    port: int, path: str, *, node: str, tls: ssl.SSLContext, protocols: list[str] | None = None
) -> ClientConnection:
    """Dial 10003 as the API server would, with ``Host: <node>`` selecting the edge."""
    return await connect(
        f"wss://{node}:{port}{path}",
        host="127.0.0.1",
        port=port,
        ssl=tls,
        server_hostname="localhost",
        subprotocols=[Subprotocol(p) for p in protocols or ["v5.channel.k8s.io", "v4.channel.k8s.io"]],
        open_timeout=10,
        max_size=None,
        compression=None,
    )


@dataclass
class ExecResult:
    stdout: bytes = b""
    stderr: bytes = b""
    status: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.status.get("status") == "Success":
            return 0
        for cause in self.status.get("details", {}).get("causes", []):
            if cause.get("reason") == "ExitCode":
                return int(cause["message"])
        return -1


async def run_exec(
    ws: ClientConnection,
    stdin: list[bytes] | None = None,
    resize: tuple[int, int] | None = None,
    close_stdin: bool = True,
    until: bytes | None = None,
    timeout: float = 20.0,
) -> ExecResult:
    """Send stdin (then half-close it with v5), collect stdout/stderr/status until the server closes."""
    result = ExecResult()
    if resize:
        await ws.send(b"\x04" + json.dumps({"Width": resize[1], "Height": resize[0]}).encode())

    async def feed() -> None:
        for chunk in stdin or []:
            await ws.send(b"\x00" + chunk)
            if until is not None:
                await asyncio.sleep(0.05)
        if close_stdin and ws.subprotocol == "v5.channel.k8s.io":
            await ws.send(b"\xff\x00")

    feeder = asyncio.create_task(feed())
    try:
        async with asyncio.timeout(timeout):
            async for message in ws:
                assert isinstance(message, bytes)
                if not message[1:]:
                    continue
                ch, payload = message[0], message[1:]
                if ch == 1:
                    result.stdout += payload
                elif ch == 2:
                    result.stderr += payload
                elif ch == 3:
                    result.status = json.loads(payload)
    except ConnectionClosed:
        pass
    finally:
        feeder.cancel()
    return result
