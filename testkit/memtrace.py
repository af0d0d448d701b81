"""Run a product command under tracemalloc; each SIGUSR2 writes a snapshot diff to a file.

    python -m testkit.memtrace OUT.txt [--frames 1] -- cloudstream --pki-dir ...
    python -m testkit.memtrace OUT.txt --frames 0 -- cloudstream ...   (no tracing: RSS before/after gc and malloc_trim)

Snapshot 0 is taken at the first SIGUSR2; every later SIGUSR2 appends to OUT the top
allocation sites (by line, or by traceback with ``--frames`` > 1) grown since the previous
snapshot and since the first, with counts, plus the process's RSS and open fds. Allocations
by native code (OpenSSL, libuv) are invisible here except uvloop's ``PyMem_Raw`` buffers.
Used to split cloudstream's RSS per idle tunnel into its Python part (bench.fleet idle, the gauntlet soak) and
to tell growth from allocator noise in a soak.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
import tracemalloc


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _trim_only(out: str) -> None:
    """What the allocators give back: glibc keeps freed chunks mapped until ``malloc_trim``."""
    import ctypes
    import gc

    libc = ctypes.CDLL("libc.so.6")

    def trim(signum: int, frame: object) -> None:
        before = _rss_kb()
        gc.collect()
        collected = _rss_kb()
        libc.malloc_trim(0)
        with open(out, "a") as f:
            f.write(f"=== at {time.time():.0f}: rss {before} kB, after gc {collected} kB, after malloc_trim {_rss_kb()} kB\n")

    signal.signal(signal.SIGUSR2, trim)


def main() -> None:
    argv = sys.argv[1:]
    out = argv.pop(0)
    frames = 1
    if argv and argv[0] == "--frames":
        frames = int(argv[1])
        argv = argv[2:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    module, args = argv[0], argv[1:]
    if frames == 0:  # no tracing: SIGUSR2 reports RSS before and after gc + malloc_trim(0)
        _trim_only(out)
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    tracemalloc.start(frames)
    snaps: list[tracemalloc.Snapshot] = []
    taken = [0]
    key = "traceback" if frames > 1 else "lineno"
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]

    def dump(signum: int, frame: object) -> None:
        snap = tracemalloc.take_snapshot().filter_traces(filters)
        snaps.append(snap)
        taken[0] += 1
        count = taken[0]
        if len(snaps) > 3:  # keep the first and the previous only: snapshots are megabytes each
            del snaps[1:-2]
        traced, _ = tracemalloc.get_traced_memory()
        with open(out, "a") as f:
            f.write(f"=== snapshot {count - 1} at {time.time():.0f}: rss {_rss_kb()} kB, traced {traced // 1024} kB,"
                    f" fds {len(os.listdir('/proc/self/fd'))}\n")
            for label, base in (("since previous", snaps[-2] if len(snaps) > 1 else None),
                                ("since first", snaps[0] if len(snaps) > 2 else None)):
                if base is None:
                    continue
                stats = snap.compare_to(base, key)
                total = sum(s.size_diff for s in stats)
                f.write(f"--- {label}: {total / 1024:+.1f} kB\n")
                for stat in stats[:25]:
                    f.write(f"{stat}\n")
                    if frames > 1:
                        for line in stat.traceback.format()[-2 * frames:]:
                            f.write(f"      {line}\n")

    signal.signal(signal.SIGUSR2, dump)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
