"""The HTTPS kubelet-API server (10003): the listener and its accept path.

Each accepted TLS connection is served by ``connection.Connection`` (HTTP/1.1 heads by h11,
authorization in ``authz``, routes in ``routes``, relays in ``forward``/``relay``, the audit
log in ``audit``); this module only accepts, tracks and closes connections.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from ..config import CloudConfig
from ..registry import SessionRegistry
from .connection import Connection
from .relay import HandoffReader

__all__ = ["KubeletApiServer"]

logger = logging.getLogger(__name__)


class KubeletApiServer:
    def __init__(self, config: CloudConfig, registry: SessionRegistry, ssl_context: ssl.SSLContext | None) -> None:
        self.config = config
        self.registry = registry
        self.ssl_context = ssl_context
        self.connections: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.StreamReaderProtocol:
            reader = HandoffReader(limit=64 * 1024, loop=loop)
            return asyncio.StreamReaderProtocol(reader, self._on_connection, loop=loop)

        self.server = await loop.create_server(
            factory,
            self.config.stream_address,
            self.config.stream_port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=10,
        )
        return self.server

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(self.connections, timeout=self.config.shutdown_timeout)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await Connection(self, reader, writer).serve()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() (shutdown) cancelled it. End normally: nobody awaits this task, and 3.11's
            # StreamReaderProtocol logs a cancelled handler task as an ERROR with a traceback.
            pass
        except Exception:  # a bug: log it, end this connection, keep serving the others
            logger.exception("! kubelet API connection from %s failed", writer.get_extra_info("peername"))
        finally:
            self.connections.discard(task)
            writer.close()
            try:
                async with asyncio.timeout(2):
                    await writer.wait_closed()
            except (TimeoutError, ConnectionError, ssl.SSLError):
                writer.transport.abort()
