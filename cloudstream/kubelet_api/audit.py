"""The ``cloudstream.audit`` log: one line when an exec/attach/port-forward opens, one when it
closes, naming what is served (the names decoded once, as routed and forwarded)."""

from __future__ import annotations

import logging

from .http1 import RequestHead
from .routes import Route

__all__ = ["audit_close", "audit_open"]

audit = logging.getLogger("cloudstream.audit")


def audit_open(route: Route, node: str, head: RequestHead, caller: str, connect_id: int) -> None:
    audit.info(
        "open %s node=%s ns=%s pod=%s container=%s query=%s caller=%s end-user=%s stream=%d",
        route.kind.value, node, route.namespace, route.pod, route.container, head.raw_query, caller,
        head.header("X-Forwarded-For") or head.header("Kubectl-Session") or "-", connect_id,
    )


def audit_close(route: Route, node: str, connect_id: int, bytes_in: int, bytes_out: int, duration: float) -> None:
    """``bytes_in``: what the client sent toward the container; ``bytes_out``: what came back."""
    audit.info(
        "close %s node=%s pod=%s/%s stream=%d bytes_in=%d bytes_out=%d duration=%.3fs",
        route.kind.value, node, route.namespace, route.pod, connect_id, bytes_in, bytes_out, duration,
    )
