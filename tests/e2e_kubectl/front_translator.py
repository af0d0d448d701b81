"""kube-apiserver's StreamTranslator for exec/attach: kubectl's WebSocket ``v5.channel.k8s.io``
in, a new SPDY/3.1 connection to the kubelet out (``staging/src/k8s.io/apiserver/pkg/util/
proxy/streamtranslator.go`` + ``websocket.go``, client-go's SPDY executor v1..v5).

The order of events, as the Go code does it:
1. the WebSocket is already accepted (101 ``v5.channel.k8s.io``); an empty message goes out on
   the lowest writable channel (stdout, else stderr, else error) to say the session is open;
2. ``POST`` to the kubelet with the translated head (Host node:port, ``Go-http-client/1.1``,
   ``Content-Length: 0``, SPDY/3.1, offers v5 v4 v3 v2 channel.k8s.io); a refusal becomes the
   v5 error channel's Status (a kubelet Status body as is, else ``unable to upgrade
   connection: <body>`` as an InternalError);
3. streams in client-go's order, each waiting for its SYN_REPLY: error, stdin, stdout, stderr
   (not with a tty), resize (tty, v3+); PING every 5 s;
4. channel bytes both ways: stdin (v5 close of channel 0 -> FIN), resize JSON, stdout, stderr;
5. when stdout and stderr ended, the error stream's Status decides: Success, an exit code
   (``NonZeroExitCode`` re-wrapped as the translator does), else an InternalError; streams are
   reset (CANCEL), GOAWAY, the SPDY connection closed;
6. ``finish``: the status on channel 3, our close frame, then wait (15 min at most) for
   kubectl to close.
If kubectl goes away first, the SPDY side is torn down at once (Go would wait on the error
stream; a test fixture must not leak).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11

from streamproto.aio.spdy import SpdyConnection, SpdyStream
from streamproto.spdy import Role, RstStatus, SessionConfig
from streamproto.tunnel.errors import StreamClosed

from .front_http import KubeletDial, internal_error, status_body
from .front_ws import WsServer

__all__ = ["ExecOptions", "SPDY_EXEC_PROTOCOLS", "StreamTranslator", "go_json"]

SPDY_EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                       "channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
CREATE_STREAM_TIMEOUT = 30.0
GO_CLIENT = SessionConfig(initial_window=(1 << 31) - 1)
"""client-go's spdystream hands no credit back (no WINDOW_UPDATE): a window this large means
we send none either, so nothing of ours reaches a kubelet that closed after its result."""
PING_PERIOD = 5.0


def go_json(value: object) -> bytes:
    """``json.Marshal``: compact, HTML characters escaped, non-ASCII kept."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


