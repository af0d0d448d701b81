"""``cloudstream``: the cloud half of the stream tunnel."""

from __future__ import annotations

import argparse
import logging
import sys

from streamops.admin.jsonlog import add_log_format_argument, setup_logging
from streamops.runner import raise_nofile_limit, serve_main
from streamops.cli import ENV_EPILOG, Parser

from . import app
from .config import CloudConfig, add_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cloudstream", description="kubelet API (10003) and edge tunnel (10004) server",
                    epilog=ENV_EPILOG)
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    add_log_format_argument(parser)
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                        help="event loop; auto takes uvloop when installed (the [uvloop] extra)")
    parser.add_argument(
        "--max-open-files", type=int, metavar="N",
        help="set the open-file limit to N (default: raise it to the hard limit; connection caps follow it)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["doctor"]:  # `cloudstream doctor`: checks with fixes; plain `cloudstream [flags]` serves
        from .doctor import main as doctor

        return doctor(args[1:])
    if args[:1] == ["egress-config"]:  # a subcommand; plain `cloudstream [flags]` serves as before
        from .egress.command import main as egress_config

        return egress_config(args[1:])
    if args[:1] == ["iptables"]:  # `cloudstream iptables sync|cleanup|show`; plain `cloudstream [flags]` serves
        from .iptables.cli import main as iptables_main

        return iptables_main(args[1:])
    ns = build_parser().parse_args(args)
    setup_logging(ns.log_level, ns.log_format)
    soft, hard = raise_nofile_limit(ns.max_open_files, "cloudstream")
    logging.getLogger("cloudstream").info("open-file limit %d (hard %d)", soft, hard)
    return serve_main("cloudstream", ns, CloudConfig.from_args, app.serve)



if __name__ == "__main__":
    sys.exit(main())
