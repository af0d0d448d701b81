"""KubeEdge's stream-tunnel protocol, sans I/O."""

from __future__ import annotations

from .backoff import backoff
from .budget import Budget, ViolationCounter
from .connect import EDGED_HOST, ConnectRequest
from .errors import (
    Ambiguous,
    AuthError,
    BackendError,
    ConfigError,
    FrameError,
    LimitExceeded,
    NodeUnavailable,
    NotFound,
    NotRunning,
    ProtocolError,
    SessionStateError,
    StreamClosed,
    TunnelClosed,
    TunnelError,
)
from .events import (
    CloseRequested,
    DataReceived,
    Event,
    MessageIgnored,
    ProtocolViolation,
    RenewalAnswered,
    RenewalRequested,
    StatusReceived,
    StreamOpened,
    StreamRemoved,
    WindowUpdate,
)
from .features import FEATURES_HEADER, FLOW_WINDOW, Feature, format_features, negotiate, parse_features
from .messages import GO_MAX_DATA, HEADROOM, FrameBuffer, Message, MessageType, decode, encode, encode_header
from .mux import Mux, Role, Stream, StreamState
from .renewal import RenewalAnswer, RenewalStatus

__all__ = [
    "Budget",
    "ViolationCounter",
    "EDGED_HOST",
    "FEATURES_HEADER",
    "FLOW_WINDOW",
    "GO_MAX_DATA",
    "HEADROOM",
    "Ambiguous",
    "AuthError",
    "BackendError",
    "CloseRequested",
    "ConfigError",
    "ConnectRequest",
    "DataReceived",
    "Event",
    "Feature",
    "FrameBuffer",
    "FrameError",
    "LimitExceeded",
    "Message",
    "MessageIgnored",
    "MessageType",
    "Mux",
    "NodeUnavailable",
    "NotFound",
    "NotRunning",
    "ProtocolError",
    "ProtocolViolation",
    "RenewalAnswer",
    "RenewalAnswered",
    "RenewalRequested",
    "RenewalStatus",
    "Role",
    "SessionStateError",
    "StatusReceived",
    "Stream",
    "StreamClosed",
    "StreamOpened",
    "StreamRemoved",
    "StreamState",
    "TunnelClosed",
    "TunnelError",
    "WindowUpdate",
    "backoff",
    "decode",
    "encode",
    "encode_header",
    "format_features",
    "negotiate",
    "parse_features",
]
