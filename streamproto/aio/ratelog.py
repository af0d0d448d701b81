"""Rate-limited logging: every refusal logged once with its reason, never a line per bad message.

A hostile peer decides how often we would log; this decides how often we do. The first event
of a kind is logged at once; later ones within ``interval`` are counted, and one summary line
("… 5,312 more like this in the last 10 s") follows when the interval ends. One timer per kind
with pending counts, none when quiet; at most ``max_kinds`` kinds are tracked (the rest are
counted under one overflow kind), so memory stays bounded whatever a peer sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RateLimitedLog"]

_OVERFLOW = "(other kinds)"


@dataclass(slots=True)
class _Kind:
    first_at: float
    suppressed: int = 0
    last_message: str = ""
    """The first held-back message, repeated in the summary line."""
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class RateLimitedLog:
    """``log.event(kind, msg, *args)``: logs the first of each ``kind`` per ``interval``.

    ``kind`` is what groups events: a refusal reason, or ``(reason, peer)`` where one line per
    peer is wanted. The message itself is formatted only when it is written.
    """

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        interval: float = 10.0,
        level: int = logging.WARNING,
        max_kinds: int = 256,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.level = level
        self.max_kinds = max_kinds
        self._kinds: dict[object, _Kind] = {}
        self.logged = 0
        self.suppressed = 0

    def event(self, kind: object, msg: str, *args: object) -> bool:
        """Record one event; return whether a line was written for it."""
        now = time.monotonic()
        state = self._kinds.get(kind)
        if state is None and len(self._kinds) >= self.max_kinds:
            kind = _OVERFLOW
            state = self._kinds.get(kind)
        if state is not None and now - state.first_at < self.interval:
            state.suppressed += 1
            self.suppressed += 1
            if not state.last_message:
                state.last_message = msg % args if args else msg
            if state.timer is None:
                state.timer = _call_later(self.interval - (now - state.first_at), self._flush, kind)
            return False
        if state is not None:  # its interval is over: write what it held back, then start anew
            if state.timer is not None:
                state.timer.cancel()
            self._flush(kind)
        self._kinds[kind] = _Kind(first_at=now)
        self.logged += 1
        self.logger.log(self.level, msg, *args)
        return True

    def _flush(self, kind: object) -> None:
        state = self._kinds.pop(kind, None)
        if state is None or not state.suppressed:
            return
        state.timer = None
        self.logged += 1
        self.logger.log(
            self.level, "%s (and %d more like this in the last %g s)", state.last_message, state.suppressed, self.interval
        )

    def close(self) -> None:
        """Write what is pending now (at shutdown) and drop every timer."""
        for kind in list(self._kinds):
            state = self._kinds[kind]
            if state.timer is not None:
                state.timer.cancel()
            self._flush(kind)
        self._kinds.clear()


def _call_later(delay: float, callback: Any, *args: object) -> asyncio.TimerHandle | None:
    try:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback, *args)
    except RuntimeError:  # no loop (a sync caller): the summary comes with the next event instead
        return None
