"""Issue 4 through the whole chain: cloudstream:10003 -> tunnel -> edgestream (CRI backend) ->
a real containerd, driven over real WebSocket v4 clients and raw SPDY upgrade heads.
(The real kubectl binaries drive the same chain in tests/kubectl.)"""

from __future__ import annotations

import asyncio
import json
import re
import time
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from websockets.exceptions import InvalidStatus

from tests.conftest import MS, free_port


from .framework import apiserver_tls, kubelet_request, start_cloud, start_edge
from .k8s_ws import open_ws, run_exec

pytestmark = [
    pytest.mark.containerd,
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.asyncio(loop_scope="module"),
]

NODE = "edge-1"
LOOP = "i=0; while true; do echo line $i; echo err $i >&2; i=$((i+1)); sleep 0.1; done"
POD_PORT = free_port()  # host-network pods share the machine's ports
SERVER = f'while true; do echo "hello-from-pod" | nc -l -p {POD_PORT}; done'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(realstack, lab_pki):
    pytest.importorskip("edgestream.backends.cri")
    pod = realstack.run_pod("web", uid="uid-web-1")
    loop_id = realstack.run_container(pod, "loop", ["sh", "-c", LOOP])
    realstack.run_container(pod, "server", ["sh", "-c", SERVER])
    realstack.wait_running(loop_id)
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, NODE, tunnel_port, "--backend", "cri", "--cri-endpoint", realstack.endpoint)
    try:
        await asyncio.sleep(0.5)
        deadline = time.monotonic() + 20
        while True:
            async with kubelet_request(stream_port, "/containerLogs/default/web/loop?tailLines=1", host=NODE, tls=apiserver_tls(lab_pki)) as resp:
                body = await resp.body()
                if resp.status == 200 and body:
                    break
            assert time.monotonic() < deadline, f"chain never became ready: {resp.status} {body!r}\n{edge.output}"
            await asyncio.sleep(0.2)
        yield realstack, pod, stream_port
    finally:
        await edge.stop()
        await cloud.stop()
        realstack.remove_pod(pod)


def q(*command: str, **flags: str) -> str:
    return urlencode([("command", c) for c in command] + sorted(flags.items()))


async def test_logs_tail_follow_and_stream_selection(chain, lab_pki) -> None:
    _, _, port = chain
    tls = apiserver_tls(lab_pki)
    async with kubelet_request(port, "/containerLogs/default/web/loop?tailLines=4", host=NODE, tls=tls) as resp:
        assert resp.status == 200
        lines = (await resp.body()).splitlines()
    assert len(lines) == 4 and all(re.match(rb"^(line|err) \d+$", line) for line in lines)
    async with kubelet_request(port, "/containerLogs/default/web/loop?tailLines=3&stream=Stderr", host=NODE, tls=tls) as resp:
        assert [line.split()[0] for line in (await resp.body()).splitlines()] == [b"err"] * 3
    got = b""
    async with kubelet_request(port, "/containerLogs/default/web/loop?follow=true&tailLines=0&timestamps=true", host=NODE, tls=tls) as resp:
        async with asyncio.timeout(10 * MS):
            async for chunk in resp.chunks():
                got += chunk
                if got.count(b"\n") >= 6:
                    break
    assert re.match(rb"^\d{4}-\d\d-\d\dT[\d:.]+Z (line|err) \d+$", got.splitlines()[0])


async def test_logs_errors_name_the_cause(chain, lab_pki) -> None:
    _, _, port = chain
    tls = apiserver_tls(lab_pki)
    async with kubelet_request(port, "/containerLogs/default/nosuch/loop", host=NODE, tls=tls) as resp:
        assert resp.status == 404 and b"nosuch" in await resp.body()
    async with kubelet_request(port, "/containerLogs/default/web/nosuch", host=NODE, tls=tls) as resp:
        assert resp.status == 404
        text = await resp.body()
        assert b"nosuch" in text and b"loop" in text  # names the containers that exist


