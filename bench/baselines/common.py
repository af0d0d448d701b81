"""What the baseline processes share: the generated log bytes, the loop, the ready line."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

LINE_SIZE = 1024


def log_block(line_size: int = LINE_SIZE, lines: int = 256) -> bytes:
    """``lines`` log lines of ``line_size`` bytes (newline included), as the emulator pads them."""
    out = bytearray()
    for i in range(lines):
        text = f"2026-11-29T00:00:00.000000000Z line {i}"
        out += (text + " " + "x" * (line_size - len(text) - 2) + "\n").encode()
    return bytes(out)


def run(main: Coroutine[Any, Any, None], loop: str = "uvloop") -> None:
    """Run on uvloop (the tunnel's default) unless told otherwise."""
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def ready(line: str) -> None:
    print(line, flush=True)
    sys.stdout.flush()


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)
