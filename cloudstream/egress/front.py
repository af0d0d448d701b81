"""The egress-selector front: kube-apiserver's ``cluster`` egress over HTTP CONNECT.

Two transports, as ``EgressSelectorConfiguration`` has them: ``tcp`` (mutual TLS through the
accept layer of ``cloudstream/listener.py``: caps, handshake timeout, per-address limits) and
``uds`` (a unix socket, mode 0600, plain). On each connection:

1. the CONNECT head (h11, ``max_head`` bytes, ``head_timeout`` from the start), and over TCP
   the client certificate's identity against ``--egress-allow``;
2. ``connect.decide``: a connected edge node's kubelet port -> ``200 Connection established``,
   then the API server's TLS to "the kubelet" is terminated with 10003's context and the stream
   is served by 10003's own connection code, the node fixed by the CONNECT target
   (``ResolvedTarget``); a ``--egress-direct`` target -> dialled and spliced; anything else
   -> a refusal whose status line says why (the API server quotes it) and whose body names
   target, reason and fix, logged once per kind (rate-limited).

Every connection task is also counted among 10003's connections (``state`` line, shutdown).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from streamcerts import Identity, peer_identity, server_context
from streamproto.aio.ratelog import RateLimitedLog
from streamproto.aio.tls_in_tls import fix_outer

from ..kubelet_api.relay import HandoffReader
from ..kubelet_api.resolve import ResolvedTarget
from ..listener import Limits, Listener, Slot
from ..tls_alert import ALERT, Alert
from .connect import ESTABLISHED, ConnectHeadReader, ConnectRefused, ConnectTarget, Route, decide, refusal_response
from .splice import dial_direct, splice

if TYPE_CHECKING:
    from ..config import CloudConfig
    from ..kubelet_api.server import KubeletApiServer
    from ..registry import SessionRegistry

__all__ = ["EgressFront"]

logger = logging.getLogger(__name__)

_READ = 16 * 1024
_LINGER = 0.5


class EgressFront:
    def __init__(self, config: CloudConfig, registry: SessionRegistry, api: KubeletApiServer) -> None:
        self.config = config
        self.egress = config.egress
        self.registry = registry
        self.api = api
        self.refusals = RateLimitedLog(logger, interval=10.0, max_kinds=64)
        self.tcp: Listener | None = None
        self.uds: asyncio.AbstractServer | None = None
        self.uds_path: Path | None = None
        self.uds_open = 0
        self.connections: set[asyncio.Task[None]] = set()
        self.port = 0
        allow = self.egress.allow or tuple((rule.kind, rule.name) for rule in config.access)
        self.allow = frozenset(allow)

    # ------------------------------------------------------------------ listening

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        egress, config = self.egress, self.config
        if egress.port is not None:
            tls = server_context(
                egress.cert_file or config.tls_stream_cert_file, egress.key_file or config.tls_stream_private_key_file,
                egress.ca_file or config.tls_stream_ca_file, require_client_cert=True, alpn=None,
            )

            def factory(slot: Slot) -> asyncio.StreamReaderProtocol:
                reader = HandoffReader(limit=64 * 1024, loop=loop)
                return asyncio.StreamReaderProtocol(
                    reader, lambda r, w: self._on_tcp(r, w, slot), loop=loop  # type: ignore[misc]
                )

            ca = egress.ca_file or config.tls_stream_ca_file
            self.tcp = Listener(
                name="egress front", host=egress.address, port=egress.port, ssl_context=tls,
                limits=Limits.from_config(config), protocol_factory=factory, shutdown_timeout=config.shutdown_timeout,
                ca=f"{ca} (--egress-ca-file)",
            )
            await self.tcp.start()
            self.port = int(self.tcp.sockets[0].getsockname()[1])
            logger.info("egress front on %s:%d (HTTP CONNECT over mutual TLS; CA %s)", egress.address, self.port, ca)
        if egress.uds is not None:
            sock = _bind_unix(egress.uds)
            self.uds_path = egress.uds

            def uds_factory() -> asyncio.BaseProtocol:
                if self.uds_open >= config.max_connections:
                    self.refusals.event("uds-cap", "! egress front %s: refused a connection: %d are open "
                                        "(--max-connections %d)", egress.uds, self.uds_open, config.max_connections)
                    return _Refuse()
                reader = HandoffReader(limit=64 * 1024, loop=loop)
                return asyncio.StreamReaderProtocol(reader, self._on_uds, loop=loop)  # type: ignore[arg-type]

            self.uds = await loop.create_unix_server(uds_factory, sock=sock)
            logger.info("egress front on unix socket %s (HTTP CONNECT, mode 0600)", egress.uds)

    def stop_accepting(self) -> None:
        """SIGTERM: no new CONNECTs; the running ones go on (their streams get the grace)."""
        if self.tcp is not None:
            self.tcp.close()
        if self.uds is not None:
            self.uds.close()
            if self.uds_path is not None:
                try:
                    os.unlink(self.uds_path)
                except OSError:
                    pass
                self.uds_path = None

    async def close(self) -> None:
        """Stop accepting and end every egress connection (before 10003 closes)."""
        self.stop_accepting()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(self.connections, timeout=self.config.shutdown_timeout)
        if self.tcp is not None:
            await self.tcp.wait_closed()
        self.refusals.close()

    # ------------------------------------------------------------------ connections

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot) -> None:
        peer = writer.get_extra_info("peername")
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        identity = peer_identity(der) if der else None
        await self._serve(reader, writer, f"{peer[0]}:{peer[1]}" if peer else "?", identity, slot)

    async def _on_uds(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.uds_open += 1  # counted by live tasks: nothing to undo if a connection dies before its task
        try:
            await self._serve(reader, writer, f"unix:{self.egress.uds}", None, None)
        finally:
            self.uds_open -= 1

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str, identity: Identity | None,
        slot: Slot | None,
    ) -> None:
        # The accept layer's handshake alert lives in this task's context: a failing inner
        # handshake must not write to that (long closed) descriptor, nor raw bytes under TLS.
        ALERT.set(Alert(-1))
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        self.api.connections.add(task)
        handed_off = False
        try:
            head = ConnectHeadReader(self.egress.max_head)
            target = await self._read_head(reader, head)
            if slot is not None and not self._allowed(identity):
                who = f"CN={identity.common_name!r} O={list(identity.organizations)!r}" if identity else "no certificate"
                raise ConnectRefused(
                    403, "client certificate not allowed",
                    f"CONNECT {target}: client certificate {who} may not use the egress front; allowed: "
                    f"{', '.join(f'{k}:{n}' for k, n in sorted(self.allow)) or 'nobody'} (--egress-allow)", "forbidden",
                )
            decision = decide(target, self.registry, self.egress.kubelet_ports, self.egress.direct)
            early = head.early + (reader.take_buffered() if isinstance(reader, HandoffReader) else b"")
            if decision.route is Route.EDGE:
                if early:
                    raise ConnectRefused(400, "data before the CONNECT answer",
                                         f"CONNECT {target}: {len(early)} bytes arrived before our answer; the TLS "
                                         "client inside must wait for the 200", "early-data")
                assert decision.node is not None
                inner = await self._inner_tls(writer, target, peer)
                if inner is None:
                    return
                handed_off = True
                resolved = ResolvedTarget(key=("ip", target.host) if target.is_ip else ("node", target.host),
                                          port=target.port, via=f"egress CONNECT {target} from {peer}")
                await self.api.serve_connection(inner[0], inner[1], slot, resolved)
            else:
                await self._direct(reader, writer, target, early)
        except ConnectRefused as exc:
            await self._refuse(reader, writer, peer, exc)
        except TimeoutError:
            self.refusals.event(("head-timeout", peer.rsplit(":", 1)[0]),
                                "! egress front %s: no complete CONNECT head within %g s; closed", peer,
                                self.egress.head_timeout)
        except (EOFError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # shutdown: nobody awaits this task (see KubeletApiServer._on_connection)
        except Exception:  # a bug: log it, end this connection, keep serving the others
            logger.exception("! egress front: connection from %s failed", peer)
        finally:
            self.connections.discard(task)
            self.api.connections.discard(task)
            if not handed_off:
                await _close(writer)
                if slot is not None:
                    slot.release()

    async def _read_head(self, reader: asyncio.StreamReader, head: ConnectHeadReader) -> ConnectTarget:
        async with asyncio.timeout(self.egress.head_timeout):
            while True:
                target = head.feed(await reader.read(_READ))
                if target is not None:
                    return target

    def _allowed(self, identity: Identity | None) -> bool:
        if identity is None:
            return False
        return ("cn", identity.common_name) in self.allow or any(("group", o) in self.allow
                                                                 for o in identity.organizations)

    async def _inner_tls(
        self, writer: asyncio.StreamWriter, target: ConnectTarget, peer: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Answer 200 and terminate the API server's TLS "to the kubelet" with 10003's context.

        Nothing may run between the write and ``start_tls`` taking the transport over (no
        await): the client's ClientHello must reach the TLS layer, not the old reader."""
        loop = asyncio.get_running_loop()
        context = self.api.ssl_context
        assert context is not None
        reader = HandoffReader(limit=64 * 1024, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        writer.write(ESTABLISHED)
        fix_outer(writer.transport)
        timeout = self.config.tls_handshake_timeout
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    writer.transport, protocol, context, server_side=True, ssl_handshake_timeout=timeout + 1.0,
                    ssl_shutdown_timeout=self.config.shutdown_timeout,
                )
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as exc:
            reason = "not finished in time" if isinstance(exc, TimeoutError) else (
                getattr(exc, "reason", None) or exc.__class__.__name__)
            self.refusals.event(("inner-tls", peer.rsplit(":", 1)[0]),
                                "! egress front %s: CONNECT %s: the TLS handshake inside the tunnel failed (%s); closed",
                                peer, target, str(reason).lower())
            return None
        if transport is None:  # the peer closed during the handshake
            return None
        protocol.connection_made(transport)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def _direct(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: ConnectTarget, early: bytes
    ) -> None:
        up_reader, up_writer = await dial_direct(target, self.egress.direct, self.egress.dial_timeout)
        try:
            writer.write(ESTABLISHED)
            if early:
                up_writer.write(early)
            sent, received = await splice((reader, writer), (up_reader, up_writer))
            logger.debug("= egress CONNECT %s (direct) ended: %d bytes out, %d back", target, sent, received)
        finally:
            await _close(up_writer)

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str, exc: ConnectRefused
    ) -> None:
        self.refusals.event((exc.kind, peer.rsplit(":", 1)[0]), "! egress front %s refused %d: %s", peer, exc.status,
                            exc.detail[:600])
        writer.write(refusal_response(exc.status, exc.phrase, exc.detail))
        try:
            await writer.drain()
            # Read (and drop) what is still coming for a moment: closing with unread bytes
            # resets the connection, which can destroy the answer in flight.
            async with asyncio.timeout(_LINGER):
                total = 0
                while total < 64 * 1024 and (data := await reader.read(_READ)):
                    total += len(data)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass


class _Refuse(asyncio.Protocol):
    """Over the unix socket's cap: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(2):
            await writer.wait_closed()
    except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
        writer.transport.abort()


def _bind_unix(path: Path) -> socket.socket:
    """A listening unix socket at ``path`` that only our user can connect to (0600 from the
    start: the umask covers bind). A stale socket file nobody listens on is replaced."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale: left by a process that died
        else:
            raise OSError(errno.EADDRINUSE, f"another process serves {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(1024)
    sock.setblocking(False)
    return sock