async def test_exec_over_websocket_v4(chain, lab_pki) -> None:
    _, _, port = chain
    tls = apiserver_tls(lab_pki)
    ws = await open_ws(port, "/exec/default/web/loop?" + q("sh", "-c", "echo out; echo err >&2; exit 3", output="1", error="1"),
                       node=NODE, tls=tls, protocols=["v4.channel.k8s.io"])
    result = await run_exec(ws)
    assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 3)
    ws = await open_ws(port, "/exec/default/web/loop?" + q("sh", "-c", "head -n1; echo done", input="1", output="1"),
                       node=NODE, tls=tls, protocols=["v4.channel.k8s.io"])
    result = await run_exec(ws, stdin=[b"piped-line\n"], close_stdin=False)
    assert result.stdout == b"piped-line\ndone\n" and result.exit_code == 0


async def test_exec_tty_resize(chain, lab_pki) -> None:
    _, _, port = chain
    ws = await open_ws(port, "/exec/default/web/loop?" + q("sh", input="1", output="1", tty="1"), node=NODE,
                       tls=apiserver_tls(lab_pki), protocols=["v4.channel.k8s.io"])
    result = await run_exec(ws, stdin=[b"stty size\r", b"echo rt-$((6*7))\r", b"exit 7\r"], resize=(30, 100),
                            close_stdin=False, until=b"")
    assert b"30 100" in result.stdout and b"rt-42" in result.stdout and result.exit_code == 7


async def test_v5_refusal_is_relayed_and_each_attempt_gets_a_fresh_url(chain, lab_pki) -> None:
    """containerd 1.6 answers 403 to v5.channel.k8s.io; kubectl then retries with another
    protocol on a new request, which needs a new single-use CRI URL: two in a row must work."""
    _, _, port = chain
    tls = apiserver_tls(lab_pki)
    with pytest.raises(InvalidStatus) as info:
        await open_ws(port, "/exec/default/web/loop?" + q("echo", "hi", output="1"), node=NODE, tls=tls,
                      protocols=["v5.channel.k8s.io"])
    assert info.value.response.status_code == 403
    for _ in range(2):
        ws = await open_ws(port, "/exec/default/web/loop?" + q("echo", "hi", output="1"), node=NODE, tls=tls,
                           protocols=["v4.channel.k8s.io"])
        assert (await run_exec(ws)).stdout == b"hi\n"


