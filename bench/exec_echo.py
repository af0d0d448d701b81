"""Interactive latency: an exec echo round trip (1 byte typed, 1 byte back) through the whole
chain, idle and beside a bulk `logs -f` on the same node (emulator writing 1 KiB lines as
fast as the tunnel takes them). The bulk reader is a separate process.

    python -m bench.exec_echo [--pings 300]

The same measurement as ``python -m bench exec`` (``bench.measure.exec_echo`` on
``bench.stacks.ours``), one run, without the raw relay beside it. KubeEdge on these machines:
0.22 ms p50 idle, 200 ms beside a bulk stream.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from streamcerts import init_lab

from . import stacks
from .measure import exec_echo


async def main_async(count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp) / "pki", [stacks.NODE])
        async with stacks.ours(layout) as stack:
            r = await exec_echo(stack, layout, count=count)
    print(f"exec echo round trip, {count} pings, TLS on both hops, python {sys.version.split()[0]}")
    print(f"  idle:                  p50 {r['idle_p50_ms']:.2f} ms, p99 {r['idle_p99_ms']:.2f} ms")
    print(f"  beside a bulk logs -f: p50 {r['bulk_p50_ms']:.2f} ms, p99 {r['bulk_p99_ms']:.2f} ms "
          f"(bulk stream at {r['bulk_MBps']:.0f} MB/s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pings", type=int, default=300)
    return asyncio.run(main_async(parser.parse_args(argv).pings))


if __name__ == "__main__":
    sys.exit(main())
