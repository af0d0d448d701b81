"""An asyncio client for containerd's CRI ``runtime.v1`` API.

One long-lived ``grpc.aio`` channel to the unix socket (created on first use, inside the
running loop), a deadline on every call, and one place, :meth:`CriClient._map_errors`, that
turns gRPC status codes into the project's errors::

    NOT_FOUND                         -> NotFound        (404)
    UNAVAILABLE                       -> CriUnavailable  (503) "containerd is not reachable at <socket>"
    DEADLINE_EXCEEDED                 -> CriTimeout      (504)
    UNIMPLEMENTED                     -> CriUnsupported  (501)
    INVALID_ARGUMENT, OUT_OF_RANGE    -> CriBadRequest   (400)
    FAILED_PRECONDITION, and UNKNOWN
      saying "... is in CONTAINER_EXITED state" / "not running"
                                      -> NotRunning      (400)
    anything else                     -> BackendError    (500)

Every error names the CRI method and keeps containerd's own message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from streamproto.cri.v1 import api_pb2, api_pb2_grpc
from streamproto.tunnel.errors import BackendError, NotFound, NotRunning

__all__ = ["CriBadRequest", "CriClient", "CriTimeout", "CriUnavailable", "CriUnsupported"]

_MAX_MESSAGE = 16 << 20
"""kubelet's CRI message limit (ListContainers/ListContainerStats on a busy node grow)."""


class CriUnavailable(BackendError):
    error_status_hint = 503


class CriTimeout(BackendError):
    error_status_hint = 504


class CriUnsupported(BackendError):
    error_status_hint = 501


class CriBadRequest(BackendError):
    error_status_hint = 400


def _normalize(endpoint: str) -> str:
    """``/run/x.sock`` or ``unix:/run/x.sock`` or ``unix:///run/x.sock`` -> ``unix:///run/x.sock``."""
    if endpoint.startswith("unix://"):
        return endpoint
    if endpoint.startswith("unix:"):
        return "unix://" + endpoint[len("unix:") :]
    if endpoint.startswith("/"):
        return "unix://" + endpoint
    return endpoint  # e.g. "localhost:1234": grpc understands it as is


