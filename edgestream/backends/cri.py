"""The containerd backend: kubelet's streaming API answered from the CRI.

* logs: the CRI log file of the resolved container (``cri_logs``);
* exec/attach/port-forward: a fresh single-use streaming URL from CRI Exec/Attach/PortForward,
  then the original upgrade request is replayed to it and raw bytes are spliced both ways (we
  never parse SPDY or WebSocket: containerd's ``101`` or its refusal, e.g. ``403`` for
  ``v5.channel.k8s.io``, goes back unchanged, so kubectl can fall back with a new request);
* ``/stats/summary`` and ``/metrics/resource`` (``cri_stats``).

Pods and containers are found by the labels kubelet puts on them
(``io.kubernetes.pod.namespace``/``.name``/``.uid``, ``io.kubernetes.container.name``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from streamproto.cri.v1 import api_pb2
from streamproto.tunnel import Ambiguous, BackendError, NotFound, NotRunning, TunnelError

from ..config import EdgeConfig
from ..logs_options import BadLogOptions, LogOptions
from ..stream import EdgeStream
from . import cri_stats
from . import relay
from .base import BaseBackend
from .relay import build_head
from .cri_client import CriBadRequest, CriClient
from .cri_logs import stream_log_file

__all__ = ["CriBackend", "Resolved", "StreamingUnreachable"]

logger = logging.getLogger(__name__)

LABEL_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_NAME = "io.kubernetes.pod.name"
LABEL_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER = "io.kubernetes.container.name"

RELAY_READ = 64 * 1024

# Request headers not replayed to containerd's streaming server: Host is rewritten, the
# credentials are the API server's (not containerd's business), and these hop-by-hop ones
# describe the previous hop's connection (a stale Transfer-Encoding would make containerd wait
# for a body). Connection, Upgrade, X-Stream-Protocol-Version and Sec-WebSocket-* are kept.
_STATE_NAMES = {
    api_pb2.CONTAINER_CREATED: "created",
    api_pb2.CONTAINER_RUNNING: "running",
    api_pb2.CONTAINER_EXITED: "exited",
    api_pb2.CONTAINER_UNKNOWN: "unknown",
}


class StreamingUnreachable(BackendError):
    """containerd's streaming server did not take the connection."""

    error_status_hint = 502


@dataclass(frozen=True, slots=True)
class Resolved:
    sandbox: api_pb2.PodSandbox
    container: api_pb2.Container


def _state(c: api_pb2.Container) -> str:
    return _STATE_NAMES.get(c.state, str(c.state))


def _container_name(c: api_pb2.Container) -> str:
    return c.labels.get(LABEL_CONTAINER) or c.metadata.name


def _path_uid(path: str, prefix: str, parts_with_uid: int) -> str | None:
    """The pod uid of ``/prefix/ns/pod/uid[/container]`` paths (``parse_pod_path`` drops it)."""
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].strip("/").split("/")
    if len(parts) != parts_with_uid:
        return None
    return parts[2] or None


def _flag(query: dict[str, list[str]], *names: str) -> bool:
    for name in names:
        values = query.get(name)
        if values:
            return values[-1].strip().lower() in ("1", "true")
    return False


