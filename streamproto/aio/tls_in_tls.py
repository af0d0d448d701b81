"""TLS inside TLS on CPython 3.11's asyncio (the egress front's CONNECT tunnels, and clients of it).

``_SSLProtocolTransport._force_close(exc)`` calls ``SSLProtocol._abort(exc)``, which takes no
argument before 3.12: any fatal error of an inner TLS layer (a bad record, data after
close_notify) then raises TypeError inside a loop callback instead of closing the connection.
``fix_outer`` gives the outer transport the 3.12 behaviour. uvloop's TLS is not affected.
"""

from __future__ import annotations

import asyncio
import sys

__all__ = ["fix_outer"]


def fix_outer(transport: asyncio.BaseTransport) -> None:
    """Call on the transport ``start_tls`` is about to wrap (no-op where not needed)."""
    if sys.version_info >= (3, 12):
        return
    from asyncio import sslproto

    if isinstance(transport, sslproto._SSLProtocolTransport):

        def force_close(exc: BaseException | None) -> None:
            transport._closed = True  # type: ignore[attr-defined]
            transport.abort()

        transport._force_close = force_close  # type: ignore[attr-defined]
