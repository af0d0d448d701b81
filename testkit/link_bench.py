"""What the link emulator itself costs: ``python -m testkit.link_bench [--seconds 4] [--rounds 3]``.

Runs ``python -m testkit.link`` as its own process between a blocking-socket sender (here) and sink (a forked
process), one bulk direction, and reports per profile the throughput through it and the proxy process's CPU
(user + system from /proc/PID/stat over the transfer). ``lan`` shows its ceiling; a rate-limited profile shows its cost at that
rate. Rounds are interleaved across profiles/loops; medians and ranges are printed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 256 * 1024


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _sink(server: socket.socket, results: multiprocessing.Queue) -> None:
    """In its own process, so the sender and the sink do not share one GIL."""
    conn, _ = server.accept()
    buf = bytearray(CHUNK)
    got, t_first, t_last = 0, 0.0, 0.0
    with conn:
        conn.settimeout(60)
        while n := conn.recv_into(buf):
            if not got:
                t_first = time.perf_counter()
            got += n
            t_last = time.perf_counter()
    results.put((got, t_first, t_last))


def run_once(profile: str, seconds: float, uvloop: bool) -> tuple[float, float]:
    """(MB/s through the link, proxy CPU in % of one core)."""
    server = socket.create_server(("127.0.0.1", 0))
    cmd = [sys.executable, "-m", "testkit.link", "--upstream", f"127.0.0.1:{server.getsockname()[1]}",
           "--profile", profile] + ([] if uvloop else ["--no-uvloop"])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    results: multiprocessing.Queue = multiprocessing.Queue()
    sink = multiprocessing.get_context("fork").Process(target=_sink, args=(server, results))
    sink.start()
    try:
        line = proc.stdout.readline().decode()  # type: ignore[union-attr]
        port = int(line.rsplit(":", 1)[1])
        data = os.urandom(CHUNK)
        with socket.create_connection(("127.0.0.1", port)) as s:
            cpu0, t0 = _cpu_seconds(proc.pid), time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got, t_first, t_last = results.get(timeout=seconds + 30)
            cpu = _cpu_seconds(proc.pid) - cpu0
            wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(10)
        sink.join(5)
        if sink.is_alive():
            sink.kill()
        server.close()
    return got / (t_last - t_first) / 1e6, 100 * cpu / wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testkit.link_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profiles", default="lan,wan-50ms-100mbit,wan-20ms-1gbit")
    args = ap.parse_args(argv)
    cases = [(p, loop) for p in args.profiles.split(",") for loop in (True, False)]
    results: dict[tuple[str, bool], list[tuple[float, float]]] = {c: [] for c in cases}
    for _ in range(args.rounds):
        for case in cases:
            results[case].append(run_once(case[0], args.seconds, case[1]))
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores, {args.rounds} rounds of {args.seconds} s")
    for (profile, uv), rs in results.items():
        mbs = [r[0] for r in rs]
        cpu = [r[1] for r in rs]
        print(f"{profile:24} {'uvloop ' if uv else 'asyncio'}  {statistics.median(mbs):8.2f} MB/s "
              f"({min(mbs):.2f}-{max(mbs):.2f})  proxy CPU {statistics.median(cpu):5.1f} % "
              f"({min(cpu):.1f}-{max(cpu):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
