"""Follow ``kubeedge/tunnelport`` with a Kubernetes watch (list, then watch from its resourceVersion)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from streamproto.aio.ratelog import RateLimitedLog
from streamproto.tunnel.errors import ConfigError

from .client import import_client
from .record import ANNOTATION, TunnelPortRecord
from .settings import KubeSettings

__all__ = ["watch_record"]

logger = logging.getLogger("cloudstream.kube")

WATCH_SECONDS = 300
"""Server-side timeout of one watch; then we list again (a bounded watch, and a fresh view)."""


async def watch_record(
    core: Any, settings: KubeSettings, on_record: Callable[[TunnelPortRecord], None], watch_seconds: int = WATCH_SECONDS
) -> None:
    """Call ``on_record`` with the record now and after every change; until cancelled."""
    _, _ = import_client()
    from kubernetes_asyncio import watch

    log = RateLimitedLog(logger, interval=60.0)
    selector = f"metadata.name={settings.configmap}"
    delay = settings.retry_base
    while True:  # one list + one bounded watch per round; failures back off up to 10 s
        try:
            async with asyncio.timeout(settings.request_timeout):
                listed = await core.list_namespaced_config_map(settings.namespace, field_selector=selector)
            on_record(_record(listed.items[0] if listed.items else None, log))
            async with watch.Watch() as w:
                stream = w.stream(
                    core.list_namespaced_config_map, settings.namespace, field_selector=selector,
                    resource_version=listed.metadata.resource_version, timeout_seconds=watch_seconds,
                    _request_timeout=watch_seconds + settings.request_timeout,
                )
                async for event in stream:
                    kind = event["type"]
                    if kind in ("ADDED", "MODIFIED"):
                        on_record(_record(event["object"], log))
                    elif kind == "DELETED":
                        on_record(TunnelPortRecord())
            delay = settings.retry_base
        except Exception as exc:
            log.event(("watch", type(exc).__name__), "watch of %s/%s failed (%s); listing again",
                      settings.namespace, settings.configmap, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _record(cm: Any, log: RateLimitedLog) -> TunnelPortRecord:
    if cm is None:
        return TunnelPortRecord()
    try:
        return TunnelPortRecord.parse((cm.metadata.annotations or {}).get(ANNOTATION))
    except ConfigError as exc:
        log.event(("bad-record",), "! %s; no per-port rules until it is fixed", exc)
        return TunnelPortRecord()
