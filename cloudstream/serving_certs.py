"""Per-node serving certificates on 10003: the context each API-server connection is answered with.

When a serving CA is configured (``--serving-ca-cert-file``/``--serving-ca-key-file``), a
connection whose dialled address is a connected node's IP (the DNAT original destination,
else the local address: ``kubelet_api.resolve``) gets a leaf for exactly that IP, so an API
server run with ``--kubelet-certificate-authority`` (pinned to the serving CA) verifies it as it
verifies a kubelet. Any other address gets the configured stream certificate: a client cannot
make us mint certificates for addresses of its choosing.

Leaves are issued on first use in a worker thread (about 1 ms of ECDSA P-256 and OpenSSL), at
most ``_CONCURRENT`` at a time, one per IP however many connections wait for it; cached by IP
in a bounded LRU (a context holds about 25 KB); renewed in the background once less than
``renew_before`` of their validity is left; all dropped when the serving CA or the client CA
files change (hot reload).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from streamcerts.errors import CertificateError
from streamcerts.serving import ServingCA, ServingLeaf, issue_serving_leaf
from streamcerts.watch import Reloading
from streamproto.aio import RateLimitedLog

from .kubelet_api.resolve import local_address, original_destination

__all__ = ["ServingCertificates"]

logger = logging.getLogger(__name__)

_CONCURRENT = 2
"""Leaves signed at once (worker threads): a burst of new nodes cannot take every thread."""


class _Session(Protocol):
    node: str


class _Registry(Protocol):
    def get_by_ip(self, ip: str) -> _Session | None: ...


class ServingCertificates:
    def __init__(
        self,
        ca: Reloading[ServingCA],
        registry: _Registry,
        client_ca_file: Path | None,
        *,
        max_cached: int = 1024,
        validity: dt.timedelta = dt.timedelta(days=7),
        renew_before: dt.timedelta = dt.timedelta(days=2),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        if max_cached < 1 or renew_before >= validity:
            raise ValueError("max_cached must be positive and renew_before shorter than validity")
        self.ca = ca
        self.registry = registry
        self.client_ca_file = client_ca_file
        self.max_cached = max_cached
        self.validity = validity
        self.renew_before = renew_before
        self.clock = clock
        self._cache: OrderedDict[str, ServingLeaf] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[ServingLeaf | None]] = {}
        self._slots = asyncio.Semaphore(_CONCURRENT)
        self._generation = 0
        self._failed_generation = -1
        """A CA that failed to sign is not tried again per connection, only after a reload."""
        self.errors = RateLimitedLog(logger, interval=30.0, max_kinds=16)
        self.counts = {"issued": 0, "cached": 0, "default": 0, "failed": 0}
        ca.on_swap.append(self.clear)

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self, *_: object) -> None:
        """The CA or the client CA changed: every leaf is reissued on its next use."""
        self._generation += 1
        self._cache.clear()

    @staticmethod
    def dialled_ip(sock: socket.socket) -> str | None:
        """The address the client dialled: the pre-DNAT destination, else our local address."""
        return original_destination(sock) or local_address(sock)

    async def context_for(self, sock: socket.socket) -> ssl.SSLContext | None:
        """The context for this connection: a leaf for a node's IP, else None (the default)."""
        ip = self.dialled_ip(sock)
        session = self.registry.get_by_ip(ip) if ip else None
        if ip is None or session is None or self._failed_generation == self._generation:
            self.counts["default"] += 1
            return None
        leaf = self._cache.get(ip)
        now = self.clock()
        if leaf is not None and leaf.node == session.node and now < leaf.not_after:
            self._cache.move_to_end(ip)
            self.counts["cached"] += 1
            if leaf.not_after - now < self.renew_before and leaf.not_after < self.ca.current.cert.not_valid_after_utc:
                self._start(ip, session.node)  # renew in the background; this one is still valid
            return leaf.context
        fresh = await asyncio.shield(self._start(ip, session.node))
        return fresh.context if fresh is not None else None

    def _start(self, ip: str, node: str) -> asyncio.Task[ServingLeaf | None]:
        task = self._inflight.get(ip)
        if task is None:
            task = self._inflight[ip] = asyncio.get_running_loop().create_task(self._issue(ip, node))
            task.add_done_callback(lambda _: self._inflight.pop(ip, None))
        return task

    async def _issue(self, ip: str, node: str) -> ServingLeaf | None:
        generation = self._generation
        async with self._slots:
            try:
                leaf = await asyncio.to_thread(
                    issue_serving_leaf, self.ca.current, ip, node, self.client_ca_file, self.validity
                )
            except (CertificateError, ValueError, TypeError, ssl.SSLError, OSError) as exc:
                self.counts["failed"] += 1
                self._failed_generation = generation
                self.errors.event("issue", "! cannot issue a serving certificate for node %s (%s): %s; the stream "
                                  "certificate is presented instead. Fix the serving CA (--serving-ca-cert-file, "
                                  "--serving-ca-key-file)", node, ip, exc)
                return None
        self.counts["issued"] += 1
        logger.info("= serving certificate for node %s (%s) issued, serial %x, valid until %s", node, ip, leaf.serial,
                    leaf.not_after.isoformat(timespec="seconds"))
        if generation == self._generation:  # else the CA changed while signing: use it once, do not keep it
            self._cache[ip] = leaf
            self._cache.move_to_end(ip)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return leaf