class CriClient:
    """containerd's CRI RuntimeService (and ImageFsInfo), async.

    ``endpoint``: ``unix:///run/containerd/containerd.sock`` (a bare path works too).
    ``timeout``: seconds for every call.
    """

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        self.endpoint = _normalize(endpoint)
        self.socket = self.endpoint.removeprefix("unix://")
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._runtime: api_pb2_grpc.RuntimeServiceStub | None = None
        self._images: api_pb2_grpc.ImageServiceStub | None = None

    # ------------------------------------------------------------------ plumbing

    def _stubs(self) -> tuple[api_pb2_grpc.RuntimeServiceStub, api_pb2_grpc.ImageServiceStub]:
        if self._channel is None:
            # Created lazily: a grpc.aio channel belongs to the loop that is running when it is made.
            self._channel = grpc.aio.insecure_channel(
                self.endpoint,
                options=[
                    ("grpc.max_receive_message_length", _MAX_MESSAGE),
                    ("grpc.max_send_message_length", _MAX_MESSAGE),
                ],
            )
            self._runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
            self._images = api_pb2_grpc.ImageServiceStub(self._channel)
        assert self._runtime is not None and self._images is not None
        return self._runtime, self._images

    @contextlib.contextmanager
    def _map_errors(self, method: str) -> Iterator[None]:
        """The one place where gRPC failures become project errors."""
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            details = exc.details() or code.name
            what = f"CRI {method}"
            if code == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"{what}: {details}") from None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise CriUnavailable(
                    f"containerd is not reachable at {self.socket} ({what}: {details}); is containerd running?"
                ) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise CriTimeout(f"{what} took longer than {self.timeout:g}s (containerd at {self.socket})") from None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise CriUnsupported(f"{what} is not implemented by this containerd: {details}") from None
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
                raise CriBadRequest(f"{what}: {details}") from None
            lowered = details.lower()
            if code == grpc.StatusCode.FAILED_PRECONDITION or (
                "container_exited" in lowered or "not running" in lowered or "is in container_" in lowered
            ):
                raise NotRunning(f"{what}: {details}") from None
            raise BackendError(f"{what} failed ({code.name}): {details}") from None

    async def _call(self, method: str, request: Any, *, images: bool = False) -> Any:
        runtime, image_service = self._stubs()
        fn = getattr(image_service if images else runtime, method)
        with self._map_errors(method):
            return await fn(request, timeout=self.timeout)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._runtime = self._images = None
        if channel is not None:
            await channel.close()

    # ------------------------------------------------------------------ calls

    async def version(self) -> api_pb2.VersionResponse:
        return await self._call("Version", api_pb2.VersionRequest(version="v1"))

    async def list_pod_sandboxes(
        self, labels: Mapping[str, str] | None = None, *, state: int | None = None, id: str = ""
    ) -> list[api_pb2.PodSandbox]:
        flt = api_pb2.PodSandboxFilter(id=id, label_selector=dict(labels or {}))
        if state is not None:
            flt.state.state = state  # type: ignore[assignment]
        resp = await self._call("ListPodSandbox", api_pb2.ListPodSandboxRequest(filter=flt))
        return list(resp.items)

    async def pod_sandbox_status(self, pod_sandbox_id: str) -> api_pb2.PodSandboxStatus:
        resp = await self._call("PodSandboxStatus", api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_sandbox_id))
        return resp.status

    async def list_containers(
        self, labels: Mapping[str, str] | None = None, *, pod_sandbox_id: str = "", state: int | None = None
    ) -> list[api_pb2.Container]:
        flt = api_pb2.ContainerFilter(pod_sandbox_id=pod_sandbox_id, label_selector=dict(labels or {}))
        if state is not None:
            flt.state.state = state  # type: ignore[assignment]
        resp = await self._call("ListContainers", api_pb2.ListContainersRequest(filter=flt))
        return list(resp.containers)

    async def container_status(self, container_id: str) -> api_pb2.ContainerStatus:
        resp = await self._call("ContainerStatus", api_pb2.ContainerStatusRequest(container_id=container_id))
        return resp.status

    async def exec(
        self, container_id: str, cmd: Sequence[str], *, tty: bool, stdin: bool, stdout: bool, stderr: bool
    ) -> str:
        """A fresh single-use streaming URL (containerd expires it after about a minute)."""
        req = api_pb2.ExecRequest(
            container_id=container_id, cmd=list(cmd), tty=tty, stdin=stdin, stdout=stdout, stderr=stderr
        )
        return (await self._call("Exec", req)).url

    async def attach(self, container_id: str, *, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> str:
        req = api_pb2.AttachRequest(container_id=container_id, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)
        return (await self._call("Attach", req)).url

    async def port_forward(self, pod_sandbox_id: str, ports: Sequence[int] = ()) -> str:
        req = api_pb2.PortForwardRequest(pod_sandbox_id=pod_sandbox_id, port=list(ports))
        return (await self._call("PortForward", req)).url

    async def list_container_stats(
        self, labels: Mapping[str, str] | None = None, *, pod_sandbox_id: str = "", id: str = ""
    ) -> list[api_pb2.ContainerStats]:
        flt = api_pb2.ContainerStatsFilter(id=id, pod_sandbox_id=pod_sandbox_id, label_selector=dict(labels or {}))
        resp = await self._call("ListContainerStats", api_pb2.ListContainerStatsRequest(filter=flt))
        return list(resp.stats)

    async def list_pod_sandbox_stats(
        self, labels: Mapping[str, str] | None = None, *, id: str = ""
    ) -> list[api_pb2.PodSandboxStats]:
        flt = api_pb2.PodSandboxStatsFilter(id=id, label_selector=dict(labels or {}))
        resp = await self._call("ListPodSandboxStats", api_pb2.ListPodSandboxStatsRequest(filter=flt))
        return list(resp.stats)

    async def image_fs_info(self) -> list[api_pb2.FilesystemUsage]:
        resp = await self._call("ImageFsInfo", api_pb2.ImageFsInfoRequest(), images=True)
        return list(resp.image_filesystems)
