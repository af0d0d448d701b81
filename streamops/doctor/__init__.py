"""``doctor``: what both ``cloudstream doctor`` and ``edgestream doctor`` share: the result of a
check and its rendering (``report``), and bounded network probes (``probes``)."""

from __future__ import annotations

from .report import FAIL, PASS, SKIP, WARN, Check, exit_code, render_human, render_json

__all__ = ["FAIL", "PASS", "SKIP", "WARN", "Check", "exit_code", "render_human", "render_json"]
