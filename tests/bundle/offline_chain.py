"""A lab chain from an installed bundle, standard library only (run with the offline venv's python):
``streamcerts lab`` -> ``cloudstream`` -> ``edgestream`` (emulated edge) -> one ``logs -f`` request
through 10003 as the API server makes it. Prints ``CHAIN OK <n> lines`` and exits 0 on success.

    python offline_chain.py BIN_DIR WORK_DIR
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

NODE = "edge-offline"
READY = re.compile(r"kubelet API on \S+:(\d+), tunnel on \S+:(\d+)")


def main() -> int:
    bindir, work = Path(sys.argv[1]), Path(sys.argv[2])
    pki = work / "pki"
    subprocess.run([str(bindir / "streamcerts"), "lab", "--dir", str(pki), "--node", f"{NODE}=127.0.0.1"],
                   check=True, timeout=60, stdout=subprocess.DEVNULL)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen[str]] = []
    try:
        cloud = subprocess.Popen(
            [str(bindir / "cloudstream"), "--pki-dir", str(pki), "--stream-address", "127.0.0.1", "--stream-port", "0",
             "--tunnel-address", "127.0.0.1", "--tunnel-port", "0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(cloud)
        ports: list[tuple[int, int]] = []
        def pump() -> None:
            assert cloud.stdout is not None
            for line in cloud.stdout:
                sys.stderr.write(f"  [cloudstream] {line}")
                if not ports and (m := READY.search(line)):
                    ports.append((int(m.group(1)), int(m.group(2))))
        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 30
        while not ports and time.monotonic() < deadline and cloud.poll() is None:
            time.sleep(0.05)
        if not ports:
            print("cloudstream did not report its ports")
            return 1
        stream_port, tunnel_port = ports[0]
        procs.append(subprocess.Popen(
            [str(bindir / "edgestream"), "--pki-dir", str(pki), "--node-name", NODE, "--server",
             f"localhost:{tunnel_port}", "--node-ip", "127.0.0.1", "--backend", "emulator",
             "--emulate", "default/demo/app", "--emulate-log-rate", "20"], env=env))
        ctx = ssl.create_default_context(cafile=str(pki / "ca/streamCA.crt"))
        ctx.load_cert_chain(str(pki / "apiserver/kubelet-client.crt"), str(pki / "apiserver/kubelet-client.key"))
        ctx.check_hostname = False  # the API server dials the node IP; the lab cert names localhost
        return follow(ctx, stream_port)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def follow(ctx: ssl.SSLContext, port: int) -> int:
    import socket
    path = "/containerLogs/default/demo/app?follow=true&timestamps=true"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {NODE}:10250\r\nUser-Agent: offline-chain\r\n\r\n".encode())
            f = tls.makefile("rb")
            status = f.readline().decode().strip()
            if not status.startswith("HTTP/1.1 200"):
                time.sleep(0.2)  # the edge's tunnel is not up yet
                continue
            while f.readline() not in (b"\r\n", b""):
                pass
            lines = 0
            body = b""
            while lines < 5:
                size = int(f.readline().strip() or b"0", 16)
                if size == 0:
                    break
                body += f.read(size + 2)[:-2]
                lines = body.count(b"\n")
            print(body.decode(errors="replace"))
            print(f"CHAIN OK {lines} lines")
            return 0 if lines >= 5 else 1
    print("the edge never connected")
    return 1


if __name__ == "__main__":
    sys.exit(main())
