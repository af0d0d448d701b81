"""The backend interface and the dispatch every backend shares."""

from __future__ import annotations

from typing import Protocol

from streamproto.kubelet_path import PodPath, parse_pod_path
from streamproto.tunnel import MessageType, NotFound

from ..logs_options import LogOptions
from ..stream import EdgeStream

__all__ = ["Backend", "BaseBackend", "pod_route"]

_ROUTE_OF_KIND = {
    MessageType.LOGS_CONNECT: "containerLogs",
    MessageType.EXEC_CONNECT: "exec",
    MessageType.ATTACH_CONNECT: "attach",
    MessageType.PORTFORWARD_CONNECT: "portForward",
}


class Backend(Protocol):
    async def serve(self, stream: EdgeStream) -> None:
        """Answer one stream; return when done (the session sends REMOVE_CONNECT)."""

    async def close(self) -> None: ...


def pod_route(stream: EdgeStream) -> PodPath | None:
    """The stream's pod route, each name decoded once (``streamproto.kubelet_path``): ``BadPath``
    (400, naming the segment) for ``p1%2Fx``, ``..``, empty names or control characters;
    None when the path is no pod route of the stream's kind."""
    route = _ROUTE_OF_KIND.get(stream.kind)
    if route is None or not stream.request.path.startswith(f"/{route}/"):
        return None
    return parse_pod_path(stream.request.path)


class BaseBackend:
    """Routes a stream by kind and path to ``logs``/``metrics``/``exec``/``attach``/``port_forward``."""

    async def serve(self, stream: EdgeStream) -> None:
        kind = stream.kind
        if kind == MessageType.METRIC_CONNECT:
            await self.metrics(stream, stream.request.decoded_path)
            return
        found = pod_route(stream)
        if found is None:
            raise NotFound(f"edgestream serves no {kind.name} request for {stream.request.path}")
        if kind == MessageType.LOGS_CONNECT:
            assert found.container is not None
            options = LogOptions.from_query(stream.request.raw_query)
            await self.logs(stream, found.namespace, found.pod, found.container, options)
        elif kind in (MessageType.EXEC_CONNECT, MessageType.ATTACH_CONNECT):
            assert found.container is not None
            await self.exec(stream, found.namespace, found.pod, found.container,
                            attach=kind == MessageType.ATTACH_CONNECT)
        else:
            await self.port_forward(stream, found.namespace, found.pod)

    async def logs(self, stream: EdgeStream, ns: str, pod: str, container: str, options: LogOptions) -> None:
        raise NotFound("this backend serves no logs")

    async def metrics(self, stream: EdgeStream, path: str) -> None:
        raise NotFound(f"this backend serves no {path}")

    async def exec(self, stream: EdgeStream, ns: str, pod: str, container: str, *, attach: bool) -> None:
        raise NotFound("this backend serves no exec/attach")

    async def port_forward(self, stream: EdgeStream, ns: str, pod: str) -> None:
        raise NotFound("this backend serves no port-forward")

    async def close(self) -> None:
        return None
