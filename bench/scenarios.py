"""The scenarios of ``python -m bench``: each builds its variants (ours from every checkout in
``ctx.trees``, plus the baselines) and names the "Done when" checks of issue 17.

Every variant's ``measure`` returns plain numbers (MB/s, ms, an index); ``core.run_variants``
interleaves them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import stacks
from .core import Check, Context, Metrics, Variant
from .measure import PLACEMENTS, containerd_echo, exec_echo, jain, open_echo, throughput

RAW = "raw TLS relay"
KE = "KubeEdge-style"
CTD = "containerd alone"

LINK_FALLBACK = {"wan-50ms-100mbit": (0.025, 12.5e6), "satellite-600ms-10mbit": (0.300, 1.25e6)}


def link_profile(name: str) -> tuple[float, float]:
    """(one-way delay s, rate bytes/s) of a testkit.link profile."""
    try:
        from testkit.link import PROFILES

        p = PROFILES[name]
        return float(p.one_way_delay), float(p.rate or 0.0)
    except (ImportError, KeyError):
        return LINK_FALLBACK[name]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    build: Callable[[Context], list[Variant]]
    checks: tuple[Check, ...] = ()
    columns: tuple[str, ...] = ("MBps",)
    """Metrics shown in the table (and plotted: the first)."""


def ratio(a: tuple[str, str], b: tuple[str, str] | float) -> Callable[[dict[str, Metrics]], float]:
    def value(m: dict[str, Metrics]) -> float:
        den = b if isinstance(b, float) else m[b[0]][b[1]]
        return m[a[0]][a[1]] / den
    return value


def difference(a: tuple[str, str], b: tuple[str, str]) -> Callable[[dict[str, Metrics]], float]:
    return lambda m: m[a[0]][a[1]] - m[b[0]][b[1]]


def metric(v: str, k: str) -> Callable[[dict[str, Metrics]], float]:
    return lambda m: m[v][k]


def ours_variants(ctx: Context, setup: Callable[..., Any], measure: Callable[[Any], Any],
                  echo: Callable[[Any], Any] | None = None, echoes: int = 300) -> list[Variant]:
    return [Variant(label, functools.partial(setup, root), measure, echo, echoes) for label, root in ctx.trees]


# -- one logs -f -------------------------------------------------------------------------------

def _tp(ctx: Context, warmup: float, seconds: float) -> Callable[[stacks.Stack], Any]:
    async def measure(stack: stacks.Stack) -> Metrics:
        return {"MBps": (await throughput(stack, ctx.layout, warmup=warmup, seconds=seconds)).MBps}
    return measure


def build_logs(ctx: Context) -> list[Variant]:
    seconds = 2.0 if ctx.quick else 3.0
    tp = _tp(ctx, 1.0, seconds)
    variants = ours_variants(ctx, lambda root: stacks.ours(ctx.layout, root), tp)
    if ctx.baselines:
        variants += [Variant(RAW, lambda: stacks.raw_relay(ctx.layout), tp),
                     Variant(KE, lambda: stacks.kubeedge(ctx.layout), tp)]
    return variants


# -- a cloud fed 256-byte messages -------------------------------------------------------------

def build_go_edge(ctx: Context) -> list[Variant]:
    tp = _tp(ctx, 1.0, 2.0 if ctx.quick else 3.0)
    variants = ours_variants(ctx, lambda root: stacks.kubeedge(ctx.layout, cloud="ours", feed="frames", root=root), tp)
    if ctx.baselines:
        variants.append(Variant(f"{KE} cloud", lambda: stacks.kubeedge(ctx.layout, feed="frames"), tp))
    return variants


# -- exec echo ---------------------------------------------------------------------------------

def build_exec(ctx: Context) -> list[Variant]:
    """Idle round trips of all variants taken together, pings alternating (``core.paired_idle``);
    beside a bulk stream, each variant in turn (its own bulk stream)."""
    count = 100 if ctx.quick else 300

    async def measure(stack: stacks.Stack) -> Metrics:
        return await exec_echo(stack, ctx.layout, count=count, idle=False)

    async def measure_bytes(stack: stacks.Stack) -> Metrics:
        return await exec_echo(stack, ctx.layout, count=count, idle=False, raw_bytes=True)

    def echo(stack: stacks.Stack) -> Any:
        return open_echo(stack, ctx.layout)

    def echo_bytes(stack: stacks.Stack) -> Any:
        return open_echo(stack, ctx.layout, raw_bytes=True)

    variants = ours_variants(ctx, lambda root: stacks.ours(ctx.layout, root), measure, echo, count)
    if ctx.baselines:  # the same WebSocket client through the raw relay; and bytes alone, no client framing
        variants += [Variant(RAW, lambda: stacks.raw_relay(ctx.layout), measure, echo, count),
                     Variant(f"{RAW}, bytes only", lambda: stacks.raw_relay(ctx.layout), measure_bytes, echo_bytes,
                             count)]
    return variants


def build_exec_placement(ctx: Context) -> list[Variant]:
    """Keystrokes beside a bulk stream with cloudstream, edgestream, the bulk reader and the
    client pinned two by two to CPUs 0 and 1, each way they can pair, and unpinned (ours only)."""
    count = 100 if ctx.quick else 300
    variants = []
    for label, root in ctx.trees:
        for where, cpus in PLACEMENTS.items():
            async def measure(stack: stacks.Stack, cpus: tuple[int, int, int, int] | None = cpus) -> Metrics:
                return await exec_echo(stack, ctx.layout, count=count, idle=False, cpus=cpus)

            variants.append(Variant(f"{label}, {where}", functools.partial(stacks.ours, ctx.layout, root), measure))
    return variants


def build_exec_spdy(ctx: Context) -> list[Variant]:
    """The same, over SPDY/3.1 as a kube-apiserver sends it (no baseline speaks SPDY)."""
    count = 100 if ctx.quick else 300

    async def measure(stack: stacks.Stack) -> Metrics:
        return await exec_echo(stack, ctx.layout, count=count, idle=False, spdy=True)

    def echo(stack: stacks.Stack) -> Any:
        return open_echo(stack, ctx.layout, spdy=True)

    return ours_variants(ctx, lambda root: stacks.ours(ctx.layout, root), measure, echo, count)


def build_exec_cri(ctx: Context) -> list[Variant]:
    """exec over SPDY into a real busybox container: through the chain (CRI backend), and straight
    to containerd's streaming server with the same client (needs root: starts containerd)."""
    count = 100 if ctx.quick else 300
    ctd = stacks.Containerd()

    async def measure(stack: stacks.Stack) -> Metrics:
        return await exec_echo(stack, ctx.layout, count=count, spdy=True, beside_bulk=False)

    async def alone(shared: stacks.Containerd) -> Metrics:
        return await containerd_echo(shared, count)

    variants = ours_variants(ctx, lambda root: stacks.ours_cri(ctx.layout, ctd, root), measure)
    if ctx.baselines:
        variants.append(Variant(CTD, ctd.use, alone))
    return variants


