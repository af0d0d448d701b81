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
from ..listener import Limits, Listener, Slot
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
        self.server: Listener | None = None

    async def start(self) -> Listener:
        """Listen on 10003 through the accept layer (caps, handshake timeout, refusals logged)."""
        if self.ssl_context is None:
            raise ValueError("the kubelet API (10003) serves TLS only: no TLS context was given")
        loop = asyncio.get_running_loop()

        def factory(slot: Slot) -> asyncio.StreamReaderProtocol:
            reader = HandoffReader(limit=64 * 1024, loop=loop)
            return asyncio.StreamReaderProtocol(
                reader, lambda r, w: self._on_connection(r, w, slot), loop=loop
            )

        self.server = Listener(
            name="kubelet API",
            host=self.config.stream_address,
            port=self.config.stream_port,
            ssl_context=self.ssl_context,
            limits=Limits.from_config(self.config),
            protocol_factory=factory,
            shutdown_timeout=self.config.shutdown_timeout,
            ca=f"the cluster CA {self.config.tls_stream_ca_file} (--tls-stream-ca-file)",
        )
        return await self.server.start()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(self.connections, timeout=self.config.shutdown_timeout)
        if self.server is not None:
            await self.server.wait_closed()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot | None = None) -> None:
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
            finally:
                if slot is not None:
                    slot.release()
