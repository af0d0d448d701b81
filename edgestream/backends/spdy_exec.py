"""exec/attach over SPDY/3.1 for the emulator, as the kubelet serves them (``channel.k8s.io`` v1-v5).

The client opens one stream per channel, each with a ``streamtype`` header: ``error``, then
``stdin``/``stdout``/``stderr``/``resize`` as the query asked (``input``/``output``/``error``/
``tty`` = 1; a tty has no stderr; resize needs v3+). Every stream gets an empty SYN_REPLY at
once (client-go waits for it before opening the next); the command starts once all arrived
(30 s, the kubelet's stream-creation timeout). At the end stdout/stderr are FINed, then the
error stream carries the result and is FINed: v4/v5 a metav1.Status JSON (``Success``, or
``NonZeroExitCode`` with the code as cause), v1-v3 only a failure's text. The client then
resets its streams and sends GOAWAY; if it leaves early, the command is cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any
from dataclasses import dataclass

from streamproto.aio.spdy import SpdyConnection, SpdyStream
from streamproto.spdy import Role, Session
from streamproto.tunnel.errors import StreamClosed, TunnelError

from ..stream import EdgeStream
from .emulator_shell import ProcessIO
from .kube_http import negotiate_spdy, refusals

__all__ = ["REMOTECOMMAND_PROTOCOLS", "ExecOptions", "exit_status", "serve_spdy_remotecommand"]

REMOTECOMMAND_PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                           "channel.k8s.io"]
STREAM_CREATION_TIMEOUT = 30.0
LINGER = 10.0
"""How long the client gets to read the result and leave before we send GOAWAY ourselves."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExecOptions:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> ExecOptions | None:
        """The kubelet's ``NewOptions``: values must be ``1``; a tty drops stderr; None if nothing asked."""
        flag = lambda name: query.get(name, [""])[0] == "1"  # noqa: E731  (Go's FormValue: the first)
        tty = flag("tty")
        opts = cls(flag("input"), flag("output"), flag("error") and not tty, tty)
        return opts if opts.stdin or opts.stdout or opts.stderr else None


