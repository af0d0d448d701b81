"""An ``asyncio.Event`` that also calls callbacks when set: a stop signal nobody polls.

``run_tunnel`` given one serves the tunnel inside its caller's task: setting the event
closes the tunnel from the callback, where otherwise a task per tunnel would sit in
``stop.wait()`` (``edgestream emulate``: 1,000 nodes, 1,000 sleeping tasks, more with
their helpers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["StopEvent"]


class StopEvent(asyncio.Event):
    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Callable[[], None]] = []

    def set(self) -> None:
        if self.is_set():
            return
        super().set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_set(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` once when set (at once if already set); returns its remover."""
        if self.is_set():
            callback()
            return lambda: None
        self._callbacks.append(callback)

        def remove() -> None:
            try:
                self._callbacks.remove(callback)
            except ValueError:
                pass

        return remove
