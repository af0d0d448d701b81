"""``edgestream emulate``: N emulated edge nodes in one process, against an unmodified cloudstream.

Each node is what a one-node ``edgestream --backend emulator`` is: its own tunnel (``run_tunnel``),
its own certificate (CN = node name, the node IP as IP SAN, all from the lab's one tunnel CA),
its own ``EmulatorBackend`` (pods, log timelines, restarts) behind ``NodeEndpoints``. What the
nodes share is the process: one loop, one keepalive timer (``streamproto.aio.keepalive``), one log.

Dials are spread over ``ramp`` per second so N nodes do not land on cloudstream's accept queue
at once (its per-address pending-handshake cap is 100). Churn makes ``churn_rate`` random nodes
per second leave (a clean close, code 1001) and come back ``churn_down`` seconds later. Every
``report_every`` seconds one ``fleet`` line sums it up; per-node lines are WARNING and up only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
import time
from dataclasses import dataclass, field

from streamcerts import init_lab
from streamcerts.errors import CertificateError
from streamops.admin import AdminConfig, add_admin_arguments, add_log_format_argument, setup_logging
from streamops.runner import raise_nofile_limit, run
from streamops.cli import ENV_EPILOG, Parser
from streamproto.tunnel.errors import ConfigError, TunnelError

from .admin import EdgeAdmin
from .backends.emulator import EmulatorBackend
from .config import EdgeConfig
from .fleet_profile import FleetProfile, add_arguments
from .node_endpoints import NodeEndpoints
from .session import AgentSession
from .stop import StopEvent
from .tunnel_client import run_tunnel

__all__ = ["Fleet", "FleetNode", "main", "node_configs"]

logger = logging.getLogger("edgestream.fleet")


def node_configs(profile: FleetProfile) -> list[EdgeConfig]:
    """Issue whatever node certificates the lab lacks (kept when valid) and one EdgeConfig per node."""
    names = [profile.node_name(i) for i in range(profile.nodes)]
    ips = {name: [profile.node_ip(i)] for i, name in enumerate(names)}
    began = time.monotonic()
    layout = init_lab(profile.pki_dir, names, node_ips=ips)
    logger.info("fleet: %d node certificates ready in %s (%.1f s)", len(names), layout.root, time.monotonic() - began)
    emulator = profile.emulator()
    return [
        EdgeConfig(
            server=profile.server, server_name=profile.server_name, node_name=name, node_ip=ips[name][0],
            tls_tunnel_ca_file=layout.ca_cert, tls_tunnel_cert_file=layout.edge_cert(name),
            tls_tunnel_private_key_file=layout.edge_key(name), backend="emulator", emulator=emulator,
            ping_interval=profile.ping_interval, ping_timeout=profile.ping_timeout,
            reconnect_max=profile.reconnect_max, replica_probe_interval=profile.replica_probe,
        )
        for name in names
    ]


@dataclass(eq=False)
class FleetNode:
    config: EdgeConfig
    fleet: Fleet
    endpoints: NodeEndpoints = field(init=False)
    stop: StopEvent = field(default_factory=StopEvent)
    task: asyncio.Task[None] | None = None
    up: bool = False
    away: bool = False
    """Churned: leaving or waiting to come back (churn must not pick it again: two returns
    were two tunnel loops for one node, each replacing the other's tunnel for good)."""

    def __post_init__(self) -> None:
        self.endpoints = NodeEndpoints(EmulatorBackend(self.config.emulator, phase_seed=self.name), self.config)

    @property
    def name(self) -> str:
        return self.config.node_name

    def on_session(self, session: AgentSession | None) -> None:
        self.endpoints.on_session(session)
        if session is not None and not self.up:
            self.fleet.up += 1
            self.fleet.tunnels_opened += 1
        elif session is None and self.up:
            self.fleet.up -= 1
        self.up = session is not None

    def start(self) -> None:
        if self.running:
            return  # one tunnel loop per node: a second would replace the first's tunnel forever
        self.stop = StopEvent()  # closes the tunnel from a callback: no watcher task per node
        self.task = asyncio.create_task(self._run(), name=f"node-{self.name}")

    async def _run(self) -> None:
        try:
            await run_tunnel(self.config, self.endpoints, self.stop, on_session=self.on_session,
                             on_dial_error=self.endpoints.on_dial_error)
        except Exception:  # one node's bug must not end the fleet
            logger.exception("! node %s: tunnel loop crashed", self.name)

    async def leave(self) -> None:
        """Close the tunnel (code 1001) and stop redialling."""
        self.stop.set()
        if self.task is not None:
            await self.task
            self.task = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class Fleet:
    def __init__(self, profile: FleetProfile, configs: list[EdgeConfig]) -> None:
        self.profile = profile
        self.nodes = [FleetNode(config, self) for config in configs]
        self.up = 0
        self.tunnels_opened = 0
        self.churned = 0
        self.started = 0.0
        self.all_up_after: float | None = None

    def streams(self) -> int:
        return sum(len(s.streams) for n in self.nodes for s in n.endpoints.sessions)

    async def run(self, stop: asyncio.Event) -> None:
        self.started = time.monotonic()
        logger.info("fleet: %d nodes dialling %s at %.0f per second", len(self.nodes), self.profile.server,
                    self.profile.ramp)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._ramp(stop))
                tg.create_task(self._watch_up(stop))
                if self.profile.churn_rate > 0:
                    tg.create_task(self._churn(stop))
                if self.profile.report_every > 0:
                    tg.create_task(self._report(stop))
                await stop.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        running = [n for n in self.nodes if n.task is not None]
        for node in running:
            node.stop.set()
        if running:
            await asyncio.wait([n.task for n in running if n.task is not None], timeout=30)
        for node in self.nodes:
            await node.endpoints.close()
        await asyncio.sleep(0)  # let cancelled helpers (keepalive, churn returns) finish
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        logger.info("fleet: stopped %d nodes, %d tasks left%s", len(running), len(left),
                    "" if not left else ": " + ", ".join(sorted(t.get_name() for t in left))[:300])

    async def _ramp(self, stop: asyncio.Event) -> None:
        """Start node i at i / ramp seconds (in batches of what one 10 ms tick allows)."""
        per_tick = max(1, round(self.profile.ramp / 100))
        for first in range(0, len(self.nodes), per_tick):
            if stop.is_set():
                return
            for node in self.nodes[first : first + per_tick]:
                node.start()
            due = self.started + (first + per_tick) / self.profile.ramp
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def _watch_up(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.up < len(self.nodes):
            await asyncio.sleep(0.1)
        if self.up >= len(self.nodes):
            self.all_up_after = time.monotonic() - self.started
            logger.info("fleet: all %d nodes up after %.1f s", len(self.nodes), self.all_up_after)

    async def _churn(self, stop: asyncio.Event) -> None:
        """Every 1/rate seconds (exponential gaps) one random running node leaves and comes
        back ``churn_down`` seconds later. Bounded: at most one leave per gap."""
        rng = random.Random()
        back: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                await asyncio.sleep(rng.expovariate(self.profile.churn_rate))
                candidates = [n for n in self.nodes if n.running and n.up and not n.away]
                if not candidates:
                    continue
                node = rng.choice(candidates)
                self.churned += 1
                task = asyncio.create_task(self._away(node, stop))
                back.add(task)
                task.add_done_callback(back.discard)
        finally:
            for task in back:
                task.cancel()

    async def _away(self, node: FleetNode, stop: asyncio.Event) -> None:
        node.away = True
        try:
            await node.leave()
            async with asyncio.timeout(self.profile.churn_down):
                await stop.wait()
        except TimeoutError:
            node.start()
        finally:
            node.away = False

    async def _report(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with asyncio.timeout(self.profile.report_every):
                    await stop.wait()
            except TimeoutError:
                pass
            logger.info("fleet: %d/%d nodes up, %d streams, %d tunnels opened, %d churned, rss %.0f MB, %d tasks",
                        self.up, len(self.nodes), self.streams(), self.tunnels_opened, self.churned, _rss_mb(),
                        len(asyncio.all_tasks()))


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


async def serve(profile: FleetProfile, admin_config: AdminConfig | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    configs = await asyncio.to_thread(node_configs, profile)
    fleet = Fleet(profile, configs)
    admin = EdgeAdmin(admin_config or AdminConfig(), lambda: [n.endpoints for n in fleet.nodes], stop.is_set,
                      name="edgestream emulate")
    try:
        if admin.server.config.enabled:
            await admin.server.start()
        await fleet.run(stop)
    finally:
        await admin.server.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="edgestream emulate", description="N emulated edge nodes in one process", epilog=ENV_EPILOG)
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    parser.add_argument("--node-log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="level of the per-node lines (tunnel up/down, streams); WARNING keeps N nodes quiet")
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                        help="event loop; auto takes uvloop when installed (the [uvloop] extra)")
    add_log_format_argument(parser)
    add_admin_arguments(parser, example_port=10006)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    setup_logging(ns.log_level, ns.log_format)
    for name in ("edgestream.session", "edgestream.tunnel_client", "edgestream.node_endpoints", "edgestream.backends"):
        logging.getLogger(name).setLevel(ns.node_log_level)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    raise_nofile_limit(tool="edgestream")
    try:
        profile = FleetProfile.from_args(ns)
        admin = AdminConfig.from_args(ns)
    except ConfigError as exc:
        print(f"edgestream emulate: {exc}", file=sys.stderr)
        return 2
    try:
        run(serve(profile, admin), ns.loop)
    except KeyboardInterrupt:
        return 130
    except (OSError, TunnelError, CertificateError) as exc:
        logger.error("fatal: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
