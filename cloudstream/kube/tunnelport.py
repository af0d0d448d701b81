"""Taking part in ``kubeedge/tunnelport`` as cloudcore does, without its lost-race panic.

cloudcore's NegotiateTunnelPort does GET, then Update (or Create) once: a concurrent writer makes
it fail with 409 and the process panics and restarts; a random 0-9 s sleep is its only guard. We
use the same optimistic concurrency the API server offers: every PUT carries the resourceVersion
we read, a 409 (Conflict on PUT, AlreadyExists on a racing create) means "re-read and redo", with
a jittered, bounded backoff. The outcome is the record cloudcore would have written: Go cloudcores
and cloudstream replicas share one ConfigMap.

Our port in the scheme: API-server hosts DNAT ``--dport <our port>`` to ``<replica ip>:<streamPort>``
(KubeEdge's iptables-manager writes exactly that from the record), so cloudstream needs no extra
listener: the claimed port is an *address* the API server dials (the node's kubeletEndpoint port),
10003 is where it lands.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamproto.aio.ratelog import RateLimitedLog
from streamproto.tunnel.errors import ConfigError, TunnelError

from .client import api_status
from .record import claim_in, release_in
from .settings import KubeSettings

__all__ = ["Claim", "KubeApiError", "TunnelPortClaimer"]

logger = logging.getLogger("cloudstream.kube")

RETRYABLE = frozenset({409, 429, 500, 502, 503, 504})


class KubeApiError(TunnelError):
    """The Kubernetes API refused or failed past our retries."""


@dataclass(frozen=True, slots=True)
class Claim:
    port: int
    rounds: int
    """Read-modify-write rounds it took (1: no contention)."""
    conflicts: int
    seconds: float


class TunnelPortClaimer:
    def __init__(self, core: Any, settings: KubeSettings, rng: random.Random | None = None) -> None:
        self.core = core
        self.settings = settings
        self.ip = settings.replica_ip
        self.port: int | None = None
        self._rng = rng or random.Random()
        self._log = RateLimitedLog(logger, interval=30.0)

    async def claim(self) -> Claim:
        """This replica's port: its own entry when the record has one, else the smallest free one."""
        started = time.monotonic()
        chosen: list[int] = []

        def mutate(annotations: dict[str, str]) -> dict[str, str] | None:
            new, port = claim_in(annotations, self.ip)
            chosen.append(port)
            return new

        rounds, conflicts = await self._update(mutate, "claim a tunnel port")
        self.port = chosen[-1]
        claim = Claim(self.port, rounds, conflicts, time.monotonic() - started)
        logger.info("tunnel port %d for %s in %s/%s (%d rounds, %d conflicts, %.3f s)", claim.port, self.ip,
                    self.settings.namespace, self.settings.configmap, rounds, conflicts, claim.seconds)
        return claim

    async def release(self) -> bool:
        """Remove our ``ipTunnelPort`` entry (the port stays used, as KubeEdge keeps it, and is
        remembered for this IP's return); False when it was already gone or re-pointed."""
        if self.port is None:
            return False
        port, done = self.port, []

        def mutate(annotations: dict[str, str]) -> dict[str, str] | None:
            new = release_in(annotations, self.ip, port)
            done.append(new is not None)
            return new

        await self._update(mutate, "release the tunnel port", create=False)
        self.port = None
        if done and done[-1]:
            logger.info("tunnel port %d of %s released", port, self.ip)
        return bool(done and done[-1])

    async def _get(self) -> Any:
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                return await self.core.read_namespaced_config_map(self.settings.configmap, self.settings.namespace)
        except Exception as exc:
            if api_status(exc) == 404:
                return None
            raise

    async def _update(
        self, mutate: Callable[[dict[str, str]], dict[str, str] | None], what: str, create: bool = True
    ) -> tuple[int, int]:
        """Read, mutate, write with the read resourceVersion; redo on 409. (rounds, conflicts)."""
        s, conflicts = self.settings, 0
        last: BaseException | None = None
        for round_ in range(1, s.claim_attempts + 1):
            try:
                async with asyncio.timeout(s.request_timeout * 2):
                    cm = await self._get()
                    if cm is None:
                        new = mutate({})
                        if not create or new is None:
                            return round_, conflicts
                        await self.core.create_namespaced_config_map(s.namespace, {
                            "apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": s.configmap, "namespace": s.namespace, "annotations": new},
                        })
                        return round_, conflicts
                    new = mutate(dict(cm.metadata.annotations or {}))
                    if new is None:
                        return round_, conflicts
                    cm.metadata.annotations = new  # resourceVersion stays: the write is conditional
                    await self.core.replace_namespaced_config_map(s.configmap, s.namespace, cm)
                    return round_, conflicts
            except ConfigError:
                raise
            except Exception as exc:  # an ApiException, a connection error, our timeout
                status = api_status(exc)
                if status is not None and status not in RETRYABLE:
                    raise KubeApiError(f"cannot {what} in {s.namespace}/{s.configmap}: HTTP {status} "
                                       f"{getattr(exc, 'reason', '')}; {_fix(status)}") from None
                if status == 409:
                    conflicts += 1
                else:
                    self._log.event(("retry", type(exc).__name__, status), "%s: %s (retrying)", what, _brief(exc))
                last = exc
            await asyncio.sleep(self._rng.uniform(0, min(s.retry_max, s.retry_base * 2 ** round_)))
        raise KubeApiError(f"cannot {what} in {s.namespace}/{s.configmap} after {s.claim_attempts} rounds "
                           f"({conflicts} conflicts; last: {_brief(last)})")


def _brief(exc: BaseException | None) -> str:
    if exc is None:
        return "-"
    status = api_status(exc)
    return f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status else f"{type(exc).__name__}: {exc}"


def _fix(status: int) -> str:
    if status in (401, 403):
        return "grant the service account get/create/update on configmaps in that namespace (deploy/kubernetes/ha/rbac.yaml)"
    if status == 404:
        return "create the namespace (kubectl create namespace kubeedge)"
    return "see the API server's log"
