"""The project's one exception hierarchy.

::

    TunnelError                               root: everything we raise derives from it
    ├── ProtocolError                         the wire protocol was violated (.remote)
    │   ├── FrameError(ProtocolError, ValueError)   undecodable message: bad varint, empty
    │   ├── SessionStateError                 valid message in the wrong state
    │   └── LimitExceeded                     payload / stream count over a configured limit
    ├── StreamClosed                          use of a stream after close (.connect_id, .reason)
    ├── TunnelClosed                          the node's whole tunnel went away (.reason)
    ├── NodeUnavailable                       cloud: no tunnel for the node (.node)
    ├── BackendError                          edge: the backend (CRI, emulator) failed
    │   ├── NotFound                          no such pod / container
    │   ├── NotRunning                        container not running
    │   └── Ambiguous                         more than one match
    ├── ConfigError(TunnelError, ValueError)  bad configuration
    └── AuthError                             caller not authenticated / not authorized

Every error carries ``error_status_hint``: the HTTP status the kubelet API answers with.
"""

from __future__ import annotations

__all__ = [
    "Ambiguous",
    "AuthError",
    "BackendError",
    "ConfigError",
    "FrameError",
    "LimitExceeded",
    "NodeUnavailable",
    "NotFound",
    "NotRunning",
    "ProtocolError",
    "SessionStateError",
    "StreamClosed",
    "TunnelClosed",
    "TunnelError",
]


class TunnelError(Exception):
    """Root of every exception the project raises."""

    error_status_hint: int = 500


class ProtocolError(TunnelError):
    """The tunnel protocol was violated. ``remote`` is True when the peer did it."""

    error_status_hint = 502

    def __init__(self, message: str, *, remote: bool = True) -> None:
        super().__init__(message)
        self.remote = remote


class FrameError(ProtocolError, ValueError):
    """A tunnel message could not be decoded."""


class SessionStateError(ProtocolError):
    """A valid message arrived in a state that does not accept it."""


class LimitExceeded(ProtocolError):
    """A payload, a stream count or a buffer went over its configured limit."""

    error_status_hint = 503


class StreamClosed(TunnelError):
    """The stream is closed; ``reason`` says why."""

    error_status_hint = 502

    def __init__(self, connect_id: int, reason: str = "") -> None:
        super().__init__(f"stream {connect_id} closed" + (f": {reason}" if reason else ""))
        self.connect_id = connect_id
        self.reason = reason


class TunnelClosed(TunnelError):
    """The whole tunnel to a node went away."""

    error_status_hint = 502

    def __init__(self, reason: str = "") -> None:
        super().__init__(f"tunnel closed: {reason}" if reason else "tunnel closed")
        self.reason = reason


class NodeUnavailable(TunnelError):
    """The cloud has no live tunnel for the node."""

    error_status_hint = 503

    def __init__(self, node: str, message: str) -> None:
        super().__init__(message)
        self.node = node


class BackendError(TunnelError):
    """The edge's backend (containerd CRI, emulator, kubelet) failed."""

    error_status_hint = 500


class NotFound(BackendError):
    error_status_hint = 404


class NotRunning(BackendError):
    error_status_hint = 400


class Ambiguous(BackendError):
    error_status_hint = 409


class ConfigError(TunnelError, ValueError):
    """The configuration is invalid."""


class AuthError(TunnelError):
    """The caller is not authenticated (401) or not authorized (403)."""

    error_status_hint = 403

    def __init__(self, message: str, *, status: int = 403) -> None:
        super().__init__(message)
        self.error_status_hint = status
