"""A real HAProxy (Debian's ``haproxy``) in TCP mode on loopback, for the HA tests and bench.

``ensure_haproxy()`` installs it in CI (root, a fresh machine), as ``netns.ensure_iptables``
does for iptables, and says why it is unavailable otherwise. ``HAProxy.start`` writes a
configuration with one frontend per balanced port and runs ``haproxy -db`` (foreground) until
``stop``; ``server_sessions`` reads the per-server session totals from its stats socket.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .processes import Process

__all__ = ["HAProxy", "Pool", "ensure_haproxy", "free_port"]


def ensure_haproxy() -> str | None:
    """Install haproxy when missing and allowed (root, or CI as root); None when it is there."""
    if shutil.which("haproxy") is not None:
        return None
    if os.geteuid() != 0:
        return "haproxy is not installed and installing it needs root (apt-get install haproxy; CI does)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "haproxy"]
    if subprocess.run(install, capture_output=True, timeout=300, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300, env=env)  # a fresh machine
        done = subprocess.run(install, capture_output=True, timeout=300, env=env)
        if done.returncode != 0:
            return f"apt-get install haproxy failed: {done.stderr.decode(errors='replace')[-300:]}"
    return None if shutil.which("haproxy") is not None else "haproxy is still not on PATH after apt-get install"


def free_port() -> int:
    """A free loopback port *below* the kernel's ephemeral range: ports the tests must reuse
    (a replica restarted on its ports, HAProxy's config) are never handed to another process's
    outgoing connection or ``bind(0)`` meanwhile, as an ephemeral one can be."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port below the ephemeral range")


@dataclass
class Pool:
    """One balanced port: ``name`` frontend on ``port``, servers ``(id, port)`` on 127.0.0.1."""

    name: str
    servers: list[tuple[str, int]]
    balance: str = "roundrobin"
    port: int = field(default_factory=free_port)
    disabled: tuple[str, ...] = ()
    """Servers that start in maintenance (``enable`` puts them in)."""


class HAProxy:
    def __init__(self, directory: Path, pools: list[Pool]) -> None:
        self.directory = directory
        self.pools = {p.name: p for p in pools}
        self.socket = directory / "haproxy.sock"
        self.process: Process | None = None

    def config(self) -> str:
        lines = [
            "global", "    maxconn 4000", f"    stats socket {self.socket} mode 600 level admin",
            "defaults", "    mode tcp", "    timeout connect 1s", "    timeout client 1h", "    timeout server 1h",
            # a refused connect (the replica just died) is retried on another server
            "    retries 2", "    option redispatch",
        ]
        for pool in self.pools.values():
            lines += [f"frontend {pool.name}", f"    bind 127.0.0.1:{pool.port}", f"    default_backend {pool.name}_b",
                      f"backend {pool.name}_b", f"    balance {pool.balance}"]
            lines += [f"    server {sid} 127.0.0.1:{port} check inter 300ms fall 1 rise 1"
                      + (" disabled" if sid in pool.disabled else "") for sid, port in pool.servers]
        return "\n".join(lines) + "\n"

    async def start(self) -> None:
        path = self.directory / "haproxy.cfg"
        path.write_text(self.config())
        check = await asyncio.to_thread(subprocess.run, ["haproxy", "-c", "-f", str(path)], capture_output=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration: {check.stdout!r} {check.stderr!r}")
        self.process = await Process.start("haproxy", ["haproxy", "-db", "-f", str(path)], raw=True)
        for pool in self.pools.values():  # listening when a TCP connect succeeds
            for _ in range(100):
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", pool.port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()

    async def command(self, text: str) -> str:
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        try:
            writer.write(text.encode() + b"\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.read(), 5)).decode()
        finally:
            writer.close()

    async def enable(self, pool: str, server: str) -> None:
        """Take a server out of maintenance (a scale-up: the Service gains an endpoint)."""
        await self.command(f"enable server {pool}_b/{server}")

    async def server_sessions(self, pool: str) -> dict[str, int]:
        """server id -> sessions it was given since start (``show stat`` column stot)."""
        text = await self.command("show stat")
        header, *rows = [line for line in text.splitlines() if line]
        columns = header.lstrip("# ").split(",")
        out: dict[str, int] = {}
        for row in rows:
            values = dict(zip(columns, row.split(","), strict=False))
            if values.get("pxname") == f"{pool}_b" and values.get("svname") not in ("BACKEND", "FRONTEND"):
                out[values["svname"]] = int(values.get("stot") or 0)
        return out
