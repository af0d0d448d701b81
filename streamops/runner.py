"""Run a coroutine on the chosen event loop (uvloop when available: bench/ has the numbers).

uvloop is an optional extra (``pip install 'kubeedge-stream[uvloop]'``): ``auto`` falls back to
asyncio's own loop without it; asking for ``uvloop`` explicitly without it is a configuration error.

The garbage collector is set up first (``tune_gc``): what exists at start (modules, classes,
config: never garbage) is frozen out of every later walk. The young generation's threshold is
a trade-off, measured both ways. CPython stops the whole process while it walks a generation;
with 10,000 streams cloudstream tracks 1.2 million objects, and at CPython's threshold (700
allocations) objects that live a second or two are promoted so fast that full collections of
0.5-0.8 s came every few seconds while 1,000 nodes ramped up (``python -m bench.fleet streams
--nodes 1000``: opened in 54-56 s, time to first byte p99 2.4-3.3 s). ``KES_GC_YOUNG=10000``
removed those pauses (28-33 s, p99 1.3-1.6 s; exec echo beside bulk p99 1.14x) but kept more
garbage in cycles alive between collections: the gauntlet's 10-minute soak saw cloudstream's
RSS at 186-202 MB and still rising over its second half (+17.9 MB) against 123 MB and flat
(+0.4 MB) at 700. So the default stays 700; a lab driving thousands of streams through one
process, where pauses matter more than memory, sets ``KES_GC_YOUNG``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import resource
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from streamproto.tunnel.errors import ConfigError, TunnelError

__all__ = ["GC_YOUNG", "raise_nofile_limit", "run", "serve_main", "tune_gc"]

C = TypeVar("C")

GC_YOUNG = 700
"""Allocations between young collections (CPython's own default; see above). ``KES_GC_YOUNG`` overrides."""


def tune_gc() -> None:
    young = int(os.environ.get("KES_GC_YOUNG", GC_YOUNG))
    _, middle, old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, middle, old)


def run(coro: Coroutine[Any, Any, None], loop: str = "auto") -> None:
    tune_gc()
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


def raise_nofile_limit(wanted: int | None = None, tool: str = "kubeedge-stream") -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (systemd's default soft limit is
    1,024: every stream holds sockets), or set it to ``wanted``. Returns (soft, hard) afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else wanted
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logging.getLogger(tool).warning("! cannot set the open-file limit to %d (hard limit %d): %s",
                                            target, hard, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def serve_main(tool: str, ns: argparse.Namespace, parse: Callable[[argparse.Namespace], C],
               serve: Callable[[C], Coroutine[Any, Any, None]]) -> int:
    """What ``cloudstream`` and ``edgestream`` do once logging is set up: read the config (exit 2
    naming the problem), serve until stopped (130 on Ctrl-C), 1 on a fatal error."""
    # websockets' DEBUG lines show frame payloads, which can carry request headers: never.
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.getLogger().level))
    try:
        config = parse(ns)
    except ConfigError as exc:
        print(f"{tool}: {exc}", file=sys.stderr)
        return 2
    try:
        run(serve(config), ns.loop)
    except KeyboardInterrupt:
        return 130
    except (OSError, TunnelError) as exc:
        logging.getLogger(tool).error("fatal: %s", exc)
        return 1
    return 0