class CriBackend(BaseBackend):
    def __init__(self, config: EdgeConfig, client: CriClient | None = None) -> None:
        self.config = config
        self.client = client if client is not None else CriClient(config.cri_endpoint, config.cri_timeout)

    async def close(self) -> None:
        await self.client.close()

    # ------------------------------------------------------------------ resolution

    async def resolve_sandbox(self, ns: str, pod: str, uid: str | None = None) -> api_pb2.PodSandbox:
        """The pod's sandbox: the READY one (newest), else the newest of any state."""
        labels = {LABEL_NAMESPACE: ns, LABEL_NAME: pod}
        if uid:
            labels[LABEL_UID] = uid
        sandboxes = await self.client.list_pod_sandboxes(labels)
        if not sandboxes:
            extra = f" with uid {uid}" if uid else ""
            raise NotFound(f'pod "{ns}/{pod}"{extra} is not on this node')
        ready = [s for s in sandboxes if s.state == api_pb2.SANDBOX_READY]
        pool = ready or sandboxes
        if not uid:
            uids = sorted({s.labels.get(LABEL_UID) or s.metadata.uid for s in ready})
            if len(uids) > 1:
                raise Ambiguous(
                    f'{len(uids)} running pods are named "{ns}/{pod}" on this node (uids {", ".join(uids)}); '
                    "ask with the pod uid in the path"
                )
        return max(pool, key=lambda s: (s.created_at, s.metadata.attempt))

    async def resolve(
        self,
        ns: str,
        pod: str,
        container: str,
        *,
        uid: str | None = None,
        previous: bool = False,
        require_running: bool = False,
    ) -> Resolved:
        """The container instance a request means.

        Current: the running instance with the highest attempt, else the newest one (logs of a
        finished container). ``previous``: the instance with attempt = current - 1, else the
        newest exited one older than the current.
        """
        sandbox = await self.resolve_sandbox(ns, pod, uid)
        pod_uid = sandbox.labels.get(LABEL_UID) or sandbox.metadata.uid
        if pod_uid:
            # Every instance of the pod, also in earlier sandboxes (kubelet recreates sandboxes).
            labels = {LABEL_NAMESPACE: ns, LABEL_NAME: pod, LABEL_UID: pod_uid}
            everything = await self.client.list_containers(labels)
        else:
            everything = await self.client.list_containers(pod_sandbox_id=sandbox.id)
        mine = [c for c in everything if _container_name(c) == container]
        if not mine:
            names = sorted({_container_name(c) for c in everything})
            listed = ", ".join(names) if names else "none"
            raise NotFound(f'container "{container}" is not in pod "{ns}/{pod}" (its containers: {listed})')

        def order(c: api_pb2.Container) -> tuple[int, int]:
            return (c.metadata.attempt, c.created_at)

        running = [c for c in mine if c.state == api_pb2.CONTAINER_RUNNING]
        current = max(running, key=order) if running else max(mine, key=order)
        if previous:
            older = [c for c in mine if c.id != current.id and order(c) < order(current)]
            exact = [c for c in older if c.metadata.attempt == current.metadata.attempt - 1]
            exited = [c for c in older if c.state == api_pb2.CONTAINER_EXITED]
            chosen = exact or exited
            if not chosen:
                raise BadLogOptions(f'previous terminated container "{container}" in pod "{ns}/{pod}" not found')
            return Resolved(sandbox, max(chosen, key=order))
        if require_running and current.state != api_pb2.CONTAINER_RUNNING:
            raise NotRunning(f'container "{container}" in pod "{ns}/{pod}" is not running (state {_state(current)})')
        return Resolved(sandbox, current)

    # ------------------------------------------------------------------ logs

    async def logs(self, stream: EdgeStream, ns: str, pod: str, container: str, options: LogOptions) -> None:
        uid = _path_uid(stream.request.decoded_path, "/containerLogs/", 4)
        found = await self.resolve(ns, pod, container, uid=uid, previous=options.previous)
        cid = found.container.id
        status = await self.client.container_status(cid)
        if not status.log_path:
            raise BackendError(f'container "{container}" in pod "{ns}/{pod}" has no log file (empty CRI log_path)')

        async def is_running() -> bool:
            try:
                st = await self.client.container_status(cid)
            except NotFound:
                return False
            except BackendError as exc:  # containerd restarting: keep following
                logger.warning("! logs of %s: %s", cid[:12], exc)
                return True
            return st.state in (api_pb2.CONTAINER_RUNNING, api_pb2.CONTAINER_CREATED)

        await stream_log_file(stream, status.log_path, options, is_running=is_running)

    # ------------------------------------------------------------------ metrics

    async def metrics(self, stream: EdgeStream, path: str) -> None:
        clean = path.rstrip("/") or "/"
        if clean in cri_stats.SUMMARY_PATHS:
            query = stream.query()
            only = _flag(query, "only_cpu_and_memory")
            document = await cri_stats.summary(self.client, self.config.node_name, only_cpu_and_memory=only)
            await stream.answer(200)
            await stream.send(cri_stats.summary_json(document))
        elif clean in cri_stats.RESOURCE_METRICS_PATHS:
            body = await cri_stats.resource_metrics(self.client)
            await stream.answer(200)
            await stream.send(body)
        else:
            raise cri_stats.metrics_not_found(path)

    # ------------------------------------------------------------------ exec / attach / port-forward

    async def exec(self, stream: EdgeStream, ns: str, pod: str, container: str, *, attach: bool) -> None:
        prefix = "/attach/" if attach else "/exec/"
        try:
            uid = _path_uid(stream.request.decoded_path, prefix, 4)
            query = stream.query()
            stdin = _flag(query, "input", "stdin")
            stdout = _flag(query, "output", "stdout")
            stderr = _flag(query, "error", "stderr")
            tty = _flag(query, "tty")
            if tty and stderr:
                stderr = False  # kubelet: a tty merges stderr into stdout
            if not (stdin or stdout or stderr):
                raise CriBadRequest("you must specify at least 1 of stdin, stdout, stderr")
            command = query.get("command", [])
            if not attach and not command:
                raise CriBadRequest("you must specify at least one command for the container")
            found = await self.resolve(ns, pod, container, uid=uid, require_running=True)
            cid = found.container.id
            if attach:
                url = await self.client.attach(cid, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)
            else:
                url = await self.client.exec(cid, command, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)
        except TunnelError as exc:
            await self._refuse(stream, exc)
            return
        await self._relay(stream, url, "")

    async def port_forward(self, stream: EdgeStream, ns: str, pod: str) -> None:
        try:
            uid = _path_uid(stream.request.decoded_path, "/portForward/", 3)
            query = stream.query()
            ports: list[int] = []
            for value in query.get("port", []):  # WebSocket only; SPDY names ports in stream headers
                try:
                    port = int(value)
                except ValueError:
                    raise CriBadRequest(f"port {value!r} is not a number") from None
                if not 0 < port < 65536:
                    raise CriBadRequest(f"port {port} is out of range")
                ports.append(port)
            sandbox = await self.resolve_sandbox(ns, pod, uid)
            if sandbox.state != api_pb2.SANDBOX_READY:
                raise NotRunning(f'pod "{ns}/{pod}" is not running (its sandbox is not ready)')
            url = await self.client.port_forward(sandbox.id, ports)
        except TunnelError as exc:
            await self._refuse(stream, exc)
            return
        # The query (?port=N for WebSocket) is not bound to the token: containerd reads it.
        await self._relay(stream, url, stream.request.raw_query)

    async def _refuse(self, stream: EdgeStream, exc: TunnelError) -> None:
        logger.info("! %s %s: %s", stream.request.method or "", stream.request.path, exc)
        try:
            await stream.answer(exc.error_status_hint, str(exc))
        except TunnelError:
            pass

    def request_head(self, stream: EdgeStream, url: str, query: str) -> tuple[str, int, bool, bytes]:
        """(host, port, tls, the request head to send to containerd's streaming server)."""
        target = urlsplit(url)
        if target.scheme not in ("http", "https") or not target.hostname:
            raise BackendError(f"containerd returned an unusable streaming URL {url!r}")
        tls = target.scheme == "https"
        port = target.port or (443 if tls else 80)
        path = target.path or "/"
        if target.query:
            path += "?" + target.query
        if query:
            path += ("&" if "?" in path else "?") + query
        head = build_head(stream, stream.request.method or "GET", path, target.netloc)
        return target.hostname, port, tls, head

    async def _relay(self, stream: EdgeStream, url: str, query: str) -> None:
        """Replay the upgrade request to ``url`` and splice bytes until either side ends."""
        try:
            host, port, tls, head = self.request_head(stream, url, query)
        except TunnelError as exc:
            await self._refuse(stream, exc)
            return
        if not tls:
            await self._relay_plain(stream, url, host, port, head)
            return
        try:
            # containerd's TLS streaming uses a self-signed certificate made at start-up;
            # the URL came to us over the local CRI socket, so the socket is what we trust.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context), self.config.cri_timeout
            )
        except (TimeoutError, OSError) as exc:
            await self._refuse(
                stream, StreamingUnreachable(f"cannot reach containerd's streaming server at {url}: {exc}")
            )
            return
        try:
            writer.write(head)
            await writer.drain()
            down = asyncio.create_task(self._down(reader, stream), name=f"cri-down-{stream.connect_id}")
            up = asyncio.create_task(self._up(stream, writer), name=f"cri-up-{stream.connect_id}")
            await relay.first_of(down, up)
        except ConnectionError:
            pass  # containerd went away mid-request: the stream just ends
        finally:
            writer.close()

    async def _relay_plain(self, stream: EdgeStream, url: str, host: str, port: int, head: bytes) -> None:
        """The common case (plain-HTTP streaming server): our own socket, so containerd's
        bytes are received straight into the tunnel frame: no copy in our code."""
        try:
            sock = await relay.connect(host, port, self.config.cri_timeout, f"containerd's streaming server ({url})")
        except relay.Unreachable as exc:
            await self._refuse(stream, StreamingUnreachable(str(exc)))
            return
        await relay.relay_plain(stream, sock, head)

    async def _down(self, reader: asyncio.StreamReader, stream: EdgeStream) -> None:
        """containerd -> cloud, until containerd closes."""
        while True:
            data = await reader.read(RELAY_READ)
            if not data:
                return
            await stream.send(data)

    async def _up(self, stream: EdgeStream, writer: asyncio.StreamWriter) -> None:
        """cloud -> containerd, until the cloud's side ends."""
        while True:
            chunk = await stream.read()
            if chunk is None:
                if writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    # ------------------------------------------------------------------ helpers for callers

    async def version(self) -> str:
        v = await self.client.version()
        return f"{v.runtime_name} {v.runtime_version} (CRI {v.runtime_api_version})"