# -- 64 bulk streams ---------------------------------------------------------------------------

def build_fairness(ctx: Context) -> list[Variant]:
    async def measure(stack: stacks.Stack) -> Metrics:
        r = await throughput(stack, ctx.layout, streams=64, warmup=2.0, seconds=3.0 if ctx.quick else 4.0)
        per = r.per_stream_MBps()
        return {"jain": jain(per), "MBps": r.MBps, "min_stream_MBps": min(per),
                "max_stream_MBps": max(per)}

    return ours_variants(ctx, lambda root: stacks.ours(ctx.layout, root), measure)


# -- a link profile ----------------------------------------------------------------------------

def build_link(profile: str) -> Callable[[Context], list[Variant]]:
    delay, _ = link_profile(profile)
    long = delay > 0.2

    def build(ctx: Context) -> list[Variant]:
        warmup = (6.0 if long else 3.0) / (2 if ctx.quick else 1)
        seconds = (6.0 if long else 4.0) / (2 if ctx.quick else 1)
        pings = 16 if long else 40
        # the keystrokes go beside a `logs -f` past its start (a window's growth is a few round
        # trips of transient queue): six round trips, as its own throughput warm-up does
        bulk_warmup = max(0.5, 12 * delay)

        async def ours_measure(stack: stacks.Stack) -> Metrics:
            out: Metrics = {"MBps": (await throughput(stack, ctx.layout, warmup=warmup, seconds=seconds)).MBps}
            echo = await exec_echo(stack, ctx.layout, count=pings, bulk_warmup=bulk_warmup)
            out["idle_p50_ms"] = echo["idle_p50_ms"]
            out["bulk_p50_ms"], out["bulk_p99_ms"] = echo["bulk_p50_ms"], echo["bulk_p99_ms"]
            out["bulk_MBps"] = echo["bulk_MBps"]  # the `logs -f` the keystrokes waited beside
            alone = await throughput(stack, ctx.layout, streams=2, warmup=warmup, seconds=seconds)
            stalled = await throughput(stack, ctx.layout, streams=2, stall=1, warmup=warmup, seconds=seconds)
            out["others_MBps"] = alone.MBps
            out["others_stalled_MBps"] = stalled.MBps
            return out

        variants = ours_variants(ctx, lambda root: stacks.ours(ctx.layout, root, profile), ours_measure)
        async def raw_measure(stack: stacks.Stack) -> Metrics:
            # the path's own round trip: a keystroke through a byte relay and the same link process
            # (the emulator's timers and hops add 1-2 ms to the nominal RTT; a physical link would not)
            out = await tp(stack)
            echo = await exec_echo(stack, ctx.layout, count=pings, beside_bulk=False)
            out["idle_p50_ms"] = echo["idle_p50_ms"]
            return out

        tp = _tp(ctx, warmup, seconds)
        if ctx.baselines:
            variants += [Variant(RAW, lambda: stacks.raw_relay(ctx.layout, profile), raw_measure),
                         Variant(KE, lambda: stacks.kubeedge(ctx.layout, profile), tp)]
        return variants

    return build