async def test_spdy_upgrade_gets_containerds_101(chain, lab_pki) -> None:
    _, _, port = chain
    async with kubelet_request(
        port, "/exec/default/web/loop?" + q("echo", "hi", error="1", output="1"), host=NODE, tls=apiserver_tls(lab_pki),
        method="POST",
        headers={"Content-Length": "0", "Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                 "X-Stream-Protocol-Version": "v4.channel.k8s.io"},
    ) as resp:
        assert resp.status == 101
        assert resp.headers["upgrade"].lower() == "spdy/3.1"
        assert resp.headers["x-stream-protocol-version"] == "v4.channel.k8s.io"


async def test_attach_streams_the_running_output(chain, lab_pki) -> None:
    _, _, port = chain
    ws = await open_ws(port, "/attach/default/web/loop?output=1&error=1", node=NODE, tls=apiserver_tls(lab_pki),
                       protocols=["v4.channel.k8s.io"])
    seen = {1: b"", 2: b""}
    async with asyncio.timeout(10 * MS):
        while seen[1].count(b"\n") < 3 or seen[2].count(b"\n") < 3:
            message = await ws.recv()
            if message[:1] in (b"\x01", b"\x02"):
                seen[message[0]] += message[1:]
    await ws.close()
    assert re.search(rb"line \d+\n", seen[1]) and re.search(rb"err \d+\n", seen[2])


async def test_port_forward_to_a_process_in_the_pod(chain, lab_pki) -> None:
    _, _, port = chain
    ws = await open_ws(port, f"/portForward/default/web?port={POD_PORT}", node=NODE, tls=apiserver_tls(lab_pki),
                       protocols=["v4.channel.k8s.io"])
    await ws.send(b"\x00GET / HTTP/1.0\r\n\r\n")
    data = b""
    async with asyncio.timeout(10 * MS):
        while b"hello-from-pod" not in data:
            message = await ws.recv()
            if message[:1] == b"\x00":
                data += message[1:]
    await ws.close()


async def test_stats_summary_from_cri(chain, lab_pki) -> None:
    _, _, port = chain
    async with kubelet_request(port, "/stats/summary", host=NODE, tls=apiserver_tls(lab_pki)) as resp:
        assert resp.status == 200
        summary = json.loads(await resp.body())
    pods = {p["podRef"]["name"]: p for p in summary["pods"]}
    assert "web" in pods and pods["web"]["podRef"]["uid"] == "uid-web-1"
    names = {c["name"] for c in pods["web"]["containers"]}
    assert {"loop", "server"} <= names


async def test_log_options_through_the_chain(chain, lab_pki) -> None:
    from datetime import datetime, timedelta, timezone

    _, _, port = chain
    tls = apiserver_tls(lab_pki)
    async with kubelet_request(port, "/containerLogs/default/web/loop?limitBytes=10", host=NODE, tls=tls) as resp:
        assert len(await resp.body()) == 10
    async with kubelet_request(port, "/containerLogs/default/web/loop?sinceSeconds=1&timestamps=true", host=NODE, tls=tls) as resp:
        recent = (await resp.body()).splitlines()
    async with kubelet_request(port, "/containerLogs/default/web/loop", host=NODE, tls=tls) as resp:
        everything = (await resp.body()).splitlines()
    assert 0 < len(recent) < len(everything)
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=0.6)
    since = cutoff.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    async with kubelet_request(port, f"/containerLogs/default/web/loop?timestamps=true&sinceTime={since}", host=NODE, tls=tls) as resp:
        lines = (await resp.body()).splitlines()
    stamps = [datetime.fromisoformat(line.split()[0][:26].decode() + "+00:00") for line in lines]
    assert lines and all(s >= cutoff - timedelta(seconds=1) for s in stamps)  # kubelet's second granularity


async def test_previous_instance_after_a_restart(chain, lab_pki) -> None:
    stack, pod, port = chain
    first = stack.run_container(pod, "job", ["sh", "-c", "echo first-run"], attempt=0)
    for _ in range(100):
        if stack.container_status(first).state == 2:  # CONTAINER_EXITED
            break
        await asyncio.sleep(0.05)
    stack.run_container(pod, "job", ["sh", "-c", "echo second-run; sleep 3600"], attempt=1)
    tls = apiserver_tls(lab_pki)
    await asyncio.sleep(0.3)
    async with kubelet_request(port, "/containerLogs/default/web/job?previous=true", host=NODE, tls=tls) as resp:
        assert resp.status == 200 and await resp.body() == b"first-run\n"
    async with kubelet_request(port, "/containerLogs/default/web/job", host=NODE, tls=tls) as resp:
        assert await resp.body() == b"second-run\n"


async def test_follow_survives_log_rotation(chain, lab_pki) -> None:
    """What kubelet's log rotation does: rename the file, ask containerd to reopen
    (ReopenContainerLog). A `logs -f` keeps going on the new file without a gap."""
    import os

    from streamproto.cri.v1 import api_pb2

    stack, pod, port = chain
    cid = next(c.id for c in stack.list_containers(pod) if c.metadata.name == "loop")
    path = stack.container_status(cid).log_path
    got = b""
    async with kubelet_request(port, "/containerLogs/default/web/loop?follow=true&tailLines=1&stream=Stdout", host=NODE,
                               tls=apiserver_tls(lab_pki)) as resp:
        chunks = resp.chunks()
        async with asyncio.timeout(20 * MS):
            while got.count(b"\n") < 5:
                got += await chunks.__anext__()
            os.rename(path, path + ".1")
            stack.runtime.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=cid), timeout=10)
            mark = got.count(b"\n")
            while got.count(b"\n") < mark + 15:
                got += await chunks.__anext__()
    numbers = [int(line.split()[1]) for line in got.splitlines()]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    assert os.path.exists(path)  # containerd writes a new file at the same path
