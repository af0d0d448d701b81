"""``python -m testkit.link``: the link emulator as its own process (benchmarks keep its CPU apart).

Prints ``link listening on HOST:PORT`` once ready, a stats line on SIGUSR1 and at exit, stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys

from testkit.link import PROFILES, LinkProfile, LinkProxy


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _profile_from_args(args: argparse.Namespace) -> LinkProfile:
    p = PROFILES[args.profile]
    if args.delay_ms is not None:
        p = dataclasses.replace(p, one_way_delay=args.delay_ms / 1000)
    if args.rate_mbit is not None:
        p = dataclasses.replace(p, rate=args.rate_mbit * 1e6 / 8 if args.rate_mbit > 0 else None)
    if args.buffer_kb is not None:
        p = dataclasses.replace(p, buffer=int(args.buffer_kb * 1024))
    return p if p == PROFILES[args.profile] else dataclasses.replace(p, name=f"{args.profile} (modified)")


def _stats_line(link: LinkProxy) -> str:
    s = link.stats
    return (
        f"link stats: up {s.up.bytes_out} B (max held {s.up.max_held}, full {s.up.full}), "
        f"down {s.down.bytes_out} B (max held {s.down.max_held}, full {s.down.full}), "
        f"connections {s.connections} open / {s.accepted} accepted, refused {s.refused}, failed {s.failed}"
    )


async def _serve(args: argparse.Namespace, profile: LinkProfile) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with LinkProxy(
        args.upstream, profile, listen=args.listen, max_connections=args.max_connections,
        sock_buffer=args.sock_buffer_kb * 1024,
    ) as link:
        loop.add_signal_handler(signal.SIGUSR1, lambda: print(_stats_line(link), file=sys.stderr, flush=True))
        rate = f"{profile.rate * 8 / 1e6:g} Mbit/s" if profile.rate else "unlimited"
        print(
            f"link {profile.name}: {profile.one_way_delay * 1000:g} ms each way, {rate}, buffer {profile.buffer} B, "
            f"upstream {args.upstream[0]}:{args.upstream[1]}",
            file=sys.stderr, flush=True,
        )
        print(f"link listening on {link.host}:{link.port}", flush=True)
        await stop.wait()
        print(_stats_line(link), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testkit.link", description=__doc__.split("\n\n")[0].strip("`"))
    ap.add_argument("--listen", type=_address, default=("127.0.0.1", 0), help="HOST:PORT (default 127.0.0.1:0)")
    ap.add_argument("--upstream", type=_address, required=True, help="HOST:PORT to forward to")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="lan")
    ap.add_argument("--delay-ms", type=float, help="one-way delay (overrides the profile's)")
    ap.add_argument("--rate-mbit", type=float, help="rate per direction in Mbit/s (0: unlimited)")
    ap.add_argument("--buffer-kb", type=float, help="bottleneck buffer per direction in KiB")
    ap.add_argument("--max-connections", type=int, default=256)
    ap.add_argument("--sock-buffer-kb", type=int, default=64, help="SO_RCVBUF/SO_SNDBUF of the proxy's sockets")
    ap.add_argument("--no-uvloop", action="store_true", help="use the stdlib loop")
    args = ap.parse_args(argv)
    try:
        profile = _profile_from_args(args)
    except ValueError as e:
        ap.error(str(e))
    if args.sock_buffer_kb < 48:
        ap.error("--sock-buffer-kb below 48: loopback's 64 KiB segments stall on a smaller window")
    runner: object = asyncio.run
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    runner(_serve(args, profile))  # type: ignore[operator]
    return 0
