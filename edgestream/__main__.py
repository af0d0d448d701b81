"""``edgestream``: the edge half of the stream tunnel."""

from __future__ import annotations

import argparse
import sys

from streamops.admin.jsonlog import add_log_format_argument, setup_logging
from streamops.runner import raise_nofile_limit, serve_main
from streamops.cli import ENV_EPILOG, Parser

from . import app
from .config import EdgeConfig, add_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="edgestream", description="edge agent of the stream tunnel",
                    epilog="edgestream emulate --help: N emulated nodes in one process. " + ENV_EPILOG)
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    add_log_format_argument(parser)
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                        help="event loop; auto takes uvloop when installed (the [uvloop] extra)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["emulate"]:  # `edgestream emulate --nodes N`: a fleet of emulated nodes in one process
        from .fleet import main as emulate

        return emulate(args[1:])
    if args[:1] == ["doctor"]:  # `edgestream doctor`: checks with fixes; plain `edgestream [flags]` serves
        from .doctor import main as doctor

        return doctor(args[1:])
    ns = build_parser().parse_args(args)
    setup_logging(ns.log_level, ns.log_format)
    raise_nofile_limit(tool="edgestream")
    return serve_main("edgestream", ns, EdgeConfig.from_args, app.serve)


if __name__ == "__main__":
    sys.exit(main())
