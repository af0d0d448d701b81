"""Tiny TCP endpoints run inside network namespaces (``python -m testkit.netprobe MODE ...``).

* ``listen-origdst PORT [HOST]``: on HOST:PORT (127.0.0.1), answer each connection with
  ``cloud <original destination ip:port>`` read by SO_ORIGINAL_DST (what cloudstream reads).
* ``listen-node PORT``: on 0.0.0.0:PORT, answer ``node <local ip:port>`` (the real node, reached
  when no rule redirects).
* ``probe IP PORT``: connect, print the first line of the answer (or ``refused``/``timeout``).

Listeners print ``ready`` once bound and serve until killed.
"""

from __future__ import annotations

import socket
import struct
import sys

SO_ORIGINAL_DST = 80


def _serve(host: str, port: int, answer: str) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(128)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            if answer == "origdst":
                raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
                dport, = struct.unpack("!H", raw[2:4])
                text = f"cloud {socket.inet_ntoa(raw[4:8])}:{dport}"
            else:
                ip, lport = conn.getsockname()[:2]
                text = f"node {ip}:{lport}"
            conn.sendall(text.encode() + b"\n")


def _probe(ip: str, port: int) -> None:
    try:
        with socket.create_connection((ip, port), timeout=3) as s:
            print(s.makefile().readline().strip())
    except ConnectionRefusedError:
        print("refused")
    except TimeoutError:
        print("timeout")


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "listen-origdst":
        _serve(argv[2] if len(argv) > 2 else "127.0.0.1", int(argv[1]), "origdst")
    elif mode == "listen-node":
        _serve("0.0.0.0", int(argv[1]), "node")
    elif mode == "probe":
        _probe(argv[1], int(argv[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
