"""cloudstream replicas on fixed loopback ports (so one can be killed and come back on the same
ports behind HAProxy), and what the HA tests and ``bench.ha`` ask them."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from dataclasses import dataclass, field

from streamcerts import Layout
from testkit.haproxy import free_port
from testkit.processes import MS, READY, Process

STATE = re.compile(r"state (.*)$")


@dataclass
class Replica:
    replica_id: str
    stream_port: int = field(default_factory=free_port)
    tunnel_port: int = field(default_factory=free_port)
    process: Process | None = None


class Replicas:
    def __init__(
        self, layout: Layout, count: int = 3, peers: bool = True, announce: int | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        self.layout = layout
        self.peers = peers
        self.announce = announce or count
        """The replica count told to edges (1: they keep one tunnel, the baseline of bench.ha)."""
        self.extra = extra
        self.all = [Replica(f"replica-{i}") for i in range(count)]

    async def start(self, replica: Replica) -> None:
        replica.process = await Process.start(replica.replica_id, [
            "cloudstream", "--pki-dir", str(self.layout.root),
            "--stream-address", "127.0.0.1", "--stream-port", str(replica.stream_port),
            "--tunnel-address", "127.0.0.1", "--tunnel-port", str(replica.tunnel_port),
            "--replica-id", replica.replica_id, "--replicas", str(self.announce), *self.extra,
            *(["--replica-peers", ",".join(f"127.0.0.1:{r.tunnel_port}" for r in self.all)] if self.peers else []),
        ])
        await replica.process.wait_for_line(READY)

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(r) for r in self.all))

    async def stop_all(self) -> None:
        await asyncio.gather(*(r.process.stop() for r in self.all if r.process is not None))

    async def state(self, replica: Replica) -> dict[str, int]:
        assert replica.process is not None
        since = len(replica.process.lines)
        replica.process.proc.send_signal(signal.SIGUSR1)
        m = await replica.process.wait_for_line(STATE, since=since, timeout=10)
        return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}

    async def wait_tunnels(self, replica: Replica, count: int, within: float) -> float:
        """Seconds until ``replica`` holds exactly ``count`` tunnels (bounded by ``within``)."""
        began = time.monotonic()
        while True:
            state = await self.state(replica)
            if state["tunnels"] == count:
                return time.monotonic() - began
            if time.monotonic() - began > within * MS:
                raise AssertionError(f"{replica.replica_id} holds {state['tunnels']} tunnels, not {count}, "
                                     f"after {within} s: {state}")
            await asyncio.sleep(0.2)

    def lines(self, pattern: str) -> dict[str, int]:
        regex = re.compile(pattern)
        return {r.replica_id: sum(1 for line in r.process.lines if regex.search(line))
                for r in self.all if r.process is not None}
