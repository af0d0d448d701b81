"""``edgestream doctor [edgestream's flags] [--json]``: reads the config exactly as ``edgestream``
would (edgecore.yaml through the same loader, then the same flags), runs the checks, prints
them, exits 0 (nothing failed) or 1 (a FAIL); 2 on a usage or config error."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from streamcerts.verify import KUBEEDGE_ROOT
from streamops.cli import Parser
from streamops.doctor.runner import load_config, run_and_print

from ..config import EdgeConfig, add_arguments
from .checks import EdgeDoctor

STEPS = 12
"""The whole run takes at most about this many ``--timeout``s."""

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="edgestream doctor",
        description="check this edge node: edgecore.yaml, the tunnel server's address, the mTLS handshake, this "
                    "node's certificate, the local backend, the tunnel; give it the flags edgestream runs with",
    )
    add_arguments(p)  # the very flags edgestream reads
    d = p.add_argument_group("doctor")
    d.add_argument("--json", action="store_true", help="print JSON instead of aligned text (off)")
    d.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                   help="bound of each network check (default 3; the whole run at most 12x that)")
    return p


def main(argv: list[str], out: TextIO = sys.stdout) -> int:
    ns = build_parser().parse_args(argv)
    loaded = load_config("edgestream", ns, EdgeConfig.from_args)
    if loaded is None:
        return 2
    config, yaml = loaded
    doctor = EdgeDoctor(config=config, yaml_path=Path(ns.config) if ns.config else None, yaml=yaml,
                        pki_root=Path(ns.pki_dir) if ns.pki_dir else KUBEEDGE_ROOT, timeout=ns.timeout)
    return run_and_print("edgestream", doctor, STEPS, ns.json, out)
