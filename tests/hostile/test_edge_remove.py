"""A real edgestream process (at DEBUG) facing a Go-cloud-like peer that does what a Go
cloudcore does after an exec's client leaves: REMOVE_CONNECT in a tight loop until the edge's own
REMOVE_CONNECT arrives, then (as late copies still in flight) tens of thousands more. The edge
answers once, counts the repeats instead of logging each, and keeps serving; its descriptors
come back to where they were.

Before the fix the edge answered only after the backend was torn down, and at DEBUG wrote one
line per repeat (82,000 per close with a real Go cloud).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import pytest

from streamproto.tunnel import MessageType, encode
from tests.conftest import MS
from tests.integration.framework import start_edge
from tests.integration.test_go_cloud_interop import Watcher, go_cloud, go_remove_loop, recv_message  # noqa: F401

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(120)]

REPEATS = 50_000


def ws_exec(cid: int) -> bytes:
    """An exec as a Go cloud forwards kubectl's WebSocket (v4) upgrade to the emulated container."""
    obj = {
        "MessID": cid,
        "url": {"Scheme": "http", "Host": "127.0.0.1:10350", "Path": "/exec/default/demo/app",
                "RawQuery": "command=sh&input=1&output=1"},
        "header": {"Connection": ["Upgrade"], "Upgrade": ["websocket"],
                   "Sec-Websocket-Key": [base64.b64encode(os.urandom(16)).decode()],
                   "Sec-Websocket-Version": ["13"], "Sec-Websocket-Protocol": ["v4.channel.k8s.io"]},
        "method": "GET",
    }
    return encode(cid, MessageType.EXEC_CONNECT, json.dumps(obj).encode())


async def test_a_go_remove_storm_is_answered_once_and_counted_not_logged(go_cloud, lab_pki) -> None:  # noqa: F811
    cloud, port = go_cloud
    edge = await start_edge(lab_pki, "edge-1", port, "--log-level", "DEBUG")
    try:
        ws = await asyncio.wait_for(cloud.connections.get(), 20 * MS)
        await edge.wait_for_line("tunnel up")
        await asyncio.sleep(0.2)
        baseline_fds = len(os.listdir(f"/proc/{edge.proc.pid}/fd"))
        for cid in (41, 42, 43):
            watcher = Watcher(ws, cid)
            reader = asyncio.create_task(watcher.run())
            await ws.send(ws_exec(cid), text=True)
            async with asyncio.timeout(10 * MS):
                while b"101 Switching Protocols" not in watcher.data:
                    await asyncio.sleep(0.01)
            lines_before = len(edge.lines)
            sent = await asyncio.wait_for(go_remove_loop(ws, cid, watcher.answered), 10 * MS)
            remove = encode(cid, MessageType.REMOVE_CONNECT)
            for _ in range(REPEATS // 500):  # the copies a Go cloud had in flight, and more
                for _ in range(500):
                    ws.protocol.send_text(remove)
                ws.send_data()
                await asyncio.sleep(0)
            pong = await ws.ping()  # the pong means the edge read every one of them
            await asyncio.wait_for(pong, 10 * MS)
            await asyncio.sleep(0.2)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            assert watcher.removes == 1, f"stream {cid}: {watcher.removes} REMOVE_CONNECTs from the edge"
            noise = [line for line in edge.lines[lines_before:] if f" {cid}" in line or "REMOVE" in line]
            assert len(noise) <= 5, f"{sent + REPEATS} repeats logged line by line: {noise[:10]}"

        # the edge still serves, at once
        connect = {"MessID": 44, "url": {"Scheme": "http", "Host": "127.0.0.1:10350",
                   "Path": "/containerLogs/default/demo/app", "RawQuery": "tailLines=1"}, "header": None}
        began = time.monotonic()
        await ws.send(encode(44, MessageType.LOGS_CONNECT, json.dumps(connect).encode()), text=True)
        while True:
            message, _ = await recv_message(ws, 10 * MS)
            if message.connect_id == 44 and message.kind == MessageType.REMOVE_CONNECT:
                break
        assert time.monotonic() - began < 5 * MS

        deadline = time.monotonic() + 10 * MS
        while len(os.listdir(f"/proc/{edge.proc.pid}/fd")) > baseline_fds and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(os.listdir(f"/proc/{edge.proc.pid}/fd")) <= baseline_fds, "descriptors leaked in edgestream"
    finally:
        await edge.stop()
    # at the end of the tunnel, one line with the count
    summary = [line for line in edge.lines if "REMOVE_CONNECTs for streams already closed" in line]
    assert len(summary) == 1 and "ignored" in summary[0], edge.output
    assert int(summary[0].split("ignored ")[1].split()[0]) >= 3 * REPEATS
    assert not [line for line in edge.lines if "Traceback" in line], edge.output
