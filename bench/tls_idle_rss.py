"""Where an idle tunnel's bytes go: RSS per idle mTLS connection of a bare server, by layer.

    python -m bench.tls_idle_rss [--conns 2000] [--rounds 1]

A server process holds N idle mTLS connections (the tunnel's certificates) and reports its
RSS growth over N, for: the stdlib loop and uvloop; a bare ``asyncio.Protocol`` and a
websockets ``ServerConnection`` (what 10004 builds). Each connection says one small message
first, as a tunnel does (the WebSocket upgrade, or 200 bytes for the bare protocol).
The client is this process (its own memory is not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource

import sys
import tempfile
from pathlib import Path
from typing import Any

from streamcerts import client_context, init_lab

SERVER = r"""
import asyncio, os, sys, gc
from pathlib import Path
sys.path.insert(0, os.environ["ROOT"])
from streamcerts import server_context
loop_kind, app, cert, key, ca = sys.argv[1:6]

def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

import ctypes
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = MallInfo2

def malloc_kb():
    m = _libc.mallinfo2()
    return (m.uordblks + m.hblkhd) // 1024, m.hblks

class Plain(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, data): pass

class Bare(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, data): pass

async def main():
    ctx = server_context(Path(cert), Path(key), Path(ca), require_client_cert=True, alpn=None)
    variant = os.environ.get("TLS_VARIANT", "")
    if "notickets" in variant:
        ctx.num_tickets = 0
    if "noticket_op" in variant:
        import ssl
        ctx.options |= ssl.OP_NO_TICKET
    if "nocache" in variant:
        lib = ctypes.CDLL("libssl.so.3")
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        p = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        lib.SSL_CTX_ctrl(p, 44, 0, None)  # SSL_CTRL_SET_SESS_CACHE_MODE: off
    if "tls12" in variant:
        import ssl
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    loop = asyncio.get_running_loop()
    if app == "plain":
        server = await loop.create_server(Plain, "127.0.0.1", 0, backlog=4096)
    elif app == "bare":
        server = await loop.create_server(Bare, "127.0.0.1", 0, ssl=ctx, backlog=4096)
    else:
        from websockets.asyncio.server import serve
        async def handler(ws):
            await ws.wait_closed()
        server = await serve(handler, "127.0.0.1", 0, ssl=ctx, ping_interval=None, compression=None,
                             max_size=2 << 20, max_queue=64, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print("port", port, flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    import tracemalloc
    trace = os.environ.get("TRACE")
    snaps = []
    if trace:
        tracemalloc.start(int(trace))
    while line := await reader.readline():
        gc.collect()
        if os.environ.get("TRIM"):
            _libc.malloc_trim(0)
        if trace:
            snaps.append(tracemalloc.take_snapshot())
            if len(snaps) == 2:
                stats = snaps[1].compare_to(snaps[0], "traceback" if int(trace) > 1 else "lineno")
                for st in stats[:25]:
                    print("#", st, file=sys.stderr)
                    if int(trace) > 1:
                        for l in st.traceback.format()[-6:]:
                            print("#   ", l, file=sys.stderr)
        print("rss", rss_kb(), len(asyncio.all_tasks()), *malloc_kb(), flush=True)

if loop_kind == "uvloop":
    import uvloop; uvloop.run(main())
else:
    asyncio.run(main())
"""


async def one(loop_kind: str, app: str, conns: int, layout, node: str) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, loop_kind, app, str(layout.server_cert), str(layout.server_key),
        str(layout.ca_cert), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, ROOT=str(root)))
    stdin, stdout = proc.stdin, proc.stdout
    assert stdout is not None and stdin is not None
    port = int((await stdout.readline()).split()[1])

    async def rss() -> tuple[int, int, int, int]:
        stdin.write(b"?\n")
        _, kb, tasks, malloc, mmaps = (await stdout.readline()).split()
        return int(kb), int(tasks), int(malloc), int(mmaps)

    tls = client_context(layout.ca_cert, layout.edge_cert(node), layout.edge_key(node))
    tls.check_hostname = False
    held: list[Any] = []  # stream writers or WebSocket connections: each has a transport

    async def dial() -> None:
        if app in ("bare", "plain"):
            _, w = await asyncio.open_connection("127.0.0.1", port, ssl=tls if app == "bare" else None)
            w.write(b"x" * 200)
            held.append(w)
        else:
            from websockets.asyncio.client import connect
            held.append(await connect(f"wss://127.0.0.1:{port}/", ssl=tls, ping_interval=None, compression=None,
                                      server_hostname="localhost", open_timeout=60))

    await dial()  # warm-up: one-time allocations before the baseline
    await asyncio.sleep(0.5)
    base, base_tasks, base_malloc, base_mmaps = await rss()
    sem = asyncio.Semaphore(50)

    async def gated() -> None:
        async with sem:
            await dial()

    await asyncio.gather(*(gated() for _ in range(conns)))
    await asyncio.sleep(2)
    after, tasks, malloc, mmaps = await rss()
    for h in held:
        h.transport.abort()
    stdin.close()
    await proc.wait()
    return {"loop": loop_kind, "app": app, "conns": conns,
            "kb_per_conn": round((after - base) / conns, 1), "tasks_per_conn": round((tasks - base_tasks) / conns, 2),
            "malloc_kb_per_conn": round((malloc - base_malloc) / conns, 1), "mmaps_per_conn": round((mmaps - base_mmaps) / conns, 2)}


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tls-rss-") as tmp:
        layout = init_lab(Path(tmp), ["edge-0"])
        for _ in range(args.rounds):
            for loop_kind in ("asyncio", "uvloop"):
                for app in ("plain", "bare", "websockets"):
                    if args.only and f"{loop_kind}:{app}" not in args.only:
                        continue
                    print(json.dumps(await one(loop_kind, app, args.conns, layout, "edge-0")), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="bench.tls_idle_rss")
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--only", action="append", help="LOOP:APP (uvloop:websockets), repeat; default: all four")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
