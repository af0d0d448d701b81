"""StopEvent: an asyncio.Event whose set() also runs callbacks, once each, removable."""

from __future__ import annotations

import asyncio

from edgestream.stop import StopEvent


async def test_callbacks_run_once_on_set_and_the_event_still_wakes_waiters() -> None:
    stop, calls = StopEvent(), []
    stop.on_set(lambda: calls.append("a"))
    remove = stop.on_set(lambda: calls.append("b"))
    remove()
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.sleep(0)
    stop.set()
    stop.set()
    assert await waiter is True and calls == ["a"]
    stop.on_set(lambda: calls.append("late"))  # already set: at once
    assert calls == ["a", "late"]
