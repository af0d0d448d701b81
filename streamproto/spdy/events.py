"""What a SPDY ``Session`` reports after ``receive_data``: frozen dataclasses, h11/h2 style."""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Headers

__all__ = [
    "DataReceived",
    "Event",
    "FrameIgnored",
    "GoAwayReceived",
    "HeadersReceived",
    "PingAcknowledged",
    "PingReceived",
    "SessionTerminated",
    "SettingsReceived",
    "StreamEnded",
    "StreamOpened",
    "StreamReplied",
    "StreamReset",
    "WindowUpdated",
]


@dataclass(frozen=True, slots=True)
class Event:
    pass


@dataclass(frozen=True, slots=True)
class StreamOpened(Event):
    """The peer's SYN_STREAM (answer it with ``reply`` or ``reset``)."""

    stream_id: int
    headers: Headers
    fin: bool = False
    """The peer will send nothing on it (its half is closed already)."""
    associated_to: int = 0
    priority: int = 0
    unidirectional: bool = False

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (lower case), like Go's ``Header.Get``."""
        return next((v for k, v in self.headers if k == name), None)


@dataclass(frozen=True, slots=True)
class StreamReplied(Event):
    """SYN_REPLY to a stream we opened."""

    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, slots=True)
class HeadersReceived(Event):
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """Payload bytes of a DATA frame (a large frame may arrive as several events).
    Hand its length to ``consumed`` once the application took it."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded(Event):
    """The peer half-closed the stream (FIN): no more data from it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset(Event):
    """The stream is gone: the peer's RST_STREAM (``remote``), or ours for a peer's error."""

    stream_id: int
    status: int
    remote: bool = True
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SettingsReceived(Event):
    settings: dict[int, int]


@dataclass(frozen=True, slots=True)
class PingReceived(Event):
    """The peer pinged; the echo is already queued."""

    ping_id: int


@dataclass(frozen=True, slots=True)
class PingAcknowledged(Event):
    ping_id: int


@dataclass(frozen=True, slots=True)
class WindowUpdated(Event):
    stream_id: int
    """0 for the session window."""
    delta: int


@dataclass(frozen=True, slots=True)
class GoAwayReceived(Event):
    last_good_stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class FrameIgnored(Event):
    """A frame that changes nothing: late data for a closed stream, an unknown type, ..."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionTerminated(Event):
    """The session is over. ``remote`` False: we queued GOAWAY with ``status`` for ``error``;
    flush ``data_to_send`` and close the connection."""

    status: int
    error: str
    remote: bool = False