@dataclass(frozen=True)
class ExecOptions:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def _decode_error_stream(protocol: str, message: bytes) -> dict:
    """client-go's errorDecoderV4 (v4/v5) or V1..V3 (text), then what the translator writes."""
    success = status_body("Success", typed=False)
    if not message:
        return success
    if protocol not in ("v4.channel.k8s.io", "v5.channel.k8s.io"):
        return internal_error(f"error executing remote command: {message.decode(errors='replace')}", typed=False)
    try:
        status = json.loads(message)
        if not isinstance(status, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        return internal_error(f"error stream protocol error: {exc} in {message.decode(errors='replace')!r}",
                              typed=False)
    if status.get("status") == "Success":
        return success
    if status.get("status") != "Failure":
        return internal_error("error stream protocol error: unknown error", typed=False)
    if status.get("reason") == "NonZeroExitCode":
        causes = (status.get("details") or {}).get("causes") or []
        code = next((c.get("message", "") for c in causes if c.get("reason") == "ExitCode"), None)
        if code is None or not code.isdigit() or int(code) > 255:
            return internal_error(f"error stream protocol error: invalid exit code value {code!r}", typed=False)
        inner = f"command terminated with non-zero exit code: {status.get('message', '')}"
        return status_body(message=f"command terminated with non-zero exit code: {inner}", reason="NonZeroExitCode",
                           details={"causes": [{"reason": "ExitCode", "message": code}]}, typed=False)
    return internal_error(str(status.get("message", "")), typed=False)


def _upgrade_refused(status: int, body: bytes) -> dict:
    """client-go's SpdyRoundTripper.NewConnection on a non-101: a Status body as is, else text."""
    with contextlib.suppress(ValueError):
        decoded = json.loads(body)
        if isinstance(decoded, dict) and decoded.get("kind") == "Status":
            return decoded
    return internal_error(f"unable to upgrade connection: {body.decode(errors='replace').strip()}", typed=False)


class StreamTranslator:
    def __init__(self, ws: WsServer, options: ExecOptions, dial: KubeletDial, address: str, port: int, target: str,
                 note: Callable[[str], None], finish_timeout: float = 900.0) -> None:
        self.ws = ws
        self.options = options
        self.dial = dial
        self.address, self.port, self.target = address, port, target
        self.note = note
        self.finish_timeout = finish_timeout
        self.status: dict | None = None
        """What went out on the error channel (None: kubectl left first)."""
        self.pings = 0
        """PINGs the kubelet answered."""
        self.relayed: dict[int, int] = {}
        """Bytes relayed per channel (both directions)."""

    async def run(self) -> None:
        lowest = STDOUT if self.options.stdout else STDERR if self.options.stderr else ERROR
        try:
            await self.ws.send_binary(bytes([lowest]))
            self.status = await self._execute()
        except ConnectionError:
            self.status = None
        with contextlib.suppress(ConnectionError):
            if self.status is not None:
                await self.ws.send_binary(bytes([ERROR]) + go_json(self.status))
            await self.ws.close()  # no-op when kubectl closed first
        await self.ws.wait_closed(self.finish_timeout)

    def _request(self) -> h11.Request:
        headers = [("Host", f"{self.address}:{self.port}"), ("User-Agent", "Go-http-client/1.1"),
                   ("Content-Length", "0"), ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
        headers += [("X-Stream-Protocol-Version", p) for p in SPDY_EXEC_PROTOCOLS]
        self.note(f"kubelet POST {self.target} upgrade=SPDY/3.1 protocols={','.join(SPDY_EXEC_PROTOCOLS)}")
        return h11.Request(method="POST", target=self.target, headers=headers)

    async def _execute(self) -> dict | None:
        url = f"https://{self.address}:{self.port}{self.target}"
        try:
            upstream = await self.dial.upgrade(self.address, self.port, self._request())
        except (OSError, TimeoutError, h11.ProtocolError) as exc:
            return internal_error(f'error sending request: Post "{url}": {exc or type(exc).__name__}', typed=False)
        if (upstream.status != 101 or "upgrade" not in upstream.header("connection").lower()
                or "spdy/3.1" not in upstream.header("upgrade").lower()):
            upstream.stream.close()
            return _upgrade_refused(upstream.status, upstream.body)
        protocol = upstream.header("x-stream-protocol-version") or "channel.k8s.io"
        self.note(f"kubelet 101 protocol={protocol}")
        stream = upstream.stream
        # Read the kubelet eagerly (bounded): a Go kubelet closes right after its result, and a
        # write of ours landing after that (credit, RST, GOAWAY) is answered with a TCP RST that
        # discards what we had not read yet. Go's client never writes then; we stop writing as
        # soon as the kubelet's EOF is seen, which needs the EOF seen while the streams drain.
        incoming: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=128)  # x 64 KiB: 8 MiB at most
        peer_closed = asyncio.Event()

        async def pump() -> None:
            try:
                if first := stream.trailing():
                    await incoming.put(first)
                while data := await stream.reader.read(65536):
                    await incoming.put(data)
            except (ConnectionError, OSError):
                pass
            peer_closed.set()
            await incoming.put(None)

        async def read() -> bytes | None:
            return await incoming.get()

        async def write(data: bytes) -> None:
            if not peer_closed.is_set():
                stream.writer.write(data)
                await stream.writer.drain()

        conn = SpdyConnection(Role.CLIENT, read, write, GO_CLIENT)
        session = _Session(self, conn, protocol)
        reader = asyncio.ensure_future(pump())
        try:
            return await session.run()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            stream.close()


class _Session:
    """One translated exec/attach over an upgraded SPDY connection."""

    def __init__(self, owner: StreamTranslator, conn: SpdyConnection, protocol: str) -> None:
        self.owner, self.ws, self.conn, self.protocol = owner, owner.ws, conn, protocol
        self.streams: dict[str, SpdyStream] = {}
        self.tasks: list[asyncio.Task] = []
        self.stdin_closed = False

    def _spawn(self, coro: Awaitable[object]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def run(self) -> dict | None:
        opts = self.owner.options
        self._spawn(self.conn.run())
        try:
            kinds = ["error"] + ["stdin"] * opts.stdin + ["stdout"] * opts.stdout
            kinds += ["stderr"] * (opts.stderr and not opts.tty)
            kinds += ["resize"] * (opts.tty and self.protocol not in ("channel.k8s.io", "v2.channel.k8s.io"))
            for kind in kinds:
                stream = await self.conn.open_stream([("streamtype", kind)])
                self.streams[kind] = stream
                try:
                    await asyncio.wait_for(stream.wait_reply(), CREATE_STREAM_TIMEOUT)
                except (StreamClosed, TimeoutError) as exc:
                    return internal_error(f"error creating {kind} stream: {exc or 'timeout'}", typed=False)
            self._spawn(self._ping())
            errors = self._spawn(self._read_all(self.streams["error"]))
            outputs = [self._spawn(self._output(self.streams[k], ch)) for k, ch in (("stdout", STDOUT),
                                                                                     ("stderr", STDERR))
                       if k in self.streams]
            if "stdin" in self.streams:
                self._spawn(self._stdin_closed_by_server(self.streams["stdin"]))
            ws_done = self._spawn(self._pump_websocket())
            done_outputs = asyncio.gather(*outputs)
            await asyncio.wait([done_outputs, ws_done], return_when=asyncio.FIRST_COMPLETED)
            if not done_outputs.done():
                return None  # kubectl left
            await asyncio.wait([errors, ws_done], return_when=asyncio.FIRST_COMPLETED)
            if not errors.done():
                return None
            return _decode_error_stream(self.protocol, errors.result())
        except ConnectionError:
            return None
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        """client-go: RemoveStreams (RST CANCEL each), then Close (GOAWAY)."""
        with contextlib.suppress(ConnectionError, StreamClosed, OSError):
            for stream in self.streams.values():
                await stream.reset(RstStatus.CANCEL)
            await self.conn.goaway()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(PING_PERIOD)
            with contextlib.suppress(StreamClosed, ConnectionError, TimeoutError):
                await asyncio.wait_for(self.conn.ping(), PING_PERIOD)
                self.owner.pings += 1

    @staticmethod
    async def _read_all(stream: SpdyStream, limit: int = 1 << 20) -> bytes:
        out = bytearray()
        while (chunk := await stream.read()) is not None:
            if len(out) < limit:
                out += chunk
        return bytes(out)

    async def _output(self, stream: SpdyStream, channel: int) -> None:
        prefix = bytes([channel])
        with contextlib.suppress(ConnectionError):  # kubectl gone: io.Copy ends, as in Go
            while (chunk := await stream.read()) is not None:
                await self.ws.send_binary(prefix + chunk)
                self.owner.relayed[channel] = self.owner.relayed.get(channel, 0) + len(chunk)

    async def _close_stdin(self) -> None:
        if not self.stdin_closed and "stdin" in self.streams:
            self.stdin_closed = True
            with contextlib.suppress(StreamClosed, ConnectionError):
                await self.streams["stdin"].close()

    async def _stdin_closed_by_server(self, stream: SpdyStream) -> None:
        """client-go reads remoteStdin until the server closes it, then closes its side."""
        while await stream.read() is not None:
            pass
        await self._close_stdin()

    async def _pump_websocket(self) -> None:
        """kubectl -> kubelet: stdin, resize, v5 stream close. Ends when kubectl closes."""
        channel = -1
        resize = bytearray()
        decoder = json.JSONDecoder()
        while (frame := await self.ws.recv()) is not None:
            data = bytes(frame.data)
            if frame.opcode.name != "CONT":
                if not data:
                    continue
                channel, data = data[0], data[1:]
            if channel == STDIN and "stdin" in self.streams and not self.stdin_closed:
                try:
                    await self.streams["stdin"].write(data)
                except (StreamClosed, ConnectionError):
                    self.stdin_closed = True  # the kubelet side is gone: io.Copy ends, later input dropped
            elif channel == RESIZE and "resize" in self.streams:
                resize += data
                while resize:  # one JSON value per size (json.Decoder on a stream)
                    text = resize.decode(errors="replace").lstrip()
                    try:
                        size, end = decoder.raw_decode(text)
                    except ValueError:
                        break
                    resize = bytearray(text[end:].encode())
                    if isinstance(size, dict):
                        width, height = int(size.get("Width", 0)), int(size.get("Height", 0))
                        self.owner.note(f"kubelet resize {width}x{height}")
                        line = go_json({"Width": width, "Height": height})
                        with contextlib.suppress(StreamClosed, ConnectionError):
                            await self.streams["resize"].write(line + b"\n")
            elif channel == CLOSE and data[:1] == bytes([STDIN]):
                await self._close_stdin()
        await self._close_stdin()  # the stdin pipe ends with the WebSocket
