"""StopEvent: an asyncio.Event whose set() also runs callbacks, once each, removable."""

from __future__ import annotations

import asyncio

from edgestream.stop import StopEvent, on_set


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


async def test_on_set_serves_a_plain_event_too_and_leaves_no_task() -> None:
    calls: list[str] = []
    before = set(asyncio.all_tasks())
    plain = asyncio.Event()
    on_set(plain, lambda: calls.append("plain"))
    remove = on_set(plain, lambda: calls.append("removed"))
    remove()
    plain.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == ["plain"] and set(asyncio.all_tasks()) == before
    on_set(plain, lambda: calls.append("late"))  # already set: at once
    stop = StopEvent()
    on_set(stop, lambda: calls.append("stop"))  # a StopEvent: its callback list, no task
    assert set(asyncio.all_tasks()) == before
    stop.set()
    assert calls == ["plain", "late", "stop"]