def exit_status(code: int, versioned: bool) -> bytes:
    """What goes on the error stream: v4/v5 JSON always, v1-v3 only a failure's text."""
    message = f"command terminated with non-zero exit code: error executing command, exit status {code}"
    if not versioned:
        return message.encode() if code else b""
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    return json.dumps({"metadata": {}, "status": "Failure", "message": message, "reason": "NonZeroExitCode",
                       "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}).encode()


async def _collect(conn: SpdyConnection, wanted: set[str], expected: int) -> dict[str, SpdyStream] | None:
    streams: dict[str, SpdyStream] = {}
    received = 0
    while received < expected:
        stream = await conn.accept()
        if stream is None:
            return None
        await stream.reply()
        kind = stream.header("streamtype") or ""
        if kind in wanted:
            received += 1
            if kind in streams:  # the kubelet keeps the last one of a type
                streams[kind].discard = True
            streams[kind] = stream
        else:
            stream.discard = True
            refusals.event(("spdy-streamtype", kind[:20]), "emulator: unexpected SPDY stream type %r", kind[:60])
    return streams


async def _resize_events(stream: SpdyStream, io: ProcessIO) -> None:
    """JSON values ``{"Width":W,"Height":H}`` one after another (Go's json.Decoder on the stream)."""
    decoder, pending = json.JSONDecoder(), ""
    while (chunk := await stream.read()) is not None:
        pending = (pending + chunk.decode("utf-8", "replace")).lstrip()
        while pending:
            try:
                size, end = decoder.raw_decode(pending)
            except ValueError:
                break
            pending = pending[end:].lstrip()
            try:
                io.size = (int(size["Height"]), int(size["Width"]))
            except (KeyError, TypeError, ValueError):
                pass
        if len(pending) > 4096:
            return  # not a terminal size: stop listening rather than buffer without end


async def serve_spdy_remotecommand(stream: EdgeStream, run: Callable[[ProcessIO], Coroutine[Any, Any, int]], hostname: str,
                                   opts: ExecOptions) -> None:
    protocol = await negotiate_spdy(stream, REMOTECOMMAND_PROTOCOLS)
    if protocol is None:
        return
    async def read() -> bytes | memoryview | None:
        stream.direct = conn.receive_now  # a keystroke is parsed in the tunnel's callback
        try:
            return await stream.read()
        finally:
            stream.direct = None

    conn = SpdyConnection(Role.SERVER, read, stream.send, write_now=(stream.can_send_now, stream.send_now))
    reader = asyncio.create_task(conn.run(), name=f"spdy-{stream.connect_id}")
    try:
        await _session(conn, protocol, opts, run, hostname)
    except (TunnelError, ConnectionError) as exc:
        logger.debug("exec session %d ended: %s", stream.connect_id, exc)
    finally:
        if not conn.closed.is_set():
            try:
                await conn.goaway()
            except (StreamClosed, ConnectionError):
                pass
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _session(conn: SpdyConnection, protocol: str, opts: ExecOptions, run: Callable[[ProcessIO], Coroutine[Any, Any, int]],
                   hostname: str) -> None:
    resize = opts.tty and protocol not in ("channel.k8s.io", "v2.channel.k8s.io")
    wanted = {"error"} | {k for k, on in (("stdin", opts.stdin), ("stdout", opts.stdout),
                                         ("stderr", opts.stderr), ("resize", resize)) if on}
    try:
        async with asyncio.timeout(STREAM_CREATION_TIMEOUT):
            streams = await _collect(conn, wanted, len(wanted))
    except TimeoutError:
        refusals.event("spdy-streams-timeout", "emulator: timed out waiting for client to create streams")
        return
    if streams is None:
        return
    errors = streams["error"]
    errors.discard = True
    stdout, stderr, stdin = streams.get("stdout"), streams.get("stderr"), streams.get("stdin")

    async def write_out(data: bytes) -> None:
        if stdout is not None:
            await stdout.write(data)

    async def write_err(data: bytes) -> None:
        target = stdout if opts.tty else stderr
        if target is not None:
            await target.write(data)

    async def read_in() -> bytes | None:
        return None if stdin is None else await stdin.read()

    io = ProcessIO(write_out, write_err, read_in, tty=opts.tty, hostname=hostname, stdin=opts.stdin)
    if stdin is not None and stdout is not None:
        stdin_id, stdout_id = stdin.id, stdout.id

        def echo_now(data: bytes) -> bool:
            """`cat` waiting with nothing unread: its echo goes out here, no task woken."""
            if not io.cat_waiting or conn.session.send_window(stdout_id) < len(data):  # (nothing unread: receive_now)
                return False

            def apply(session: Session) -> None:
                session.consumed(stdin_id, len(data))
                session.send_data(stdout_id, data)

            return conn.command_now(apply, len(data) + 40)  # DATA header, WINDOW_UPDATEs: 8 + 2 x 16

        stdin.direct = echo_now
    async with asyncio.TaskGroup() as tg:
        sizes = tg.create_task(_resize_events(streams["resize"], io)) if "resize" in streams else None
        process = tg.create_task(run(io))
        gone = tg.create_task(conn.closed.wait())
        await asyncio.wait((process, gone), return_when=asyncio.FIRST_COMPLETED)
        for task in (gone, sizes):
            if task is not None:
                task.cancel()
        if not process.done():  # the client left: end the command, as the kubelet's closed streams do
            process.cancel()
            return
    code = process.result()
    for s in (stdout, stderr):
        if s is not None:
            await s.close()
    result = exit_status(code, protocol in ("v4.channel.k8s.io", "v5.channel.k8s.io"))
    if result:
        await errors.write(result)
    await errors.close()
    try:
        async with asyncio.timeout(LINGER):
            await conn.closed.wait()
    except TimeoutError:
        pass
