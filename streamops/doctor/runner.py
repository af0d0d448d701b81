"""What both doctors' command lines share: reading the config as the tool itself would, running
the checks within a total bound, printing them, and the exit code (0 nothing failed, 1 a FAIL,
2 a usage or config error)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

from streamops.kubeedge_config import load_yaml
from streamproto.tunnel.errors import ConfigError

from .report import FAIL, Check, exit_code, render_human, render_json

__all__ = ["Doctor", "load_config", "run_bounded", "run_and_print"]

C = TypeVar("C")


class Doctor(Protocol):
    timeout: float
    """Bound of each network step (seconds)."""

    async def run(self) -> list[Check]: ...


def load_config(tool: str, ns: argparse.Namespace, parse: Callable[[argparse.Namespace], C]
                ) -> tuple[C, dict[str, Any]] | None:
    """The config from the flags the tool runs with and its YAML (``--config``), as the tool reads
    them; None after saying on stderr why not (exit 2)."""
    logging.getLogger(f"{tool}.config").setLevel(logging.ERROR)  # doctor reports that itself
    try:
        config = parse(ns)
        yaml = load_yaml(Path(ns.config)) if ns.config else {}
    except ConfigError as exc:
        print(f"{tool} doctor: {exc}", file=sys.stderr)
        return None
    if ns.timeout <= 0:
        print(f"{tool} doctor: --timeout must be positive", file=sys.stderr)
        return None
    return config, yaml


async def run_bounded(doctor: Doctor, steps: int) -> list[Check]:
    """Every check within a total bound: each network step has ``timeout``, the whole run at most
    about ``steps`` of them."""
    limit = doctor.timeout * steps + 5
    try:
        async with asyncio.timeout(limit):
            return await doctor.run()
    except TimeoutError:
        return [Check("doctor", FAIL, f"the checks took longer than {limit:g} s in total",
                      "rerun with a smaller --timeout, or --json to see which check hangs")]


def run_and_print(tool: str, doctor: Doctor, steps: int, as_json: bool, out: TextIO) -> int:
    checks = asyncio.run(run_bounded(doctor, steps))
    out.write(render_json(tool, checks) if as_json else render_human(tool, checks))
    return exit_code(checks)
