"""The backend interface and the dispatch every backend shares."""

from __future__ import annotations

from typing import Protocol

from proto.tunnel import MessageType, NotFound

from ..logs_options import LogOptions
from ..stream import EdgeStream

__all__ = ["Backend", "BaseBackend", "parse_pod_path"]


class Backend(Protocol):
    async def serve(self, stream: EdgeStream) -> None:
        """Answer one stream; return when done (the session sends REMOVE_CONNECT)."""

    async def close(self) -> None: ...


def parse_pod_path(path: str, prefix: str) -> tuple[str, str, str]:
    """``/containerLogs/ns/pod/ctr`` -> (ns, pod, ctr); the uid form drops the uid."""
    parts = path[len(prefix) :].strip("/").split("/")
    if len(parts) == 4:
        parts = [parts[0], parts[1], parts[3]]
    if len(parts) != 3 or not all(parts):
        raise NotFound(f"malformed path {path}")
    return parts[0], parts[1], parts[2]


class BaseBackend:
    """Routes a stream by kind and path to ``logs``/``metrics``/``exec``/``attach``/``port_forward``."""

    async def serve(self, stream: EdgeStream) -> None:
        path = stream.request.decoded_path
        kind = stream.kind
        if kind == MessageType.LOGS_CONNECT and path.startswith("/containerLogs/"):
            ns, pod, container = parse_pod_path(path, "/containerLogs/")
            await self.logs(stream, ns, pod, container, LogOptions.from_query(stream.request.raw_query))
        elif kind == MessageType.METRIC_CONNECT:
            await self.metrics(stream, path)
        elif kind in (MessageType.EXEC_CONNECT, MessageType.ATTACH_CONNECT):
            prefix = "/exec/" if kind == MessageType.EXEC_CONNECT else "/attach/"
            ns, pod, container = parse_pod_path(path, prefix)
            await self.exec(stream, ns, pod, container, attach=kind == MessageType.ATTACH_CONNECT)
        elif kind == MessageType.PORTFORWARD_CONNECT:
            parts = path[len("/portForward/") :].strip("/").split("/")
            if len(parts) < 2:
                raise NotFound(f"malformed path {path}")
            await self.port_forward(stream, parts[0], parts[1])
        else:
            raise NotFound(f"edgestream serves no {kind} request for {path}")

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
