"""A small stand-in for kube-apiserver, so that real kubectl binaries can drive the chain.

It does for ``pods``, ``pods/log``, ``pods/exec``, ``pods/attach`` and ``pods/portforward``
what the API server does (spec ``apiserver-observed.md``): GET the pod, then call the node's
kubelet endpoint — here cloudstream:10003 with the kubelet-client certificate and
``Host: <node>:10250`` — translating kubectl's query into the kubelet's, and for upgrades
forwarding the request head and splicing raw bytes both ways (the passthrough an API server
< 1.30 does; the edge's ``101`` or refusal comes back unchanged, so kubectl's WebSocket ->
SPDY fallback happens for real).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from cloudstream.kubelet_api.http1 import HttpError, RequestHead, parse_request_head


@dataclass(frozen=True)
class FrontPod:
    namespace: str
    name: str
    node: str
    containers: tuple[str, ...]
    uid: str = ""

    def to_json(self) -> dict:
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid or f"uid-{self.name}"},
            "spec": {"nodeName": self.node, "containers": [{"name": c, "image": "busybox"} for c in self.containers]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": c, "ready": True, "restartCount": 0, "image": "busybox", "imageID": "",
                     "state": {"running": {"startedAt": "2026-11-25T00:00:00Z"}}}
                    for c in self.containers
                ],
            },
        }


def _status(code: int, message: str, reason: str = "") -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason or {404: "NotFound"}.get(code, "InternalError"),
                       "code": code}).encode()


_RESOURCES = [{"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "verbs": ["get", "list"],
               "shortNames": ["po"]}] + [
    {"name": f"pods/{sub}", "singularName": "", "namespaced": True, "kind": kind, "verbs": ["create", "get"]}
    for sub, kind in (("log", "Pod"), ("exec", "PodExecOptions"), ("attach", "PodAttachOptions"),
                      ("portforward", "PodPortForwardOptions"))
]
_UPGRADE_HEADERS = ("connection", "upgrade", "x-stream-protocol-version", "sec-websocket-key", "sec-websocket-version",
                    "sec-websocket-protocol", "sec-websocket-extensions", "content-length", "user-agent",
                    "kubectl-command", "kubectl-session")


class ApiServerFront:
    def __init__(self, stream_port: int, tls: ssl.SSLContext, pods: list[FrontPod]) -> None:
        self.stream_port = stream_port
        self.tls = tls
        self.pods = {(p.namespace, p.name): p for p in pods}
        self.requests: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = parse_request_head(await reader.readuntil(b"\r\n\r\n"))
                except (asyncio.IncompleteReadError, HttpError, ConnectionError):
                    return
                length = head.content_length
                if length and not head.is_upgrade:
                    await reader.readexactly(length)
                upgrade = head.header("Upgrade") or ""
                protocols = ",".join(v for k, v in head.headers if k.lower() in ("x-stream-protocol-version", "sec-websocket-protocol"))
                self.requests.append(f"{head.method} {head.target} upgrade={upgrade} protocols={protocols}")
                if not await self._route(head, reader, writer):
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    def _reply(self, writer: asyncio.StreamWriter, code: int, body: bytes, ctype: str = "application/json") -> None:
        writer.write(f"HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    async def _route(self, head: RequestHead, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        path = head.path
        if path == "/version":
            self._reply(writer, 200, json.dumps({"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                                                 "platform": "linux/amd64"}).encode())
        elif path == "/api":
            self._reply(writer, 200, json.dumps({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}).encode())
        elif path == "/api/v1":
            self._reply(writer, 200, json.dumps({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
                                                 "resources": _RESOURCES}).encode())
        elif path == "/apis":
            self._reply(writer, 200, json.dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}).encode())
        else:
            parts = path.strip("/").split("/")
            if len(parts) >= 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
                return await self._pod(head, parts, reader, writer)
            if len(parts) >= 5 and parts[:3] == ["api", "v1", "nodes"] and parts[4] == "proxy":
                # node proxy: the kubelet sees the path after /proxy, Host = the API server, and
                # X-Forwarded-Uri naming the node (apiserver-observed.md)
                target = "/" + "/".join(parts[5:]) + (f"?{head.raw_query}" if head.raw_query else "")
                await self._proxy_get(None, target, writer, node=parts[3], forwarded=head.target)
                return True
            self._reply(writer, 404, _status(404, f"the server could not find the requested resource {path}"))
        await writer.drain()
        return True

    async def _pod(self, head: RequestHead, parts: list[str], reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> bool:
        ns, name = parts[3], parts[5]
        pod = self.pods.get((ns, name))
        if pod is None:
            self._reply(writer, 404, _status(404, f'pods "{name}" not found'))
            await writer.drain()
            return True
        if len(parts) == 6:
            self._reply(writer, 200, json.dumps(pod.to_json()).encode())
            await writer.drain()
            return True
        sub = parts[6]
        query = parse_qs(head.raw_query, keep_blank_values=True)
        container = query.get("container", [pod.containers[0]])[0]
        if sub == "log":
            kubelet_query = [(k, v) for k in ("follow", "previous", "timestamps", "tailLines", "sinceSeconds", "sinceTime",
                                               "limitBytes") for v in query.get(k, [])]
            target = f"/containerLogs/{ns}/{name}/{container}" + (f"?{urlencode(kubelet_query)}" if kubelet_query else "")
            await self._proxy_get(pod, target, writer)
            return True
        if sub in ("exec", "attach"):
            flags = [(k, "1") for kube, k in (("stdin", "input"), ("stdout", "output"), ("stderr", "error"), ("tty", "tty"))
                     if query.get(kube, ["false"])[-1] in ("true", "1")]
            kubelet_query = [("command", c) for c in query.get("command", [])] + flags
            target = f"/{sub}/{ns}/{name}/{container}?{urlencode(kubelet_query)}"
        elif sub == "portforward":
            ports = query.get("ports", [])
            ws = (head.header("Upgrade") or "").lower() == "websocket"
            target = f"/portForward/{ns}/{name}" + (f"?{urlencode([('port', p) for p in ports])}" if ws and ports else "")
        else:
            self._reply(writer, 404, _status(404, f"no subresource {sub}"))
            await writer.drain()
            return True
        await self._passthrough(pod, head, target, reader, writer)
        return False

    async def _open(self, pod: FrontPod | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.stream_port, ssl=self.tls, server_hostname="localhost")

    async def _proxy_get(self, pod: FrontPod | None, target: str, writer: asyncio.StreamWriter, node: str = "",
                         forwarded: str = "") -> None:
        up_reader, up_writer = await self._open(pod)
        host = f"{pod.node}:10250" if pod is not None else "apiserver.front:6443"
        extra = f"X-Forwarded-Uri: {forwarded}\r\n" if forwarded else ""
        try:
            up_writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n"
                            f"Accept-Encoding: identity\r\n{extra}Connection: close\r\n\r\n".encode())
            status = int((await up_reader.readline()).split()[1])
            headers = {}
            while (line := await up_reader.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            if status != 200:
                body = await up_reader.read()
                self._reply(writer, status, _status(status, body.decode(errors="replace").strip()))
                await writer.drain()
                return
            ctype = headers.get("content-type", "text/plain")
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            while True:  # re-chunk as it arrives
                size = int((await up_reader.readline()).strip() or b"0", 16)
                if size == 0:
                    break
                data = await up_reader.readexactly(size + 2)
                writer.write(b"%x\r\n" % size + data)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            up_writer.close()

    async def _passthrough(self, pod: FrontPod, head: RequestHead, target: str, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await self._open(pod)
        lines = [f"{head.method} {target} HTTP/1.1", f"Host: {pod.node}:10250"]
        lines += [f"{k}: {v}" for k, v in head.headers if k.lower() in _UPGRADE_HEADERS]
        up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                if dst.can_write_eof():
                    try:
                        dst.write_eof()
                    except (OSError, RuntimeError):
                        pass

        try:
            a = asyncio.create_task(pipe(reader, up_writer))
            b = asyncio.create_task(pipe(up_reader, writer))
            await asyncio.wait((a, b), return_when=asyncio.FIRST_COMPLETED)
            await asyncio.wait((a, b), timeout=2)
            for t in (a, b):
                t.cancel()
        finally:
            up_writer.close()
