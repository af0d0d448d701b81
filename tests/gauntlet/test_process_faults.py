"""Edge SIGKILL/SIGSTOP mid-stream, cloud SIGKILL and restart, a link that resets or blackholes.

Every test: the streams that were cut end with an error (a broken chunked body), never a
clean end; what arrived before the cut has no gap; the other nodes' streams keep flowing; the
edges come back by themselves; cloudstream holds no stream, task or descriptor more than before.
"""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import MS
from tests.integration.framework import apiserver_tls
from tests.integration.k8s_ws import open_ws
from testkit.link import LinkProxy

from .conftest import NODES, Follow, Lab

pytestmark = [pytest.mark.gauntlet, pytest.mark.timeout(120)]


async def _follows(lab: Lab, nodes: list[str], lines: int = 20) -> dict[str, Follow]:
    follows = {n: Follow(n).start(lab.stream_port, lab.layout) for n in nodes}
    for f in follows.values():
        await f.wait_lines(lines)
    return follows


async def _finish(follows: dict[str, Follow]) -> None:
    for f in follows.values():
        assert f.task is not None
        f.task.cancel()
        await asyncio.gather(f.task, return_exceptions=True)


async def test_edge_sigkill_mid_follow_breaks_only_its_streams(lab: Lab) -> None:
    victim, bystander = NODES[0], NODES[1]
    for n in (victim, bystander):
        await lab.edge(n)
    baseline = await lab.state()
    follows = await _follows(lab, [victim, bystander])
    lab.edges[victim].proc.kill()
    error = await follows[victim].ended_with_error()
    assert "cut off" in str(error) or isinstance(error, ConnectionError), error
    before = follows[bystander].lines
    await follows[bystander].wait_lines(before + 20)  # unaffected, still in sequence
    await _finish(follows)
    await lab.assert_no_leak(baseline)


@pytest.mark.cloud_args("--ping-interval", "0.5", "--ping-timeout", "1.5")
async def test_edge_sigstop_is_found_by_keepalive_and_comes_back(lab: Lab) -> None:
    victim = NODES[0]
    await lab.edge(victim, "--ping-interval", "0.5", "--ping-timeout", "1.5")
    baseline = await lab.state()
    follows = await _follows(lab, [victim])
    since = len(lab.cloud.lines)  # type: ignore[union-attr]
    lab.edges[victim].proc.send_signal(signal.SIGSTOP)
    await follows[victim].ended_with_error(timeout=15)
    lab.edges[victim].proc.send_signal(signal.SIGCONT)
    await lab.wait_up(victim, since)  # it finds its tunnel dead and redials
    again = await _follows(lab, [victim])
    await _finish(again)
    await lab.assert_no_leak(baseline)


async def test_cloud_sigkill_and_restart_every_edge_returns(lab: Lab) -> None:
    for n in NODES:
        await lab.edge(n)
    follows = await _follows(lab, NODES)
    assert lab.cloud is not None
    lab.cloud.proc.kill()
    await lab.cloud.stop()
    for f in follows.values():
        await f.ended_with_error()
    await asyncio.sleep(1)
    await lab.start_cloud()
    for n in NODES:  # within the backoff cap (6 s) plus a handshake; 20 s leaves room for a loaded CI host
        await lab.wait_up(n, timeout=20)
    baseline = await lab.state()
    again = await _follows(lab, NODES)
    await _finish(again)
    await lab.assert_no_leak(baseline)


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
@pytest.mark.cloud_args("--ping-interval", "0.5", "--ping-timeout", "1.5")
async def test_a_link_that_resets_or_blackholes(lab: Lab, fault: str) -> None:
    """A userspace proxy between edge and cloud: RST every connection, or stop forwarding
    (sockets stay open, as a dead route does) until both sides' keepalives give up."""
    victim, bystander = NODES[0], NODES[1]
    async with LinkProxy(upstream=("127.0.0.1", lab.tunnel_port)) as link:
        await lab.edge(victim, "--ping-interval", "0.5", "--ping-timeout", "1.5", server_port=link.port)
        await lab.edge(bystander)
        baseline = await lab.state()
        follows = await _follows(lab, [victim, bystander])
        since = len(lab.cloud.lines)  # type: ignore[union-attr]
        if fault == "reset":
            assert link.reset_all() == 1
        else:
            link.blackhole()
        await follows[victim].ended_with_error()
        before = follows[bystander].lines
        await follows[bystander].wait_lines(before + 20)
        if fault == "blackhole":
            await asyncio.sleep(1 * MS)
            link.blackhole(False)
        await lab.wait_up(victim, since)
        again = await _follows(lab, [victim])
        await _finish(again)
        await _finish(follows)
        await lab.assert_no_leak(baseline)


