"""Run a coroutine on the chosen event loop (uvloop when available: bench/ has the numbers).

uvloop is an optional extra (``pip install 'kubeedge-stream[uvloop]'``): ``auto`` falls back to
asyncio's own loop without it; asking for ``uvloop`` explicitly without it is a configuration error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from streamproto.tunnel.errors import ConfigError

__all__ = ["run"]


def run(coro: Coroutine[Any, Any, None], loop: str = "auto") -> None:
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                coro.close()  # never awaited: say so now, not as a RuntimeWarning at exit
                raise ConfigError(
                    "--loop uvloop: uvloop is not installed (pip install 'kubeedge-stream[uvloop]', or --loop auto)"
                ) from None
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)
