"""Run a coroutine on the chosen event loop (uvloop when available: bench/ has the numbers)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["run"]


def run(coro: Coroutine[Any, Any, None], loop: str = "auto") -> None:
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)
