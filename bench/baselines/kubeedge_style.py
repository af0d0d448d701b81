"""A KubeEdge-style cloud and edge: what Go KubeEdge's stream does, written here.

    python -m bench.baselines.kubeedge_style cloud --pki DIR
    python -m bench.baselines.kubeedge_style edge  --pki DIR --server localhost:PORT --node NODE

Per the spec (/work/shared/spec/kubeedge-tunnel.md §3, §5): the edge dials
``/v1/kubeedge/connect`` with Go's headers, answers ``LOGS_CONNECT`` by reading the log in
256-byte pieces and sending one TEXT WebSocket message per piece (a write each); the cloud has
one read loop per tunnel that writes and flushes each DATA payload to the API server's
connection as one HTTP chunk before it reads the next message. The edge also speaks to our
cloudstream (it is the "Go edge" of the 256-byte scenario); the cloud prints the same ready
line as cloudstream (``kubelet API on ..., tunnel on ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import sys
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from streamcerts import Layout, client_context, server_context
from streamproto.tunnel import MessageType, decode, encode

from .common import LINE_SIZE, log_block, parse_hostport, ready, run

PIECE = 256
"""Go's edge reads the response body with a 256-byte buffer and sends each read."""


def connect_json(cid: int, path: str, query: str) -> bytes:
    url = {"Scheme": "http", "Opaque": "", "User": None, "Host": "127.0.0.1:10350", "Path": path, "RawPath": "",
           "OmitHost": False, "ForceQuery": False, "RawQuery": query, "Fragment": "", "RawFragment": ""}
    return json.dumps({"MessID": cid, "url": url, "header": {}}, separators=(",", ":")).encode()


