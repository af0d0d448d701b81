"""The kubelet's log query options (``PodLogOptions``), parsed and validated once.

Pure: the CRI and emulator backends share it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs

from streamproto.tunnel.errors import BackendError

__all__ = ["BadLogOptions", "LogOptions"]


_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")


class BadLogOptions(BackendError):
    error_status_hint = 400


def _bool(values: list[str]) -> bool:
    return values[-1].lower() in ("true", "1", "yes") if values else False


def _int(name: str, values: list[str], minimum: int) -> int | None:
    if not values:
        return None
    if not _INTEGER.fullmatch(values[-1]):  # as Go's ParseInt: no "1_0", no " 5", no non-ASCII digits
        raise BadLogOptions(f"{name}={values[-1]!r} is not an integer")
    value = int(values[-1])
    if not -(2**63) <= value < 2**63:
        raise BadLogOptions(f"{name}={values[-1]!r} is out of range")
    if value < minimum:
        raise BadLogOptions(f"{name} must be >= {minimum}")
    return value


@dataclass(frozen=True, slots=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: datetime | None = None
    limit_bytes: int | None = None
    stream: str = "All"
    """``Stdout``, ``Stderr`` or ``All`` (the kubelet's ``stream`` option)."""

    @classmethod
    def from_query(cls, raw_query: str) -> LogOptions:
        q = parse_qs(raw_query, keep_blank_values=True)
        since_time = None
        if q.get("sinceTime"):
            text = q["sinceTime"][-1].replace("Z", "+00:00")
            try:
                since_time = datetime.fromisoformat(text)
            except ValueError:
                raise BadLogOptions(f"sinceTime={q['sinceTime'][-1]!r} is not RFC 3339") from None
        stream = q.get("stream", ["All"])[-1] or "All"
        if stream not in ("All", "Stdout", "Stderr"):
            raise BadLogOptions(f"stream={stream!r}: use Stdout, Stderr or All")
        options = cls(
            follow=_bool(q.get("follow", [])),
            previous=_bool(q.get("previous", [])),
            timestamps=_bool(q.get("timestamps", [])),
            tail_lines=_int("tailLines", q.get("tailLines", []), 0),
            since_seconds=_int("sinceSeconds", q.get("sinceSeconds", []), 1),
            since_time=since_time,
            limit_bytes=_int("limitBytes", q.get("limitBytes", []), 1),
            stream=stream,
        )
        if options.since_seconds is not None and options.since_time is not None:
            raise BadLogOptions("sinceSeconds and sinceTime are mutually exclusive")
        return options
