"""cloudstream's TLS material, hot-reloaded: the 10004 and 10003 contexts and the serving CA.

Each is a ``streamcerts.watch.Reloading`` on the process's one file watch; a swap changes what the
port's listener hands *new* connections (tunnels and streams already open keep theirs). With a
serving CA, 10003 picks a per-node leaf per connection (``serving_certs``); a new serving CA or
client CA drops the cached leaves.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from functools import partial
from typing import Any

from streamcerts import server_context
from streamcerts.serving import ServingCA
from streamcerts.watch import Reloading, ReloadingContext, shared_watch

from .config import CloudConfig
from .kubelet_api.server import KubeletApiServer
from .listener import Listener
from .registry import SessionRegistry
from .serving_certs import ServingCertificates

__all__ = ["CloudCertificates"]

logger = logging.getLogger(__name__)


class CloudCertificates:
    """Built at start (a file that does not load is fatal then); ``attach`` once the listeners exist."""

    def __init__(
        self, config: CloudConfig, registry: SessionRegistry,
        tunnel: ssl.SSLContext | None = None, stream: ssl.SSLContext | None = None,
    ) -> None:
        """``tunnel``/``stream``: the contexts the listeners started with (else built here)."""
        self.config = config
        self._sighup = False
        self.tunnel = ReloadingContext(
            "tunnel TLS (10004)",
            [config.tls_tunnel_cert_file, config.tls_tunnel_private_key_file, config.tls_tunnel_ca_file],
            partial(server_context, config.tls_tunnel_cert_file, config.tls_tunnel_private_key_file,
                    config.tls_tunnel_ca_file, require_client_cert=True, alpn=None),
            tunnel,
        )
        # 10003: verify a certificate when one is offered; answer 401 ourselves when none is.
        self.stream = ReloadingContext(
            "kubelet API TLS (10003)",
            [config.tls_stream_cert_file, config.tls_stream_private_key_file, config.tls_stream_ca_file],
            partial(server_context, config.tls_stream_cert_file, config.tls_stream_private_key_file,
                    config.tls_stream_ca_file, require_client_cert=False, alpn=["http/1.1"]),
            stream,
        )
        self.reloading: list[Reloading[Any]] = [self.tunnel, self.stream]
        self.serving: ServingCertificates | None = None
        if config.serving_ca_cert_file is not None and config.serving_ca_key_file is not None:
            ca = Reloading(
                "serving CA (10003 per-node certificates)", [config.serving_ca_cert_file, config.serving_ca_key_file],
                partial(ServingCA.load, config.serving_ca_cert_file, config.serving_ca_key_file),
            )
            self.serving = ServingCertificates(
                ca, registry, config.tls_stream_ca_file, max_cached=config.serving_cert_cache
            )
            self.stream.on_swap.append(self.serving.clear)  # the client CA is part of every leaf's context
            self.reloading.append(ca)
            logger.info("10003 presents per-node serving certificates signed by %s (CN %s)",
                        config.serving_ca_cert_file, ca.current.cert.subject.rfc4514_string())

    def attach(self, tunnel: Listener | None, api: KubeletApiServer) -> None:
        """From now on a swap reaches the listeners, the files are watched and SIGHUP reloads.
        Call it right after the listeners started (before the loop runs their accepts)."""
        stream = api.server
        for reloading, listener in ((self.tunnel, tunnel), (self.stream, stream)):
            if listener is not None:
                reloading.on_swap.append(listener.set_context)
        self.stream.on_swap.append(partial(setattr, api, "ssl_context"))  # whoever else reads it there
        if stream is not None and self.serving is not None:
            stream.choose_context = self.serving.context_for
        loop = asyncio.get_running_loop()
        watch = shared_watch(loop)
        watch.interval = self.config.cert_watch_interval
        for reloading in self.reloading:
            watch.add(reloading)
        try:
            loop.add_signal_handler(signal.SIGHUP, self.reload_now)
            self._sighup = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (in-process tests)
            pass

    def detach(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sighup:
            loop.remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        watch = shared_watch(loop)
        for reloading in self.reloading:
            watch.discard(reloading)
        if self.serving is not None:
            self.serving.errors.close()

    def reload_now(self) -> None:
        """SIGHUP."""
        for reloading in self.reloading:
            reloading.check(force=True)