def link_checks(profile: str) -> tuple[Check, ...]:
    delay, rate = link_profile(profile)
    rtt_ms = 2000 * delay
    return (
        Check("one logs -f / link rate", ratio(("ours", "MBps"), rate / 1e6), ">=", 0.90),
        Check(f"exec echo p50 beside it - the path's RTT ({RAW} idle echo; nominal {rtt_ms:.0f} ms)",
              difference(("ours", "bulk_p50_ms"), (RAW, "idle_p50_ms")), "<=", 5.0, "ms"),
        Check("the logs -f beside the echo / link rate", ratio(("ours", "bulk_MBps"), rate / 1e6), ">=", 0.90),
        Check("2 readers beside a stalled one / without it", ratio(("ours", "others_stalled_MBps"),
                                                                   ("ours", "others_MBps")), ">=", 0.90),
        Check(f"one logs -f / {KE}", ratio(("ours", "MBps"), (KE, "MBps")), ">=", 1.0),
    )


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("logs", "one `logs -f`, loopback", build_logs, (
        Check(f"ours / {KE}", ratio(("ours", "MBps"), (KE, "MBps")), ">=", 15.0),
        Check(f"ours / {RAW}", ratio(("ours", "MBps"), (RAW, "MBps")), ">=", 0.60),
    )),
    Scenario("go-edge", "a cloud fed 256-byte messages (as a Go edge sends)", build_go_edge, (
        Check(f"ours / {KE} cloud", ratio(("ours", "MBps"), (f"{KE} cloud", "MBps")), ">=", 1.5),
    )),
    Scenario("exec", "exec echo round trip, idle and beside a full-speed bulk stream", build_exec, (
        Check(f"idle p50 / {RAW} idle p50", ratio(("ours", "idle_p50_ms"), (RAW, "idle_p50_ms")), "<=", 1.2),
        Check("p50 beside bulk", metric("ours", "bulk_p50_ms"), "<=", 0.5, "ms"),
    ), ("idle_p50_ms", "idle_p99_ms", "bulk_p50_ms", "bulk_p99_ms", "bulk_MBps")),
    Scenario("exec-placement", "exec echo beside bulk, the four busy processes pinned to 2 CPUs each way",
             build_exec_placement, (), ("bulk_p50_ms", "bulk_p99_ms", "bulk_MBps")),
    Scenario("exec-spdy", "exec echo over SPDY/3.1, as a kube-apiserver sends it to a kubelet", build_exec_spdy, (),
             ("idle_p50_ms", "idle_p99_ms", "bulk_p50_ms", "bulk_p99_ms", "bulk_MBps")),
    Scenario("exec-cri", "exec echo over SPDY into a real container (containerd, CRI backend)", build_exec_cri, (),
             ("idle_p50_ms", "idle_p99_ms")),
    Scenario("fairness", "64 bulk `logs -f` of one node", build_fairness, (
        Check("Jain's fairness index", metric("ours", "jain"), ">=", 0.95, ""),
    ), ("jain", "MBps", "min_stream_MBps", "max_stream_MBps")),
    Scenario("wan", "link `wan-50ms-100mbit`", build_link("wan-50ms-100mbit"), link_checks("wan-50ms-100mbit"),
             ("MBps", "idle_p50_ms", "bulk_p50_ms", "bulk_p99_ms", "bulk_MBps", "others_MBps", "others_stalled_MBps")),
    Scenario("satellite", "link `satellite-600ms-10mbit`", build_link("satellite-600ms-10mbit"),
             link_checks("satellite-600ms-10mbit"),
             ("MBps", "idle_p50_ms", "bulk_p50_ms", "bulk_p99_ms", "bulk_MBps", "others_MBps", "others_stalled_MBps")),
)}

PROFILE_OF = {"wan": "wan-50ms-100mbit", "satellite": "satellite-600ms-10mbit"}

