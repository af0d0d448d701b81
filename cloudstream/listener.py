"""The accept layer of both cloudstream ports (10003 kubelet API, 10004 tunnel).

asyncio's ``create_server(ssl=...)`` builds a TLS state machine (uvloop: a 256 KiB read buffer
plus OpenSSL's objects) for every TCP connection the moment it is accepted, waits 60 s for a
ClientHello, caps nothing and logs no refusal. Here each port accepts for itself:

1. accept (EMFILE/ENFILE: shed the oldest pending connection, else pause accepting briefly);
2. admission: caps on open connections, on pending (unauthenticated) ones and on pending ones
   per source address; at the global pending cap the *oldest* pending connection is closed,
   so a flood from other addresses cannot keep a legitimate newcomer out;
3. wait, with no TLS state at all, until the first bytes arrive; refuse what is not TLS;
4. the TLS handshake (``connect_accepted_socket``), the whole of 1-4 within
   ``tls_handshake_timeout``; a failure is logged with its reason and the peer gets OpenSSL's
   alert (asyncio and uvloop drop it: ``tls_alert``);
5. hand-off to the port's protocol. A connection without a client certificate (possible on
   10003 only) stays "pending" until it closes: it counts against the pending caps.

Every refusal goes through one ``RateLimitedLog`` per port (kind = reason and source address).
After bursts of closed TLS connections the C heap is handed back to the system
(``malloc_trim``): glibc keeps freed TLS buffers otherwise (``bench/hostile.py`` has numbers).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import os
import resource
import select
import socket
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from streamproto.aio import RateLimitedLog

from .config import CloudConfig
from .descriptors import POOL, RESERVE, DescriptorPool
from .tls_alert import ALERT, Alert, AlertingContext, describe

__all__ = ["Limits", "Listener", "Slot"]

logger = logging.getLogger(__name__)

_ACCEPT_BATCH = 128
"""Connections accepted per readiness callback: other work runs between batches."""
_PAUSE_ON_EMFILE = 0.1
_TLS_HANDSHAKE = 0x16
"""The first byte of every TLS ClientHello record (content type handshake)."""
_HTTP_METHODS = (b"GET", b"POS", b"PUT", b"HEA", b"DEL", b"OPT", b"PAT", b"CON", b"PRI")
_HTTP_TO_HTTPS = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
"""What Go's net/http answers to plain HTTP on a TLS port."""
_TRIM_AFTER = 64
"""TLS connections closed since the last trim before the heap is trimmed again."""
_TRIM_DELAY = 1.0



