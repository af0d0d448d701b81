"""A tiny shell for emulated containers: enough for exec/attach tests and labs.

Commands: ``echo``, ``printf`` (text and ``\\n``), ``cat`` (stdin to stdout until EOF),
``exit N``, ``kill 1`` (restarts the container), ``sleep S``, ``stty size``, ``seq N``, ``hostname``, ``true``, ``false``,
``sh -c 'a; b && c'``, ``cmd >&2``, and ``sh`` read-eval loops on stdin (with tty echo).
Unknown commands fail with 127, as a shell does.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["ProcessIO", "run_command"]


@dataclass
class ProcessIO:
    """What a running emulated process sees: its streams and its terminal."""

    write_stdout: Callable[[bytes], Awaitable[None]]
    write_stderr: Callable[[bytes], Awaitable[None]]
    read_stdin: Callable[[], Awaitable[bytes | None]]
    tty: bool = False
    size: tuple[int, int] = (24, 80)
    """(rows, columns), updated by resize events."""
    hostname: str = "emulated"
    stdin: bool = True
    """False when the client sent no stdin (attach without -i runs until the client leaves)."""
    restart: Callable[[], None] | None = None
    """Restarts the container (``kill 1``): a new instance, the old one's logs become ``--previous``."""
    cat_waiting: bool = False
    """True while ``cat`` waits for stdin with all it read written to stdout: the channel may
    then echo typed bytes itself, in order, without waking the process."""
    _pending: bytearray = field(default_factory=bytearray)

    async def readline(self) -> bytes | None:
        """One line of stdin (``\\r`` ends a line on a tty); None at EOF."""
        while True:
            for sep in (b"\n", b"\r"):
                idx = self._pending.find(sep)
                if idx >= 0:
                    line = bytes(self._pending[:idx])
                    del self._pending[: idx + 1]
                    return line
            data = await self.read_stdin()
            if data is None:
                if self._pending:
                    line = bytes(self._pending)
                    self._pending.clear()
                    return line
                return None
            if self.tty:  # a terminal echoes what is typed
                await self.write_stdout(data.replace(b"\r", b"\r\n"))
            self._pending += data


_SPLIT = re.compile(r"\s*(;|&&)\s*")


async def run_command(argv: list[str], io: ProcessIO) -> int:
    if not argv:
        return 0
    if argv[0] in ("sh", "/bin/sh", "bash") and len(argv) >= 3 and argv[1] == "-c":
        return await _script(argv[2], io)
    if argv[0] in ("sh", "/bin/sh", "bash") and len(argv) == 1:
        return await _interactive(io)
    return await _simple(argv, io)


async def _script(script: str, io: ProcessIO) -> int:
    code = 0
    parts = _SPLIT.split(script.strip())
    op = ";"
    for i in range(0, len(parts), 2):
        if op == "&&" and code != 0:
            break
        try:
            argv = shlex.split(parts[i])
        except ValueError:
            await io.write_stderr(b"sh: syntax error\n")
            return 2
        if argv and argv[0] == "exit":
            return int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else code
        code = await _simple(argv, io)
        op = parts[i + 1] if i + 1 < len(parts) else ";"
    return code


async def _interactive(io: ProcessIO) -> int:
    code = 0
    while True:
        if io.tty:
            await io.write_stdout(b"# ")
        line = await io.readline()
        if line is None:
            return code
        text = line.decode(errors="replace").strip()
        if not text:
            continue
        argv = shlex.split(text) if text.count("'") % 2 == 0 and text.count('"') % 2 == 0 else text.split()
        if argv[0] == "exit":
            return int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else code
        if io.tty:
            out = _crlf(io)
            code = await _simple(argv, ProcessIO(out, out, io.read_stdin, io.tty, io.size, io.hostname, io.stdin,
                                                 io.restart))
        else:
            code = await _simple(argv, io)


def _crlf(io: ProcessIO) -> Callable[[bytes], Awaitable[None]]:
    async def write(data: bytes) -> None:
        await io.write_stdout(data.replace(b"\n", b"\r\n"))

    return write


async def _simple(argv: list[str], io: ProcessIO) -> int:
    write = io.write_stdout
    if argv and argv[-1] == ">&2":
        argv, write = argv[:-1], io.write_stderr
    name, args = argv[0], argv[1:]
    if name == "echo":
        newline = b"\n"
        if args[:1] == ["-n"]:
            args, newline = args[1:], b""
        await write(" ".join(args).encode() + newline)
    elif name == "printf":
        await write(" ".join(args).replace("\\n", "\n").encode())
    elif name == "cat":
        while True:
            io.cat_waiting = write is io.write_stdout
            try:
                data = await io.read_stdin()
            finally:
                io.cat_waiting = False
            if data is None:
                break
            await write(data)
    elif name == "sleep":
        await asyncio.sleep(float(args[0]) if args else 0)
    elif name == "stty" and args == ["size"]:
        await write(f"{io.size[0]} {io.size[1]}\n".encode())
    elif name == "seq" and args and args[-1].isdigit():
        await write("".join(f"{i}\n" for i in range(1, int(args[-1]) + 1)).encode())
    elif name == "hostname":
        await write(io.hostname.encode() + b"\n")
    elif name == "true":
        return 0
    elif name == "false":
        return 1
    elif name == "kill" and args and args[-1] == "1" and io.restart is not None:
        io.restart()  # the main process dies: the kubelet starts the container again
    elif name == "kill":
        await io.write_stderr(f"sh: can't kill pid {args[-1] if args else ''}: No such process\n".encode())
        return 1
    elif name == "exit":
        return int(args[0]) if args and args[0].isdigit() else 0
    else:
        await io.write_stderr(f"sh: {name}: not found\n".encode())
        return 127
    return 0
