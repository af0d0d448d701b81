"""The thin asyncio layer both sides share (as websockets has ``websockets.asyncio``).

``streamproto.tunnel`` stays pure; this package holds what needs an event loop: the bounded
per-stream buffer and the tunnel connection that drives a ``Mux`` over a WebSocket.
"""

from __future__ import annotations

from .buffer import StreamBuffer
from .connection import TunnelConnection
from .ratelog import RateLimitedLog

__all__ = ["RateLimitedLog", "StreamBuffer", "TunnelConnection"]