@pytest.mark.parametrize("protocol", ["v5.channel.k8s.io", "v4.channel.k8s.io"])
async def test_exec_cut_by_edge_sigkill_gets_a_status_then_a_close(lab: Lab, protocol: str) -> None:
    """As the kubelet ends a failed exec: a Failure Status on channel 3 naming the node, then a
    normal close. Before, the client saw a bare TCP close and could not tell it from the end."""
    victim = NODES[0]
    await lab.edge(victim)
    baseline = await lab.state()
    ws = await open_ws(lab.stream_port, "/exec/default/demo/app?command=cat&input=1&output=1", node=victim,
                       tls=apiserver_tls(lab.layout), protocols=[protocol])
    status = None
    try:
        await ws.send(b"\x00hello")
        echoed = b""
        while echoed != b"hello":
            message = await asyncio.wait_for(ws.recv(), 10 * MS)
            assert isinstance(message, bytes) and message[:1] == b"\x01"
            echoed += message[1:]
        lab.edges[victim].proc.kill()
        async with asyncio.timeout(15 * MS):
            async for message in ws:
                assert isinstance(message, bytes)
                if message[:1] == b"\x03":
                    status = json.loads(message[1:])
    except ConnectionClosed:
        pass
    finally:
        await ws.close()
    assert status is not None, f"no Status on the error channel; the connection ended with {ws.close_code}"
    assert status["status"] == "Failure" and status["code"] == 500 and victim in status["message"], status
    assert ws.close_code == 1000
    await lab.assert_no_leak(baseline)


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "v5.channel.k8s.io", "v3.channel.k8s.io"])
async def test_spdy_exec_cut_by_edge_sigkill_gets_the_failure_on_its_error_stream(lab: Lab, protocol: str) -> None:
    """SPDY, as kube-apiserver speaks to a kubelet (kubectl <= 1.29, and the StreamTranslator of
    1.30+): the client-go-like SPDY client reads the kubelet's kind of failure on its error stream
    (v4+: a Status naming the node; v3: the text), stdout ends with FIN, then the connection
    closes. Before, the error stream saw a bare close (the translator reported nothing useful)."""
    from streamproto.aio.spdy import upgrade

    victim = NODES[0]
    await lab.edge(victim)
    baseline = await lab.state()
    reader, writer = await asyncio.open_connection("127.0.0.1", lab.stream_port, ssl=apiserver_tls(lab.layout),
                                                   server_hostname="localhost")
    runner = None
    try:
        answer = await upgrade(reader, writer, "/exec/default/demo/app?command=cat&input=1&output=1&error=1",
                               host=victim, protocols=[protocol])
        assert answer.status == 101 and answer.conn is not None, answer
        assert answer.header("X-Stream-Protocol-Version") == protocol
        conn = answer.conn
        runner = asyncio.create_task(conn.run())
        streams = {t: await conn.open_stream([("streamtype", t)]) for t in ("error", "stdin", "stdout", "stderr")}
        async with asyncio.timeout(10 * MS):
            for s in streams.values():
                await s.wait_reply()
            await streams["stdin"].write(b"hello")
            echoed = b""
            while echoed != b"hello":
                chunk = await streams["stdout"].read()
                assert chunk is not None, "stdout ended before the echo"
                echoed += chunk
        lab.edges[victim].proc.kill()
        async with asyncio.timeout(15 * MS):
            error = b""
            while (chunk := await streams["error"].read()) is not None:
                error += chunk
            assert await streams["stdout"].read() is None  # FIN, so client-go's copy loop ends
    finally:
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        writer.transport.abort()
    if protocol == "v3.channel.k8s.io":
        assert victim in error.decode() and b"tunnel closed" in error, error
    else:
        status = json.loads(error)
        assert status["status"] == "Failure" and status["code"] == 500 and victim in status["message"], status
    await lab.assert_no_leak(baseline)
