"""The Kubernetes API client: kubernetes-asyncio, imported only when a Kubernetes API is configured.

Why kubernetes-asyncio: it runs on aiohttp, already cloudstream's runtime dependency (one HTTP
stack, one event loop, uvloop works), adds three small packages (certifi, six, urllib3), tracks
the Kubernetes API release by release, has a ``Watch`` that resumes from the last resourceVersion,
and loads kubeconfig files and the in-cluster service account. Its cost (about 48 MB on disk,
1.2 s and 40 MB RSS to import its generated models) is paid only by a replica that uses it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from streamproto.tunnel.errors import ConfigError

from .settings import KubeSettings

__all__ = ["api_status", "core_v1", "import_client"]

INSTALL_HINT = "install the Kubernetes extra: pip install 'kubeedge-stream[kube]' (kubernetes-asyncio)"


def import_client() -> Any:
    try:
        import kubernetes_asyncio  # noqa: F401
        from kubernetes_asyncio import client, config
    except ImportError as exc:
        raise ConfigError(f"the Kubernetes API needs kubernetes-asyncio ({exc}); {INSTALL_HINT}") from None
    return client, config


@contextlib.asynccontextmanager
async def core_v1(settings: KubeSettings) -> AsyncIterator[Any]:
    """A ``CoreV1Api`` on the kubeconfig (or the in-cluster account); closed on exit."""
    client, config = import_client()
    cfg = client.Configuration()
    if settings.kubeconfig is not None:
        try:
            await config.load_kube_config(config_file=str(settings.kubeconfig), client_configuration=cfg)
        except (OSError, config.ConfigException) as exc:
            raise ConfigError(f"--kubeconfig {settings.kubeconfig}: {exc}") from None
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException as exc:
            raise ConfigError(f"in-cluster Kubernetes config: {exc}; give --kubeconfig") from None
    api = client.ApiClient(cfg)
    try:
        yield client.CoreV1Api(api)
    finally:
        await api.close()


def api_status(exc: BaseException) -> int | None:
    """The HTTP status of a kubernetes-asyncio ``ApiException`` (None: not an API answer)."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and type(exc).__name__ == "ApiException" else None
