"""The kubelet backend's response reader: MB/s of a chunked ``logs`` body from a fake kubelet
on loopback (``--chunk`` bytes per HTTP chunk, as fast as it can write).

    python -m bench.kubelet_logs [--mb 20] [--chunk 100]            # end to end: 10003 -> tunnel -> edge
    python -m bench.kubelet_logs --in-process [--mb 200]            # KubeletBackend alone, no tunnel

End to end runs real cloudstream and edgestream processes (``--backend kubelet``). Run it from
two checkouts (``cd /tmp/base && PYTHONPATH=$PWD python -m bench.kubelet_logs``) to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from edgestream.backends.kubelet import KubeletBackend
from edgestream.config import EdgeConfig
from streamproto.tunnel import ConnectRequest, MessageType


class CountingStream:
    kind = MessageType.LOGS_CONNECT
    connect_id = 1

    def __init__(self) -> None:
        self.request = ConnectRequest(connect_id=1, path="/containerLogs/default/web/app", raw_query="follow=true")
        self.received = 0
        self.messages = 0
        self.answered = False

    async def answer(self, code: int = 200, message: str = "") -> None:
        assert code == 200, message
        self.answered = True

    async def send(self, data: bytes) -> None:
        self.received += len(data)
        self.messages += 1


async def main_async(mb: int, chunk: int, in_process: bool) -> None:
    piece = b"%x\r\n" % chunk + b"x" * chunk + b"\r\n"
    count = mb * 1_000_000 // chunk

    async def kubelet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        batch = piece * 16
        for _ in range(count // 16):
            writer.write(batch)
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(kubelet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    if not in_process:
        await end_to_end(port, chunk)
        server.close()
        return
    backend = KubeletBackend(EdgeConfig(kubelet_address=f"127.0.0.1:{port}"))
    stream = CountingStream()
    began = time.perf_counter()
    await backend.serve(stream)  # type: ignore[arg-type]
    took = time.perf_counter() - began
    server.close()
    print(f"{stream.received / took / 1e6:.0f} MB/s ({stream.received / 1e6:.0f} MB in {took:.2f} s, "
          f"{stream.messages} sends, {chunk} B chunks)")


async def end_to_end(kubelet_port: int, chunk: int) -> None:
    from streamcerts import init_lab
    from testkit.processes import apiserver_tls, kubelet_request, start_cloud, start_edge

    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp), ["bench-node"])
        cloud, stream_port, tunnel_port = await start_cloud(layout)
        edge = await start_edge(layout, "bench-node", tunnel_port, "--backend", "kubelet",
                                "--kubelet-address", f"127.0.0.1:{kubelet_port}")
        try:
            await cloud.wait_for_line("tunnel up: node bench-node")
            began, moved = time.perf_counter(), 0
            async with kubelet_request(stream_port, "/containerLogs/default/web/app", host="bench-node",
                                       tls=apiserver_tls(layout)) as response:
                async for data in response.chunks():
                    moved += len(data)
            took = time.perf_counter() - began
            print(f"{moved / took / 1e6:.1f} MB/s end to end ({moved / 1e6:.0f} MB in {took:.2f} s, {chunk} B chunks)")
        finally:
            await edge.stop()
            await cloud.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--in-process", action="store_true", help="the backend alone, bytes counted, no tunnel")
    ns = parser.parse_args(argv)
    asyncio.run(main_async(ns.mb, ns.chunk, ns.in_process))
    return 0


if __name__ == "__main__":
    sys.exit(main())
