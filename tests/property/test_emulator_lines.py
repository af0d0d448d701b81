"""The emulator's batched log lines are exactly the lines it writes one at a time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgestream.backends.emulator import EmulatedContainer

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(ns=names, pod=names, name=names, line_size=st.integers(0, 2048),
       first=st.one_of(st.integers(0, 20), st.integers(0, 10**7), st.sampled_from([9, 99, 999, 10**6 - 3])),
       span=st.integers(1, 500), max_bytes=st.integers(0, 70_000))
def test_lines_are_line_by_line(ns: str, pod: str, name: str, line_size: int, first: int, span: int,
                                max_bytes: int) -> None:
    ctr = EmulatedContainer(ns, pod, name, 0, 0.0, line_size)
    end = first + span
    data, after = ctr.lines(first, end, max_bytes)
    assert first < after <= end
    assert data == b"".join(ctr.line(n) for n in range(first, after))
    # at most one line past max_bytes, and never stopping short of it inside one digit count
    assert len(data) - len(ctr.line(after - 1)) < max(max_bytes, 1)
    if after < end and len(str(after)) == len(str(first)):
        assert len(data) + len(ctr.line(after)) > max_bytes


def test_a_chunk_of_a_follow_crosses_digit_counts() -> None:
    ctr = EmulatedContainer("default", "app-0", "main", 0, 0.0, 1024)
    parts, i = [], 95
    while i < 105:
        data, i = ctr.lines(i, 105, 60 * 1024)
        parts.append(data)
    assert b"".join(parts) == b"".join(ctr.line(n) for n in range(95, 105))
    assert len(parts) == 2  # 95-99, then 100-104
