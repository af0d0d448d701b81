"""``python -m bench compare REV [scenarios...]``: the check a hot-path change runs before commit.

A git worktree of REV (a temporary directory) and the working tree each run their own
cloudstream/edgestream (the bench code, its clients and readers are this checkout's); every
scenario measures both in the same run, interleaved, several rounds; printed and written:
each metric's median on both and the ratio working tree / REV."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from testkit.processes import ROOT

from .core import git


class Worktree:
    """``git worktree add --detach`` of REV in a temp dir; removed on exit."""

    def __init__(self, rev: str) -> None:
        self.rev = rev
        self.sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
        if not self.sha:
            raise SystemExit(f"bench compare: {rev!r} is not a commit of {ROOT}")
        self.tmp = Path(tempfile.mkdtemp(prefix="kes-bench-compare-"))
        self.path = self.tmp / "tree"

    def __enter__(self) -> Worktree:
        subprocess.run(["git", "worktree", "add", "--detach", str(self.path), self.sha], cwd=ROOT, check=True,
                       capture_output=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["git", "worktree", "remove", "--force", str(self.path)], cwd=ROOT, capture_output=True)
        subprocess.run(["rm", "-rf", str(self.tmp)])


def ratios(result: dict[str, Any], base: str, work: str) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, scenario in result["scenarios"].items():
        b = scenario["variants"].get(base, {}).get("summary", {})
        w = scenario["variants"].get(work, {}).get("summary", {})
        for key in scenario["columns"]:
            if key in b and key in w and b[key]["median"]:
                out.setdefault(name, {})[key] = {"base": b[key]["median"], "work": w[key]["median"],
                                                 "ratio": round(w[key]["median"] / b[key]["median"], 3)}
    return out
