"""The misbehaviour budget: counted per window (pure), and a real tunnel closed when spent."""

from __future__ import annotations

import asyncio
import logging

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from streamproto.aio import RateLimitedLog, TunnelConnection
from streamproto.aio.connection import POLICY_VIOLATION
from streamproto.tunnel import Budget, ConfigError, Event, MessageType, Mux, Role, ViolationCounter, encode


def test_counter_closes_after_the_limit_within_a_window() -> None:
    counter = ViolationCounter(Budget(max_violations=3, window=10.0))
    assert [counter.spend(now) for now in (0.0, 1.0, 2.0)] == [False, False, False]
    assert counter.spend(3.0) is True and counter.in_window == 4


def test_counter_starts_a_new_window() -> None:
    counter = ViolationCounter(Budget(max_violations=2, window=1.0))
    assert not counter.spend(0.0) and not counter.spend(0.5)
    assert not counter.spend(1.0)  # a new window: 1 of 2
    assert not counter.spend(1.9) and counter.spend(1.95)
    assert counter.total == 5


def test_zero_tolerance_and_bad_budgets() -> None:
    assert ViolationCounter(Budget(max_violations=0)).spend(0.0) is True
    with pytest.raises(ConfigError):
        Budget(max_violations=-1)
    with pytest.raises(ConfigError):
        Budget(window=0)


class Recorder(TunnelConnection):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.events: list[Event] = []

    async def handle_event(self, event: Event) -> None:
        self.events.append(event)


async def _serve_one(  # type: ignore[no-untyped-def]
    budget: Budget, caplog: pytest.LogCaptureFixture, client_messages: list[bytes], expect_close: bool = True
):
    """A real WebSocket pair on loopback: the server side runs ``run_reader`` with ``budget``."""
    logger = logging.getLogger("t.budget")
    done: asyncio.Future[Recorder] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        tunnel = Recorder(ws, Mux(Role.CLOUD, next_id=iter(range(1, 99)).__next__), logger, budget=budget,
                          warnings=RateLimitedLog(logger, interval=60), peer="node edge-x")
        await tunnel.run_reader()
        done.set_result(tunnel)

    with caplog.at_level(logging.INFO, "t.budget"):
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
                for message in client_messages:
                    try:
                        await ws.send(message, text=True)
                    except ConnectionClosed:
                        break
                close = None
                try:
                    if not expect_close:
                        await ws.close()
                    async with asyncio.timeout(5):
                        await ws.recv()
                except ConnectionClosed as exc:
                    close = exc.rcvd
                except TimeoutError:
                    pass
            tunnel = await asyncio.wait_for(done, 5)
    return tunnel, close, [r.getMessage() for r in caplog.records if r.name == "t.budget"]


async def test_a_tunnel_over_budget_is_closed_with_a_reason_and_two_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    ignored = [encode(7, MessageType.DATA, b"late"), encode(7, MessageType.REMOVE_CONNECT)] * 50
    tunnel, close, lines = await _serve_one(Budget(max_violations=5, window=60), caplog, ignored + [b"\xff"] * 200)
    assert close is not None and close.code == POLICY_VIOLATION, close
    assert "6 malformed tunnel messages within 60 s" in close.reason
    assert tunnel.over_budget and tunnel.violations.total == 6
    assert tunnel.messages_ignored == 100  # counted, never logged
    assert "closed by us (code 1008)" in (tunnel.closed_reason or "")
    assert len(lines) == 2, lines
    assert lines[0].startswith("! node edge-x sent a malformed tunnel message, dropped:")
    assert lines[1].startswith("! closing the tunnel of node edge-x: 6 malformed tunnel messages within 60 s")


async def test_under_budget_the_tunnel_lives_and_warnings_are_aggregated(caplog: pytest.LogCaptureFixture) -> None:
    tunnel, close, lines = await _serve_one(Budget(max_violations=50, window=60), caplog, [b"\xff", b""] * 20, expect_close=False)
    assert close is not None and close.code == 1000  # the client's own close, echoed: the tunnel lived
    assert not tunnel.over_budget and tunnel.violations.total == 40
    assert len(lines) == 1, lines  # the other 39 wait for the summary line at the end of the interval