class Cloud:
    def __init__(self) -> None:
        self.sessions: dict[str, ServerConnection] = {}
        self.streams: dict[int, asyncio.StreamWriter] = {}
        self.ended: dict[int, asyncio.Event] = {}
        self.by_edge: set[int] = set()
        self.ids = itertools.count(1)

    async def tunnel(self, ws: ServerConnection) -> None:
        node = ws.request.headers.get("SessionHostNameOverride", "") if ws.request else ""
        self.sessions[node] = ws
        print(f"tunnel up: node {node}", flush=True)
        try:
            async for message in ws:  # one read loop: a slow API-server client blocks the tunnel, as in Go
                m = decode(message if isinstance(message, bytes) else message.encode())
                writer = self.streams.get(m.connect_id)
                if writer is None:
                    continue
                if m.kind == MessageType.DATA:
                    try:
                        writer.write(b"%x\r\n" % len(m.data) + bytes(m.data) + b"\r\n")
                        await writer.drain()  # one flush per message
                    except (ConnectionError, RuntimeError):
                        self.end(m.connect_id)
                elif m.kind == MessageType.REMOVE_CONNECT:
                    self.end(m.connect_id, by_edge=True)
        except ConnectionClosed:
            pass
        finally:
            if self.sessions.get(node) is ws:
                del self.sessions[node]

    def end(self, cid: int, by_edge: bool = False) -> None:
        if (writer := self.streams.pop(cid, None)) is not None:
            if by_edge:
                self.by_edge.add(cid)
                if not writer.is_closing():
                    writer.write(b"0\r\n\r\n")
            self.ended[cid].set()

    async def api(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            host = next((h.split(":", 1)[1].strip() for h in lines[1:] if h.lower().startswith("host:")), "")
            ws = self.sessions.get(host.rsplit(":", 1)[0] if host.count(":") == 1 else host)
            if ws is None or not target.startswith("/containerLogs/"):
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                return
            path, _, query = target.partition("?")
            cid = next(self.ids)
            self.streams[cid] = writer
            self.ended[cid] = asyncio.Event()
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            await ws.send(encode(cid, MessageType.LOGS_CONNECT, connect_json(cid, path, query)), text=True)
            gone = asyncio.ensure_future(reader.read(1))
            done = asyncio.ensure_future(self.ended[cid].wait())
            await asyncio.wait([gone, done], return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            done.cancel()
            self.streams.pop(cid, None)
            if cid not in self.by_edge:  # the client left (or its write failed): tell the edge, once
                try:
                    await ws.send(encode(cid, MessageType.REMOVE_CONNECT), text=True)
                except ConnectionClosed:
                    pass
            del self.ended[cid]
            self.by_edge.discard(cid)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, IndexError):
            pass
        finally:
            writer.transport.abort()


async def cloud(layout: Layout) -> None:
    state = Cloud()
    tunnel_tls = server_context(layout.server_cert, layout.server_key, layout.ca_cert, alpn=None)
    api_tls = server_context(layout.stream_cert, layout.stream_key, layout.stream_ca)
    api = await asyncio.start_server(state.api, "127.0.0.1", 0, ssl=api_tls)
    async with serve(state.tunnel, "127.0.0.1", 0, ssl=tunnel_tls, compression=None, max_size=2 << 20,
                     ping_interval=None) as tunnel:
        api_port = api.sockets[0].getsockname()[1]
        tunnel_port = next(iter(tunnel.sockets)).getsockname()[1]
        ready(f"kubelet API on 127.0.0.1:{api_port}, tunnel on 127.0.0.1:{tunnel_port}")
        await tunnel.serve_forever()


async def send_logs(ws, cid: int, block: bytes) -> None:  # type: ignore[no-untyped-def]
    view = memoryview(block)
    header = encode(cid, MessageType.DATA)
    try:
        while True:
            for pos in range(0, len(view), PIECE):
                await ws.send(header + view[pos:pos + PIECE], text=True)  # one message, one write
                if pos % (64 * PIECE) == 0:
                    await asyncio.sleep(0)  # send() need not yield: let REMOVE_CONNECT in
    except ConnectionClosed:
        pass


async def edge(server: str, node: str, layout: Layout, line_size: int) -> None:
    tls = client_context(layout.ca_cert, layout.edge_cert(node), layout.edge_key(node))
    tls.check_hostname = False
    host, port = parse_hostport(server)
    block = log_block(line_size)
    tasks: dict[int, asyncio.Task[None]] = {}
    async with connect(
        f"wss://{host}:{port}/v1/kubeedge/connect", ssl=tls, server_hostname="localhost",
        additional_headers={"SessionHostNameOverride": node, "SessionInternalIP": "127.0.0.1"},
        user_agent_header="Go-http-client/1.1", compression=None, origin=None, ping_interval=None,
        max_size=2 << 20,
    ) as ws:
        ready(f"edge connected as {node}")
        try:
            async for message in ws:
                m = decode(message if isinstance(message, bytes) else message.encode())
                if m.kind == MessageType.LOGS_CONNECT:
                    tasks[m.connect_id] = asyncio.create_task(send_logs(ws, m.connect_id, block))
                elif m.kind == MessageType.REMOVE_CONNECT and (task := tasks.pop(m.connect_id, None)):
                    task.cancel()
        except ConnectionClosed:
            pass
        finally:
            for task in tasks.values():
                task.cancel()


async def edge_frames(server: str, node: str, layout: Layout, line_size: int) -> None:
    """``--feed frames``: the same 256-byte messages, as masked TEXT frames built once and written
    in blocks, so the feeder costs next to nothing per message and only the cloud is measured."""
    tls = client_context(layout.ca_cert, layout.edge_cert(node), layout.edge_key(node))
    tls.check_hostname = False
    host, port = parse_hostport(server)
    reader, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /v1/kubeedge/connect HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: Go-http-client/1.1\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sessionhostnameoverride: {node}\r\nSessioninternalip: 127.0.0.1\r\nUpgrade: websocket\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise SystemExit(f"tunnel refused: {head[:200]!r}")
    ready(f"edge connected as {node}")
    block = log_block(line_size)
    tasks: dict[int, asyncio.Task[None]] = {}

    async def feed(cid: int) -> None:
        header = bytes((0x81, 0x80 | 126)) + (len(encode(cid, MessageType.DATA)) + PIECE).to_bytes(2, "big") + bytes(4)
        frames = b"".join(header + encode(cid, MessageType.DATA, block[p:p + PIECE]) for p in range(0, len(block), PIECE))
        while True:
            writer.write(frames)  # a zero mask key: the payload goes as is
            await writer.drain()

    try:
        while True:  # the cloud's frames: unmasked, unfragmented
            b0, b1 = await reader.readexactly(2)
            size = b1 & 0x7F
            if size == 126:
                size = int.from_bytes(await reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await reader.readexactly(8), "big")
            payload = await reader.readexactly(size)
            opcode = b0 & 0x0F
            if opcode == 8:
                break
            if opcode == 9:
                writer.write(bytes((0x8A, 0x80 | size)) + bytes(4) + payload)
            elif opcode in (1, 2):
                m = decode(payload)
                if m.kind == MessageType.LOGS_CONNECT:
                    tasks[m.connect_id] = asyncio.create_task(feed(m.connect_id))
                elif m.kind == MessageType.REMOVE_CONNECT and (task := tasks.pop(m.connect_id, None)):
                    task.cancel()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        for task in tasks.values():
            task.cancel()
        writer.transport.abort()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["cloud", "edge"])
    parser.add_argument("--pki", type=Path, required=True)
    parser.add_argument("--server", help="edge: the tunnel's host:port")
    parser.add_argument("--node", default="bench-node")
    parser.add_argument("--line-size", type=int, default=LINE_SIZE)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--feed", choices=["messages", "frames"], default="messages",
                        help="edge: one websockets send per message (as Go), or pre-built frames (a cheap feeder)")
    ns = parser.parse_args(argv)
    layout = Layout(ns.pki)
    if ns.role == "cloud":
        run(cloud(layout), ns.loop)
    else:
        run((edge if ns.feed == "messages" else edge_frames)(ns.server, ns.node, layout, ns.line_size), ns.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
