"""``edgestream``: the edge half of the stream tunnel."""

from __future__ import annotations

import argparse
import logging
import resource
import sys

from streamops.admin.jsonlog import add_log_format_argument, setup_logging
from streamops.runner import run
from streamops.cli import ENV_EPILOG, Parser
from streamproto.tunnel.errors import ConfigError, TunnelError

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
    _raise_nofile_limit()
    # websockets' DEBUG lines show frame payloads, which can carry request headers: never.
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.getLogger().level))
    try:
        config = EdgeConfig.from_args(ns)
    except ConfigError as exc:
        print(f"edgestream: {exc}", file=sys.stderr)
        return 2
    try:
        run(app.serve(config), ns.loop)
    except KeyboardInterrupt:
        return 130
    except (OSError, TunnelError) as exc:
        logging.getLogger("edgestream").error("fatal: %s", exc)
        return 1
    return 0


def _raise_nofile_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (systemd's default soft limit is 1,024): every
    stream holds a backend socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            logging.getLogger("edgestream").warning("! cannot raise the open-file limit %d to %d: %s", soft, hard, exc)


if __name__ == "__main__":
    sys.exit(main())
