"""Real processes, real TLS, real sockets: runners for cloudstream and edgestream, and an
HTTPS client that speaks to port 10003 as the API server does.

Shared by tests/ (``tests/integration/framework.py`` re-exports it) and bench/. ``root`` runs
cloudstream/edgestream from another checkout (``bench compare`` uses a git worktree of a REV)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from streamcerts import Layout, client_context

ROOT = Path(__file__).resolve().parent.parent
MS = float(os.environ.get("KES_TIMEOUT_FACTOR", "1"))
"""Scale every timeout on slow machines (the same variable tests/conftest.py reads)."""

READY = re.compile(r"kubelet API on \S+:(\d+), tunnel on \S+:(\d+)")
TUNNEL_UP = re.compile(r"tunnel up")


@dataclass
class Process:
    name: str
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None
    _waiters: list[tuple[re.Pattern[str], asyncio.Future[re.Match[str]]]] = field(default_factory=list)

    @classmethod
    async def start(cls, name: str, argv: list[str], raw: bool = False, root: Path | None = None) -> Process:
        """``python -m <argv>``, or ``argv`` as given with ``raw`` (e.g. under ``ip netns exec``);
        from ``root`` (another checkout) when given, else from this one."""
        where = root or ROOT
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(where))
        command = argv if raw else [sys.executable, "-m", *argv]
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=where, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        self = cls(name, proc)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            for pattern, fut in list(self._waiters):
                if not fut.done() and (m := pattern.search(line)):
                    fut.set_result(m)

    async def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float = 20.0, since: int = 0) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        for line in self.lines[since:]:
            if m := regex.search(line):
                return m
        fut: asyncio.Future[re.Match[str]] = asyncio.get_running_loop().create_future()
        self._waiters.append((regex, fut))
        try:
            return await asyncio.wait_for(fut, timeout * MS)
        except TimeoutError:
            raise AssertionError(f"{self.name} never logged {regex.pattern!r}; its output:\n" + self.output) from None
        finally:
            self._waiters.remove((regex, fut))

    @property
    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:  # edgestream drains on the first SIGTERM; the second one stops it
                await asyncio.wait_for(self.proc.wait(), 3 * MS)
            except TimeoutError:
                if self.proc.returncode is None:
                    self.proc.send_signal(sig)
                try:
                    await asyncio.wait_for(self.proc.wait(), timeout * MS)
                except TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return self.proc.returncode or 0


async def start_cloud(layout: Layout, *extra: str, root: Path | None = None,
                      wrap: tuple[str, ...] = ()) -> tuple[Process, int, int]:
    """cloudstream on ephemeral loopback ports: (process, kubelet API port, tunnel port).
    ``wrap``: a module and its arguments that runs it (``testkit.memtrace OUT --``)."""
    cloud = await Process.start(
        "cloudstream",
        [*wrap, "cloudstream", "--pki-dir", str(layout.root), "--stream-address", "127.0.0.1", "--stream-port", "0",
         "--tunnel-address", "127.0.0.1", "--tunnel-port", "0", *extra],
        root=root,
    )
    m = await cloud.wait_for_line(READY)
    return cloud, int(m.group(1)), int(m.group(2))


async def start_edge(layout: Layout, node: str, tunnel_port: int, *extra: str, root: Path | None = None) -> Process:
    """edgestream (emulator backend unless ``extra`` says otherwise) dialling ``localhost:tunnel_port``."""
    return await Process.start(
        "edgestream",
        ["edgestream", "--pki-dir", str(layout.root), "--node-name", node, "--server", f"localhost:{tunnel_port}",
         "--node-ip", "127.0.0.1", "--backend", "emulator", *extra],
        root=root,
    )


def apiserver_tls(layout: Layout, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """TLS as the API server dials a kubelet: its kubelet-client certificate, and (in tests)
    verification of the server against the stream CA."""
    ctx = client_context(
        layout.stream_ca,
        cert if cert is not None else layout.apiserver_client_cert,
        key if key is not None else layout.apiserver_client_key,
    )
    ctx.check_hostname = False
    return ctx


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body: chunked, by Content-Length, or until EOF."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await self.reader.readline()
                if not size_line.endswith(b"\r\n"):
                    raise ConnectionError("chunked body cut off")
                size = int(size_line.strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    return
                data = await self.reader.readexactly(size + 2)
                yield data[:-2]
        elif "content-length" in self.headers:
            yield await self.reader.readexactly(int(self.headers["content-length"]))
        else:
            while data := await self.reader.read(65536):
                yield data

    async def body(self) -> bytes:
        return b"".join([c async for c in self.chunks()])


@asynccontextmanager
async def kubelet_request(
    port: int, path: str, *, host: str, tls: ssl.SSLContext, method: str = "GET", headers: dict[str, str] | None = None
) -> AsyncIterator[Response]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: Go-http-client/1.1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("connection closed before a response")
        status = int(status_line.split()[1])
        response_headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            response_headers[name.strip().lower()] = value.strip()
        yield Response(status, response_headers, reader, writer)
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass
