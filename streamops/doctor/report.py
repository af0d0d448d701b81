"""One doctor check's result and the two renderings (aligned text for people, JSON for tools).

Pure: no I/O. A check says PASS, WARN, FAIL or SKIP, one line of what it found, and when it is
not a PASS the fix: the exact command or config line.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["FAIL", "PASS", "SKIP", "WARN", "Check", "exit_code", "render_human", "render_json", "summary"]

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
_ORDER = (PASS, WARN, FAIL, SKIP)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    """Short and stable (``config``, ``port 10003``, ``cert stream server (10003)``...): tools match it."""
    status: str
    finding: str
    """One line: what was found."""
    fix: str = ""
    """The command or config line that fixes it (empty on PASS)."""

    def __post_init__(self) -> None:
        if self.status not in _ORDER:
            raise ValueError(f"status {self.status!r}: one of {_ORDER}")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def exit_code(checks: Sequence[Check]) -> int:
    """0 when nothing failed (warnings and skips included), 1 on any FAIL."""
    return 1 if any(c.status == FAIL for c in checks) else 0


def summary(checks: Sequence[Check]) -> dict[str, int]:
    counts = Counter(c.status for c in checks)
    return {s.lower(): counts.get(s, 0) for s in _ORDER}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_human(side: str, checks: Sequence[Check]) -> str:
    """``STATUS  name  finding`` aligned, the fix indented under anything that is not a PASS,
    then a summary line."""
    width = max((len(c.name) for c in checks), default=0)
    lines: list[str] = []
    for c in checks:
        lines.append(f"{c.status}  {c.name.ljust(width)}  {_one_line(c.finding)}")
        if c.fix and c.status != PASS:
            lines.append(f"{'':4}  {'':{width}}  fix: {_one_line(c.fix)}")
    s = summary(checks)
    verdict = "FAIL" if exit_code(checks) else "OK"
    lines.append(f"{side} doctor: {verdict}: {len(checks)} checks, {s['pass']} pass, {s['warn']} warn, "
                 f"{s['fail']} fail, {s['skip']} skip")
    return "\n".join(lines) + "\n"


def render_json(side: str, checks: Sequence[Check]) -> str:
    doc = {"side": side, "ok": exit_code(checks) == 0, "summary": summary(checks),
           "checks": [c.as_dict() for c in checks]}
    return json.dumps(doc, indent=2) + "\n"