@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    handshake_timeout: float
    """Seconds from accept to a finished TLS handshake."""
    max_connections: int
    """Open connections on this port, pending ones included."""
    max_pending: int
    """Unauthenticated connections on this port; above it the oldest is closed."""
    max_pending_per_ip: int
    """Unauthenticated connections from one source address; more from it are refused."""

    @classmethod
    def from_config(cls, config: CloudConfig) -> Limits:
        return cls(
            handshake_timeout=config.tls_handshake_timeout,
            max_connections=config.max_connections,
            max_pending=config.max_pending_handshakes,
            max_pending_per_ip=config.max_pending_per_ip,
        )

    def fitted(self, nofile: int, ports: int = 2) -> Limits:
        """The caps a descriptor limit can hold: pending connections of all ports together
        may take at most half of the descriptors; open ones share the budget left after a
        reserve (``descriptors.POOL``: each port keeps a floor the others cannot take)."""
        budget = max(64, nofile - RESERVE)
        pending = min(self.max_pending, max(8, budget // (2 * ports)))
        return Limits(
            handshake_timeout=self.handshake_timeout,
            max_connections=max(pending + 1, min(self.max_connections, budget)),
            max_pending=pending,
            max_pending_per_ip=min(self.max_pending_per_ip, pending),
        )


class State(Enum):
    HELLO = "waiting for the ClientHello"
    HANDSHAKE = "in the TLS handshake"
    UNAUTHENTICATED = "without a client certificate"
    OPEN = "open"
    CLOSED = "closed"


class Slot:
    """One accepted connection, from accept until the port's protocol releases it."""

    __slots__ = ("_listener", "ip", "peer", "sock", "deadline", "state", "task", "transport")

    def __init__(self, listener: Listener, sock: socket.socket, address: Any, deadline: float) -> None:
        self._listener = listener
        self.ip = str(address[0]) if address else "?"
        self.peer = f"{address[0]}:{address[1]}" if address else "?"
        self.sock: socket.socket | None = sock
        self.deadline = deadline
        self.state = State.HELLO
        self.task: asyncio.Task[None] | None = None
        self.transport: asyncio.BaseTransport | None = None

    def release(self) -> None:
        """The connection is over (the port's protocol calls this once it closed; idempotent)."""
        self._listener._release(self)


ProtocolFactory = Callable[[Slot], asyncio.BaseProtocol]
ContextChooser = Callable[[socket.socket], Awaitable[ssl.SSLContext | None]]
"""Picks the TLS context of one connection before its handshake (None: the port's own)."""


def _alerting(context: ssl.SSLContext) -> ssl.SSLContext:
    if type(context) is ssl.SSLContext:  # same object, one more method (see AlertingContext)
        context.__class__ = AlertingContext
    return context


class Listener:
    """One listening port; quacks like ``asyncio.Server`` (websockets' ``Server`` wraps it)."""

    def __init__(
        self,
        *,
        name: str,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        limits: Limits,
        protocol_factory: ProtocolFactory,
        shutdown_timeout: float = 5.0,
        ca: str = "this port's CA",
        choose_context: ContextChooser | None = None,
    ) -> None:
        self.name = name
        self.ca = ca
        """Named in refusals: the CA a client certificate must be signed by, and its flag."""
        self.host = host
        self.port = port
        self.ssl_context = _alerting(ssl_context)
        self.choose_context = choose_context
        self.requested = limits
        self.limits = limits
        self.pool: DescriptorPool = POOL
        self.protocol_factory = protocol_factory
        self.shutdown_timeout = shutdown_timeout
        self.refusals = RateLimitedLog(logger, interval=10.0, max_kinds=64)
        self.sockets: tuple[socket.socket, ...] = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._serving = False
        self._slots: set[Slot] = set()
        self._handshaking: OrderedDict[Slot, None] = OrderedDict()
        """HELLO and HANDSHAKE slots, oldest (= earliest deadline) first."""
        self._unauthenticated: OrderedDict[Slot, None] = OrderedDict()
        self._per_ip: dict[str, int] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._paused: asyncio.TimerHandle | None = None
        self.counts = {"accepted": 0, "refused": 0, "evicted": 0, "timeouts": 0, "failed": 0, "emfile": 0}
        self.refused_by: dict[str, int] = {}
        """Refusal kind (a bounded set: caps, timeout, TLS failure kinds) -> connections (/metrics)."""

    def set_context(self, context: ssl.SSLContext) -> None:
        """Hot reload: connections accepted from now on use ``context``; open ones keep theirs."""
        self.ssl_context = _alerting(context)

    # ------------------------------------------------------------------ asyncio.Server's face

    @property
    def open_connections(self) -> int:
        return len(self._slots)

    @property
    def pending(self) -> int:
        return len(self._handshaking) + len(self._unauthenticated)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        return None

    async def start(self) -> Listener:
        self._loop = asyncio.get_running_loop()
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.limits = self.requested.fitted(nofile)
        self.sockets = tuple(_listen(self.host, self.port))
        self.pool.join(self, nofile)
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._on_acceptable, sock)
        self._serving = True
        port = self.sockets[0].getsockname()[1]
        logger.info(
            "%s (port %d): at most %d connections (all ports share %d descriptors, at least %d kept for each), "
            "%d pending (unauthenticated), %d pending per address, TLS handshake within %g s",
            self.name, port, self.limits.max_connections, self.pool.budget, self.pool.floor, self.limits.max_pending,
            self.limits.max_pending_per_ip, self.limits.handshake_timeout,
        )
        return self

    def close(self) -> None:
        """Stop accepting and drop every connection still handshaking; established ones
        belong to the port's protocol."""
        if not self._serving:
            return
        self._serving = False
        self.pool.leave(self)
        for sock in self.sockets:
            self.get_loop().remove_reader(sock.fileno())
            sock.close()
        for timer in (self._sweep, self._paused):
            if timer is not None:
                timer.cancel()
        self._sweep = self._paused = None
        for slot in list(self._handshaking):
            self._drop(slot)
        self.refusals.close()

    async def wait_closed(self) -> None:
        tasks = [s.task for s in self._slots if s.task is not None and not s.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.shutdown_timeout)

    # ------------------------------------------------------------------ accept and admission

    def _on_acceptable(self, listening: socket.socket) -> None:
        loop = self.get_loop()
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_descriptors(exc, listening)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # the peer gave up while queued
                raise
            self._admit(sock, address, loop.time())
        # More may be queued: the next readiness callback takes them, after other work.

    def _admit(self, sock: socket.socket, address: Any, now: float) -> None:
        self.counts["accepted"] += 1
        ip = str(address[0]) if address else "?"
        limits = self.limits
        if self._per_ip.get(ip, 0) >= limits.max_pending_per_ip:
            self._refuse_new(sock, address, "ip-cap", f"{self._per_ip[ip]} connections from this address are "
                             f"still unauthenticated (--max-pending-per-ip {limits.max_pending_per_ip})")
            return
        if len(self._slots) >= limits.max_connections or not self.pool.admits(self):
            why = (f"{len(self._slots)} connections are open (--max-connections {limits.max_connections})"
                   if len(self._slots) >= limits.max_connections else self.pool.why_full(self))
            if not self._evict_oldest(why + " and a new one came"):
                self._refuse_new(sock, address, "open-cap", why)
                return
        elif self.pending >= limits.max_pending:
            self._evict_oldest(f"{self.pending} connections are unauthenticated (--max-pending-handshakes "
                               f"{limits.max_pending}) and a new one came")
        sock.setblocking(False)
        slot = Slot(self, sock, address, now + limits.handshake_timeout)
        self._slots.add(slot)
        self._handshaking[slot] = None
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self.get_loop().add_reader(sock.fileno(), self._on_first_bytes, slot)
        if self._sweep is None:
            self._sweep = self.get_loop().call_at(slot.deadline, self._on_sweep)

    def _count(self, kind: str) -> None:
        self.refused_by[kind] = self.refused_by.get(kind, 0) + 1

    def _refuse_new(self, sock: socket.socket, address: Any, kind: str, reason: str) -> None:
        self.counts["refused"] += 1
        self._count(kind)
        sock.close()
        ip = str(address[0]) if address else "?"
        self.refusals.event((kind, ip), "! %s: refused a connection from %s:%s: %s", self.name, ip,
                            address[1] if address else "?", reason)

    def _evict_oldest(self, why: str) -> bool:
        """Close the oldest unauthenticated connection; False when there is none."""
        first = [d for d in (self._handshaking, self._unauthenticated) if d]
        if not first:
            return False
        oldest = min((next(iter(d)) for d in first), key=lambda s: s.deadline)
        self.counts["evicted"] += 1
        self._count("evicted")
        self.refusals.event(("evicted", oldest.ip), "! %s: closed %s (%s) to make room: %s", self.name, oldest.peer,
                            oldest.state.value, why)
        self._drop(oldest)
        return True

    def _out_of_descriptors(self, exc: OSError, listening: socket.socket) -> None:
        """EMFILE: the pending connection queue still holds the peer. Shed the oldest
        unauthenticated connection so the next accept works, or pause accepting briefly
        (the listening socket stays readable, so retrying at once would spin)."""
        if not select.select([listening], [], [], 0)[0]:
            return  # accept allocates the descriptor first: nothing was queued after all
        self.counts["emfile"] += 1
        self._count("emfile")
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        shed = self._evict_oldest("out of file descriptors")
        self.refusals.event(
            "emfile", "! %s: cannot accept: %s (open-file limit %d, %d connections on this port); %s. "
            "Raise LimitNOFILE or lower --max-connections", self.name, os.strerror(exc.errno or 0), soft,
            len(self._slots), "closed the oldest pending connection" if shed else f"pausing accept {_PAUSE_ON_EMFILE} s",
        )
        if not shed and self._paused is None:
            loop = self.get_loop()
            loop.remove_reader(listening.fileno())
            self._paused = loop.call_later(_PAUSE_ON_EMFILE, self._resume, listening)

    def _resume(self, listening: socket.socket) -> None:
        self._paused = None
        if self._serving:
            self.get_loop().add_reader(listening.fileno(), self._on_acceptable, listening)

    # ------------------------------------------------------------------ before TLS

    def _on_first_bytes(self, slot: Slot) -> None:
        sock = slot.sock
        assert sock is not None
        try:
            head = sock.recv(8, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            head = b""
        loop = self.get_loop()
        if not head:  # closed (or reset) before saying anything: a probe or a scanner, not a refusal
            self._drop(slot)
            return
        if head[0] != _TLS_HANDSHAKE:
            if head.startswith(_HTTP_METHODS):
                try:  # read what came first: closing with unread bytes would reset, losing the answer
                    for _ in range(4):
                        if len(sock.recv(16 * 1024)) < 16 * 1024:
                            break
                    sock.send(_HTTP_TO_HTTPS)
                except OSError:
                    pass
                what = "plain HTTP sent to a TLS port"
            else:
                what = f"not TLS (first bytes {head[:8]!r})"
            self._fail(slot, "not-tls", what)
            return
        loop.remove_reader(sock.fileno())
        slot.state = State.HANDSHAKE
        slot.task = loop.create_task(self._handshake(slot))

    # ------------------------------------------------------------------ the TLS handshake

    async def _handshake(self, slot: Slot) -> None:
        loop = self.get_loop()
        sock, slot.sock = slot.sock, None  # from here the handshake (then the transport) owns it
        assert sock is not None
        try:
            alert = Alert(os.dup(sock.fileno()))
        except OSError:  # out of descriptors: no alert then
            alert = Alert(-1)
        ALERT.set(alert)  # this task's own context
        protocol = self.protocol_factory(slot)
        try:
            try:
                async with asyncio.timeout_at(slot.deadline):
                    context = self.ssl_context
                    if self.choose_context is not None:
                        try:
                            context = _alerting(await self.choose_context(sock) or context)
                        except BaseException:  # timed out or evicted before the transport owns the socket
                            sock.close()
                            raise
                    transport, _ = await loop.connect_accepted_socket(
                        lambda: protocol, sock, ssl=context,
                        ssl_handshake_timeout=max(0.1, slot.deadline - loop.time()) + 1.0,
                        ssl_shutdown_timeout=self.shutdown_timeout,
                    )
            finally:  # before the handlers below: _fail must not cancel this very task
                slot.task = None
                if alert.fd >= 0:
                    os.close(alert.fd)
        except TimeoutError:
            self.counts["timeouts"] += 1
            self._fail(slot, "timeout", f"TLS handshake not finished within {self.limits.handshake_timeout:g} s "
                       "(--tls-handshake-timeout)")
            return
        except ssl.SSLError as exc:
            kind, reason = describe(exc, self.ca)
            self._fail(slot, kind, reason)
            return
        except OSError as exc:  # reset, or uvloop's own handshake timeout
            if isinstance(exc, ConnectionAbortedError) and "handshake" in str(exc):
                self._fail(slot, "timeout", f"TLS handshake not finished within {self.limits.handshake_timeout:g} s")
            else:
                self._fail(slot, None, f"closed during the TLS handshake ({exc.__class__.__name__})")
            return
        slot.transport = transport
        if slot.state is State.CLOSED:  # the protocol already ended it
            return
        self._handshaking.pop(slot, None)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.getpeercert(binary_form=True):
            slot.state = State.OPEN
            self._forget_ip(slot.ip)
        else:
            slot.state = State.UNAUTHENTICATED
            self._unauthenticated[slot] = None

    # ------------------------------------------------------------------ ending

    def _fail(self, slot: Slot, kind: str | None, reason: str) -> None:
        """A refusal before the hand-off: logged (rate-limited) unless ``kind`` is None."""
        if kind is not None:
            self.counts["failed"] += 1
            self._count(kind)
            self.refusals.event((kind, slot.ip), "! %s: refused %s: %s", self.name, slot.peer, reason)
        else:
            logger.debug("- %s: %s %s", self.name, slot.peer, reason)
        self._drop(slot)

    def _drop(self, slot: Slot) -> None:
        """Close a connection the port's protocol does not own yet (or one we evict)."""
        if slot.state is State.CLOSED:
            return
        if slot.task is not None:  # mid-handshake: the task's cancellation closes the transport
            task, slot.task = slot.task, None
            task.cancel()
        if slot.sock is not None:
            if slot.state is State.HELLO:
                self.get_loop().remove_reader(slot.sock.fileno())
            slot.sock.close()
            slot.sock = None
        if slot.transport is not None:
            slot.transport.abort()  # type: ignore[attr-defined]
        self._release(slot)

    def _release(self, slot: Slot) -> None:
        if slot.state is State.CLOSED:
            return
        was = slot.state
        slot.state = State.CLOSED
        self._slots.discard(slot)
        if was in (State.HELLO, State.HANDSHAKE, State.UNAUTHENTICATED):  # counted per address
            self._handshaking.pop(slot, None)
            self._unauthenticated.pop(slot, None)
            self._forget_ip(slot.ip)
        if was is not State.HELLO:
            _trimmer.closed_tls()

    def _forget_ip(self, ip: str) -> None:
        left = self._per_ip.get(ip, 0) - 1
        if left > 0:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)

    def _on_sweep(self) -> None:
        """Close every connection whose handshake deadline passed (one timer per port)."""
        self._sweep = None
        now = self.get_loop().time()
        for _ in range(len(self._handshaking)):
            slot = next(iter(self._handshaking), None)
            if slot is None or slot.deadline > now:
                break
            self.counts["timeouts"] += 1
            what = "no TLS ClientHello" if slot.state is State.HELLO else "TLS handshake not finished"
            self._fail(slot, "timeout", f"{what} within {self.limits.handshake_timeout:g} s (--tls-handshake-timeout)")
        first = next(iter(self._handshaking), None)
        if first is not None and self._serving:
            when = max(first.deadline, now + 0.05)
            self._sweep = self.get_loop().call_at(when, self._on_sweep)


def _listen(host: str, port: int) -> list[socket.socket]:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[object] = set()
    try:
        for family, kind, proto, _, address in infos:
            if address in seen:
                continue
            seen.add(address)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(1024)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Trimmer:
    """Gives freed heap back to the system after a burst of TLS connections ended.

    glibc keeps the memory of freed TLS buffers (uvloop allocates 256 KiB per connection) in
    its arenas; without a trim RSS after a flood stays at its peak."""

    def __init__(self) -> None:
        self._closed = 0
        self._timer: asyncio.TimerHandle | None = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            self._trim: Callable[[int], int] | None = libc.malloc_trim
        except (OSError, AttributeError):  # not glibc
            self._trim = None

    def closed_tls(self) -> None:
        if self._trim is None:
            return
        self._closed += 1
        if self._closed >= _TRIM_AFTER:
            # Re-armed on every close: the trim runs once the burst is over.
            if self._timer is not None:
                self._timer.cancel()
            try:
                self._timer = asyncio.get_running_loop().call_later(_TRIM_DELAY, self._run)
            except RuntimeError:
                pass

    def _run(self) -> None:
        self._timer = None
        self._closed = 0
        if self._trim is not None:
            self._trim(0)


_trimmer = _Trimmer()
