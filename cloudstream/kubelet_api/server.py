"""The HTTPS kubelet-API server (10003): the listener and its accept path.

Each accepted TLS connection is served by ``connection.Connection`` (HTTP/1.1 heads by h11,
authorization in ``authz``, routes in ``routes``, relays in ``forward``/``relay``, the audit
log in ``audit``); this module only accepts, tracks and closes connections.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from ..config import CloudConfig
from ..listener import Limits, Listener, Slot
from ..registry import SessionRegistry
from .connection import Connection
from .relay import HandoffReader
from .resolve import ResolvedTarget

__all__ = ["KubeletApiServer"]

logger = logging.getLogger(__name__)


class KubeletApiServer:
    def __init__(self, config: CloudConfig, registry: SessionRegistry, ssl_context: ssl.SSLContext | None) -> None:
        self.config = config
        self.registry = registry
        self.ssl_context = ssl_context
        self.connections: set[asyncio.Task[None]] = set()
        self.busy: set[asyncio.Task[None]] = set()
        """Connections serving a request now (the others wait for a head: idle)."""
        self.draining = False
        """Shutting down: a connection ends after its current request."""
        self.server: Listener | None = None
        self.tunnel_port = config.tunnel_port
        """The port edges dial, as bound (the app sets it: ``--tunnel-port 0`` picks one)."""

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

    def stop_accepting(self) -> None:
        """Shutdown, step 1: no new connection, idle ones end now, busy ones after their request."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        for task in self.connections - self.busy:
            task.cancel()

    async def wait_busy(self, timeout: float, interrupt: asyncio.Event | None = None) -> int:
        """Until the running requests end, ``timeout`` passes or ``interrupt`` is set; returns
        how many still run."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        stop = asyncio.ensure_future(interrupt.wait()) if interrupt is not None else None
        try:
            for _ in range(len(self.busy) + 1):  # each turn sees at least one end, or stops
                left = deadline - loop.time()
                if not self.busy or left <= 0 or (stop is not None and stop.done()):
                    break
                waits: set[asyncio.Future[Any]] = set(self.busy)
                if stop is not None:
                    waits.add(stop)
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stop is not None:
                stop.cancel()
        return len(self.busy)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(self.connections, timeout=self.config.shutdown_timeout)
        if self.server is not None:
            await self.server.wait_closed()

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot | None, target: ResolvedTarget
    ) -> None:
        """Serve a TLS stream that reached us another way (the egress front's CONNECT), exactly
        as a connection to this port, the node fixed by ``target``; closes it, releases ``slot``."""
        await self._on_connection(reader, writer, slot, target)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot | None = None,
        target: ResolvedTarget | None = None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await Connection(self, reader, writer, target).serve()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() (shutdown) cancelled it. End normally: nobody awaits this task, and 3.11's
            # StreamReaderProtocol logs a cancelled handler task as an ERROR with a traceback.
            pass
        except Exception:  # a bug: log it, end this connection, keep serving the others
            self.registry.stats.errors["bug"] += 1
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
