"""The doctor's report: statuses, exit code, aligned text with the fix under a non-PASS, JSON."""

from __future__ import annotations

import json

import pytest

from streamops.doctor.report import Check, exit_code, render_human, render_json

CHECKS = [
    Check("config", "PASS", "modules.cloudStream.enable: true"),
    Check("port kubelet API 10003", "FAIL", "127.0.0.1:10003: connection refused", "start cloudstream"),
    Check("tunnels", "SKIP", "the admin port is off", "run cloudstream with --admin-port 10005"),
    Check("cert x", "WARN", "expires in 3 days\nsoon", "streamcerts issue"),
]


def test_exit_code_is_one_only_on_a_fail() -> None:
    assert exit_code(CHECKS) == 1
    assert exit_code([c for c in CHECKS if c.status != "FAIL"]) == 0
    assert exit_code([]) == 0


def test_human_lines_are_aligned_with_the_fix_under_them() -> None:
    text = render_human("cloudstream", CHECKS)
    lines = text.splitlines()
    assert lines[0] == "PASS  config                  modules.cloudStream.enable: true"
    assert lines[1] == "FAIL  port kubelet API 10003  127.0.0.1:10003: connection refused"
    assert lines[2] == "                              fix: start cloudstream"
    assert lines[5] == "WARN  cert x                  expires in 3 days soon"  # one line, always
    assert lines[-1] == "cloudstream doctor: FAIL: 4 checks, 1 pass, 1 warn, 1 fail, 1 skip"
    assert "fix" not in lines[0]


def test_json_has_every_check_and_the_verdict() -> None:
    doc = json.loads(render_json("edgestream", CHECKS))
    assert doc["side"] == "edgestream" and doc["ok"] is False
    assert doc["summary"] == {"pass": 1, "warn": 1, "fail": 1, "skip": 1}
    assert doc["checks"][1] == {"name": "port kubelet API 10003", "status": "FAIL",
                                "finding": "127.0.0.1:10003: connection refused", "fix": "start cloudstream"}


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError):
        Check("x", "OK", "")
