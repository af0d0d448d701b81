"""What both doctors share (streamops.doctor.runner): a run that outlasts its total bound is one
FAIL that says how to find the hanging check; a config error or a non-positive --timeout is exit 2
with the tool's name; the exit code follows the worst check."""

from __future__ import annotations

import argparse
import asyncio
import io

from streamops.doctor.report import FAIL, PASS, WARN, Check
from streamops.doctor.runner import load_config, run_and_print, run_bounded
from streamproto.tunnel.errors import ConfigError


class _Doctor:
    def __init__(self, timeout: float, checks: list[Check], hang: float = 0.0) -> None:
        self.timeout, self.checks, self.hang = timeout, checks, hang

    async def run(self) -> list[Check]:
        await asyncio.sleep(self.hang)
        return self.checks


async def test_a_run_past_its_bound_is_one_fail() -> None:
    doctor = _Doctor(timeout=-4.98, checks=[Check("x", PASS, "fine")], hang=10)  # bound: 0.02 s
    checks = await run_bounded(doctor, steps=1)
    assert [c.status for c in checks] == [FAIL]
    assert "longer than" in checks[0].finding and "--json" in checks[0].fix


def test_exit_codes_and_config_errors(capsys) -> None:
    out = io.StringIO()
    assert run_and_print("edgestream", _Doctor(1.0, [Check("a", PASS, "ok"), Check("b", WARN, "hm", "do x")]),
                         12, False, out) == 0
    assert run_and_print("edgestream", _Doctor(1.0, [Check("a", FAIL, "no", "do y")]), 12, True, out) == 1

    def bad(ns: argparse.Namespace) -> object:
        raise ConfigError("tunnelServer: no port")

    assert load_config("cloudstream", argparse.Namespace(config=None, timeout=3.0), bad) is None
    assert load_config("cloudstream", argparse.Namespace(config=None, timeout=0.0), lambda ns: 1) is None
    err = capsys.readouterr().err
    assert "cloudstream doctor: tunnelServer: no port" in err and "--timeout must be positive" in err
    assert load_config("cloudstream", argparse.Namespace(config=None, timeout=3.0), lambda ns: 7) == (7, {})
