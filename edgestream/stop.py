"""An ``asyncio.Event`` that also calls callbacks when set: a stop signal nobody polls.

The tunnel loop reacts to ``stop`` and ``drain`` through ``on_set``: setting the event
closes the tunnels and wakes the supervisor from the callback, where otherwise a task per
tunnel would sit in ``stop.wait()`` (``edgestream emulate``: 1,000 nodes, 1,000 sleeping
tasks, more with their helpers). A plain ``asyncio.Event`` still works (``on_set`` below
then watches it with a task).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["StopEvent", "on_set"]


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


def on_set(event: asyncio.Event, callback: Callable[[], None]) -> Callable[[], None]:
    """``StopEvent.on_set`` for any event: a plain ``asyncio.Event`` costs a waiting task."""
    if isinstance(event, StopEvent):
        return event.on_set(callback)
    if event.is_set():
        callback()
        return lambda: None
    waiter = asyncio.ensure_future(event.wait())
    waiter.add_done_callback(lambda w: None if w.cancelled() else callback())

    def remove() -> None:
        waiter.cancel()

    return remove
