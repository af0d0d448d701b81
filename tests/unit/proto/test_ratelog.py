"""RateLimitedLog: one line per kind per interval, a summary with the count, bounded kinds."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streamproto.aio.ratelog import RateLimitedLog


async def test_first_logged_rest_summarised(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("t.rl"), interval=0.2)
    with caplog.at_level(logging.WARNING, "t.rl"):
        results = [log.event("bad-frame", "! dropped a malformed message from %s", "edge-9") for _ in range(10_000)]
        assert results.count(True) == 1
        assert len(caplog.records) == 1
        await asyncio.sleep(0.35)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "! dropped a malformed message from edge-9",
        "! dropped a malformed message from edge-9 (and 9999 more like this in the last 0.2 s)",
    ]
    assert log.suppressed == 9999 and log.logged == 2


async def test_kinds_are_separate_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("t.rl2"), interval=60, max_kinds=4)
    with caplog.at_level(logging.WARNING, "t.rl2"):
        for i in range(1000):
            log.event(("refused", i), "refused peer %d", i)
        assert len(caplog.records) == 5  # four kinds, then one line for every other kind
        assert len(log._kinds) == 5
        log.close()
    assert "(and 995 more like this" in caplog.records[-1].getMessage()
    assert not log._kinds


def test_without_a_loop_the_summary_comes_with_the_next_event(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("t.rl3"), interval=0.0)
    with caplog.at_level(logging.WARNING, "t.rl3"):
        log.interval = 10
        log.event("k", "first")
        log.event("k", "second")
        log.interval = 0.0
        log.event("k", "third")
    assert [r.getMessage() for r in caplog.records] == ["first", "second (and 1 more like this in the last 0 s)", "third"]
