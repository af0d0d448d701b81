"""Log options are parsed as the kubelet's Go conversion does: integers by ParseInt's rules."""

from __future__ import annotations

import pytest

from edgestream.logs_options import BadLogOptions, LogOptions


@pytest.mark.parametrize("value", ["1_0", " 5", "5 ", "٣", "²", "0x5", "", "9223372036854775808", "1e3"])
def test_integers_python_would_take_but_go_refuses(value: str) -> None:
    with pytest.raises(BadLogOptions, match="tailLines"):
        LogOptions.from_query(f"tailLines={value}")


@pytest.mark.parametrize(("value", "expected"), [("10", 10), ("+7", 7), ("007", 7), ("9223372036854775807", 2**63 - 1)])
def test_integers_go_accepts(value: str, expected: int) -> None:
    assert LogOptions.from_query(f"tailLines={value.replace('+', '%2B')}").tail_lines == expected
