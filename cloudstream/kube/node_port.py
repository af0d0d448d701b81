"""Each connected node's ``status.daemonEndpoints.kubeletEndpoint.Port`` = this replica's port.

cloudcore (``tunnelserver.go`` updateNodeKubeletEndpoint) does GET node, set the port, UpdateStatus,
polling every 20 s for up to 2 min before the session may serve; when that fails it sends
CLOSE_CONNECT "failed to Update KubeletEndpoint Port" and the edge redials (issue #4420's loop).
We write the same field with a merge PATCH of ``nodes/<name>/status`` (no read, no resourceVersion
race with the node's own status heartbeats), retried the same 20 s / 2 min, and let the tunnel
serve meanwhile: a request that arrives by another route (DNAT on 10250, the egress front) works.
The field's JSON name is ``Port`` (capital P: ``DaemonEndpoint.Port int32 `json:"Port"```).
A node that reconnects is written again: another replica may have pointed it elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from streamproto.aio.ratelog import RateLimitedLog

from ..registry import SessionRegistry
from .client import api_status
from .settings import KubeSettings

__all__ = ["KubeletPortWriter", "kubelet_port_patch"]

logger = logging.getLogger("cloudstream.kube")

MAX_CONCURRENT = 16
"""Node writes in flight at once (a reconnect wave of 1,000 edges is not 1,000 requests at once)."""


def kubelet_port_patch(port: int) -> dict[str, object]:
    return {"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}


class KubeletPortWriter:
    def __init__(self, core: Any, settings: KubeSettings, registry: SessionRegistry, port: int) -> None:
        self.core, self.settings, self.registry, self.port = core, settings, registry, port
        self._sessions: dict[str, object] = {}
        """node -> the session we wrote for (a new session of the node is written again)."""
        self._changed = asyncio.Event()
        self._limit = asyncio.Semaphore(MAX_CONCURRENT)
        self._log = RateLimitedLog(logger, interval=60.0)

    async def run(self) -> None:
        unwatch = self.registry.watch(self._changed.set)
        try:
            async with asyncio.TaskGroup() as tg:
                self._changed.set()
                while True:  # bounded: one pass per registry change
                    await self._changed.wait()
                    self._changed.clear()
                    live = {s.node: s for s in self.registry.sessions() if s.closed_reason is None}
                    for node in list(self._sessions):
                        if node not in live:
                            del self._sessions[node]
                    for node, session in live.items():
                        if self._sessions.get(node) is not session:
                            self._sessions[node] = session
                            tg.create_task(self._write(node))
        finally:
            unwatch()

    async def _write(self, node: str) -> None:
        s = self.settings
        deadline = time.monotonic() + s.node_update_timeout
        while True:  # bounded by the deadline
            try:
                async with self._limit, asyncio.timeout(s.request_timeout):
                    await self.core.patch_node_status(
                        node, kubelet_port_patch(self.port), _content_type="application/merge-patch+json"
                    )
                logger.info("node %s: kubeletEndpoint.Port = %d (this replica's tunnel port)", node, self.port)
                return
            except Exception as exc:
                status = api_status(exc)
                reason = f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}"
                left = deadline - time.monotonic()
                if left <= 0 or status in (401, 403, 422):
                    self._log.event(("gave-up", status), "! node %s: cannot set kubeletEndpoint.Port to %d (%s); the API "
                                    "server dials it at its old port; fix: RBAC patch on nodes/status "
                                    "(deploy/kubernetes/ha/rbac.yaml), or the node object is missing", node, self.port, reason)
                    return
                self._log.event(("retry", status), "node %s: kubeletEndpoint.Port not written yet (%s); retrying every "
                                "%.0f s for %.0f s more", node, reason, s.node_update_interval, left)
                await asyncio.sleep(min(s.node_update_interval, left))
