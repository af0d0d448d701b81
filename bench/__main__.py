"""The benchmark suite (issue 17): real processes, interleaved rounds, baselines in the same run.

    python -m bench all [--rounds 3] [--quick]      # every scenario; bench/results/latest.json + PNGs
    python -m bench SCENARIO [...] [--rounds 3]     # some scenarios (bench/results/last-run.json)
    python -m bench compare REV [SCENARIO ...]      # REV (a git worktree) against the working tree
    python -m bench report                          # README's performance section from latest.json
    python -m bench list

Scenarios: logs, go-edge, exec, exec-placement, exec-spdy, exec-cri, fairness, wan, satellite (see bench/README.md).
The older
single-purpose scripts still run alone: ``python -m bench.chain``, ``bench.exec_echo``, ...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from streamcerts import init_lab
from testkit.processes import ROOT

from . import plots, report, results
from .compare import Worktree, ratios
from .core import Context, Progress, machine, medians, run_variants
from .scenarios import PROFILE_OF, SCENARIOS, link_profile

ORDER = ["logs", "go-edge", "exec", "exec-placement", "exec-spdy", "exec-cri", "fairness", "wan", "satellite"]
QUICK = ["logs", "go-edge", "exec"]


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


async def run(names: list[str], ctx: Context) -> dict[str, Any]:
    built = {name: SCENARIOS[name].build(ctx) for name in names}
    ctx.progress = Progress(sum(len(v) for v in built.values()) * ctx.rounds)
    result: dict[str, Any] = {"started": now(), "machine": machine(), "rounds": ctx.rounds, "quick": ctx.quick,
                              "scenarios": {}}
    began = time.monotonic()
    try:
        for name in names:
            scenario = SCENARIOS[name]
            measured = await run_variants(name, built[name], ctx)
            entry: dict[str, Any] = {"title": scenario.title, "columns": list(scenario.columns), **measured}
            if name in PROFILE_OF:
                delay, rate = link_profile(PROFILE_OF[name])
                entry["link"] = {"profile": PROFILE_OF[name], "one_way_delay_s": delay, "rate_MBps": rate / 1e6}
            if ctx.baselines:
                entry["checks"] = [c.evaluate(medians(measured)) for c in scenario.checks]
            result["scenarios"][name] = entry
    finally:
        ctx.progress.finish()
    result["finished"] = now()
    result["duration_s"] = round(time.monotonic() - began, 1)
    result["end_load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result


def pick(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    return names


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", help="all | compare | report | list | a scenario name")
    parser.add_argument("args", nargs="*", help="compare: REV then scenarios; else more scenarios")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per comparison (default 3)")
    parser.add_argument("--quick", action="store_true", help="shorter samples; `all --quick`: logs, go-edge, exec")
    parser.add_argument("--no-plots", action="store_true")
    ns = parser.parse_args(argv)
    if ns.command == "list":
        for name in ORDER:
            print(f"{name:10} {SCENARIOS[name].title}")
        return 0
    if ns.command == "report":
        return report.main()
    with tempfile.TemporaryDirectory(prefix="kes-bench-") as tmp:
        layout = init_lab(Path(tmp) / "pki", ["bench-node"])
        ctx = Context(layout, rounds=ns.rounds, quick=ns.quick)
        if ns.command == "compare":
            if not ns.args:
                raise SystemExit("usage: python -m bench compare REV [SCENARIO ...]")
            rev, names = ns.args[0], pick(ns.args[1:] or ["logs", "go-edge", "exec"])
            with Worktree(rev) as tree:
                base, work = f"{rev} ({tree.sha[:9]})", "working tree"
                ctx.trees, ctx.baselines = [(base, tree.path), (work, ROOT)], False
                result = asyncio.run(run(names, ctx))
            result["compare"] = {"rev": rev, "sha": tree.sha, "base_label": base, "work_label": work,
                                 "ratios": ratios(result, base, work)}
            path = results.write(result, "compare")
            print(results.compare_table(result))
            print(f"\n{result['machine']['cpu']}, load {result['machine']['load_average']} -> "
                  f"{result['end_load_average']}; written to {path.relative_to(ROOT)}")
            return 0
        names = (QUICK if ns.quick else ORDER) if ns.command == "all" else pick([ns.command, *ns.args])
        ctx.trees = [("ours", ROOT)]
        result = asyncio.run(run(names, ctx))
        if ns.command == "all" and not ns.quick:
            path = results.write(result, "latest")
            made = {} if ns.no_plots else plots.plot_all(result)
            if not made and not ns.no_plots:
                print("(no plots: install the bench extra, pip install -e '.[bench]', for matplotlib)")
        else:
            path = results.write(result, "last-run")
            made = {}
        print(results.markdown(result, made))
        print(f"written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
