"""Events the multiplexer reports; frozen, slotted, dispatched with ``match``."""

from __future__ import annotations

from dataclasses import dataclass

from .connect import ConnectRequest
from .errors import ProtocolError
from .messages import MessageType
from .renewal import RenewalAnswer

__all__ = [
    "CloseRequested",
    "DataReceived",
    "Event",
    "MessageIgnored",
    "ProtocolViolation",
    "RenewalAnswered",
    "RenewalRequested",
    "StatusReceived",
    "StreamOpened",
    "StreamRemoved",
    "WindowUpdate",
]


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """Edge: the cloud asked for a kubelet-API request."""

    connect_id: int
    kind: MessageType
    request: ConnectRequest


@dataclass(frozen=True, slots=True)
class DataReceived:
    connect_id: int
    data: memoryview | bytes
    """A view into the received message: valid as long as it is referenced."""


@dataclass(frozen=True, slots=True)
class StreamRemoved:
    """The peer ended the stream (REMOVE_CONNECT)."""

    connect_id: int


@dataclass(frozen=True, slots=True)
class StatusReceived:
    """Cloud: the edge's answer status for a logs/metrics stream (extension)."""

    connect_id: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    """The peer granted ``increment`` more bytes on the stream (flow feature)."""

    connect_id: int
    increment: int


@dataclass(frozen=True, slots=True)
class RenewalRequested:
    """Cloud: the edge asks for a renewed tunnel certificate (``renew`` feature)."""

    request_id: int
    csr_der: bytes


@dataclass(frozen=True, slots=True)
class RenewalAnswered:
    """Edge: the cloud's answer to renewal request ``request_id`` (``renew`` feature)."""

    request_id: int
    answer: RenewalAnswer


@dataclass(frozen=True, slots=True)
class CloseRequested:
    """The peer asked to end the whole tunnel (CLOSE_CONNECT)."""

    reason: str


@dataclass(frozen=True, slots=True)
class MessageIgnored:
    """A well-formed message that has nowhere to go (unknown ID, unknown type)."""

    connect_id: int
    kind: MessageType | int
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """A malformed message; dropped. ``connect_id`` when one stream is concerned."""

    error: ProtocolError
    connect_id: int | None = None


Event = (
    StreamOpened
    | DataReceived
    | StreamRemoved
    | StatusReceived
    | WindowUpdate
    | RenewalRequested
    | RenewalAnswered
    | CloseRequested
    | MessageIgnored
    | ProtocolViolation
)
