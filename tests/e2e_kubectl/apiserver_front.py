"""A small stand-in for kube-apiserver (>= 1.31 defaults), so real kubectl binaries drive the chain.

It serves what kubectl needs of the API (discovery, ``pods``) and, for ``pods/log``,
``pods/exec``, ``pods/attach``, ``pods/portforward`` and ``nodes/{n}/proxy``, calls the node's
kubelet endpoint (``https://<node address>:<port>`` with the kubelet-client certificate) as the
real API server does (spec ``apiserver-observed.md``):

- logs: ``GET /containerLogs/...`` (query sorted, ``Go-http-client/1.1``); a kubelet's non-2xx
  becomes the API server's Status (``GenericHttpResponseChecker``);
- node proxy: the path after ``/proxy``, kubectl's headers, ``X-Forwarded-Uri``; the answer
  relayed as is;
- exec/attach: WebSocket ``v5.channel.k8s.io`` (kubectl >= 1.30) is terminated here and
  translated to a new SPDY/3.1 connection (``front_translator``); SPDY (kubectl <= 1.29) is
  passed through;
- port-forward: WebSocket ``SPDY/3.1+portforward.k8s.io`` (kubectl >= 1.31) is unwrapped
  (``front_tunnel``); SPDY (<= 1.30) is passed through;
- a WebSocket reaches the kubelet only when the node declares ``ExtendWebSocketsToKubelet``
  (``FrontNode.extend_websockets``), or when it is not a protocol the API server translates.

HTTP is parsed with h11; nothing here imports cloudstream. One deliberate difference: the
real API server refuses node-proxy calls to a loopback node address; tests use 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import h11

from .front_http import DialError, EgressVia, HttpStream, KubeletDial, bad_request, server_response_error, status_body
from .front_translator import ExecOptions, StreamTranslator
from .front_tunnel import TUNNEL_PREFIX, forward_headers, passthrough, tunnel_port_forward
from .front_ws import WsServer, accept_key

__all__ = ["ApiServerFront", "FrontNode", "FrontPod"]

IDLE_TIMEOUT = 120.0
V5 = "v5.channel.k8s.io"


@dataclass(frozen=True)
class FrontNode:
    """A Node as the API server sees it: its InternalIP, ``kubeletEndpoint.Port``, and whether
    ``status.declaredFeatures`` lists ``ExtendWebSocketsToKubelet`` (WebSocket passthrough)."""

    name: str
    address: str = "127.0.0.1"
    port: int = 10250
    extend_websockets: bool = False


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


_RESOURCES = [{"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "verbs": ["get", "list"],
               "shortNames": ["po"]}] + [
    {"name": f"pods/{sub}", "singularName": "", "namespaced": True, "kind": kind, "verbs": ["create", "get"]}
    for sub, kind in (("log", "Pod"), ("exec", "PodExecOptions"), ("attach", "PodAttachOptions"),
                      ("portforward", "PodPortForwardOptions"))
]
_DISCOVERY = {
    "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"},
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/api/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": _RESOURCES},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
}
_LOG_KEYS = ("follow", "limitBytes", "previous", "sinceSeconds", "sinceTime", "tailLines", "timestamps")
_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "trailer"}


def _header(request: h11.Request, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in request.headers if k == name), "")


def _offered(request: h11.Request) -> list[str]:
    return [p.strip() for k, v in request.headers if k == b"sec-websocket-protocol"
            for p in v.decode("latin-1").split(",") if p.strip()]


async def _until_client_leaves(client: HttpStream, upstream: HttpStream) -> AsyncIterator[h11.Data]:
    """The body's Data events; stops (ConnectionError) as soon as kubectl closes, even while the
    kubelet sends nothing (an idle ``logs -f``), as the request context ends in Go."""
    watch: asyncio.Future[bytes] | None = asyncio.ensure_future(client.reader.read(65536))
    try:
        while True:
            step = asyncio.ensure_future(upstream.next_event())
            waiting = {step} if watch is None else {step, watch}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if watch is not None and watch.done():
                data = watch.result()
                if not data:
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
                    raise ConnectionError("the client left")
                client.h11.receive_data(data)  # a pipelined next request: h11 keeps it
                watch = None
            event = await step
            if not isinstance(event, h11.Data):
                return
            yield event
    finally:
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)


class ApiServerFront:
    """``ApiServerFront(stream_port, tls, pods)``: every node at 127.0.0.1:``stream_port`` (the
    no-DNAT wiring: kubeletEndpoint.Port = cloudstream's port); ``nodes`` overrides per node.
    ``tls_upgrade`` (default ``tls``) is the context for upgrades (ALPN http/1.1 only)."""

    def __init__(self, stream_port: int, tls: ssl.SSLContext, pods: list[FrontPod],
                 nodes: list[FrontNode] | None = None, tls_upgrade: ssl.SSLContext | None = None,
                 egress: EgressVia | None = None) -> None:
        self.stream_port = stream_port
        self.dial = KubeletDial(tls, tls_upgrade or tls, egress=egress)
        self.pods = {(p.namespace, p.name): p for p in pods}
        self.nodes = {n.name: n for n in nodes or ()}
        self.requests: list[str] = []
        """What kubectl asked: ``METHOD target upgrade=X protocols=Y``."""
        self.kubelet_requests: list[str] = []
        """What the front sent the kubelet for translated exec/attach and tunnelled port-forward."""
        self.translators: list[StreamTranslator] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def node(self, name: str) -> FrontNode:
        return self.nodes.get(name) or FrontNode(name, "127.0.0.1", self.stream_port)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def wait_idle(self, timeout: float = 10.0) -> int:
        """Wait until every kubectl connection ended; the number still alive (0 = no leak)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
        return len(self._tasks)

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
        client = HttpStream(h11.SERVER, reader, writer)
        client_ip = (writer.get_extra_info("peername") or ("",))[0]
        try:
            while True:
                request = await client.next_event(IDLE_TIMEOUT)
                if not isinstance(request, h11.Request):
                    return
                while not isinstance(await client.next_event(IDLE_TIMEOUT), h11.EndOfMessage):
                    pass  # request bodies are not used
                target = request.target.decode("latin-1")
                upgrade = _header(request, b"upgrade")
                protocols = ",".join([v.decode("latin-1") for k, v in request.headers
                                      if k == b"x-stream-protocol-version"] + _offered(request))
                self.requests.append(f"{request.method.decode()} {target} upgrade={upgrade} protocols={protocols}")
                await self._route(client, request, client_ip)
                if client.h11.our_state is not h11.DONE or client.h11.their_state is not h11.DONE:
                    return
                client.h11.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, TimeoutError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _json(self, client: HttpStream, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        await client.send(h11.Response(status_code=code, headers=[("Content-Type", "application/json"),
                                                                  ("Content-Length", str(len(data)))]),
                          h11.Data(data=data), h11.EndOfMessage())

    async def _route(self, client: HttpStream, request: h11.Request, client_ip: str) -> None:
        url = urlsplit(request.target.decode("latin-1"))
        path = url.path
        if path in _DISCOVERY:
            return await self._json(client, 200, _DISCOVERY[path])
        parts = path.strip("/").split("/")
        if len(parts) >= 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            return await self._pod(client, request, parts, url.query, client_ip)
        if len(parts) >= 5 and parts[:3] == ["api", "v1", "nodes"] and parts[4] == "proxy":
            target = "/" + "/".join(parts[5:]) + (f"?{url.query}" if url.query else "")
            return await self._node_proxy(client, request, self.node(parts[3]), target, client_ip)
        await self._json(client, 404, status_body(message="the server could not find the requested resource",
                                                  reason="NotFound", details={}, code=404))

    async def _pod(self, client: HttpStream, request: h11.Request, parts: list[str], raw_query: str,
                   client_ip: str) -> None:
        ns, name = parts[3], parts[5]
        pod = self.pods.get((ns, name))
        if pod is None:
            return await self._json(client, 404, status_body(message=f'pods "{name}" not found', reason="NotFound",
                                                             details={"name": name, "kind": "pods"}, code=404))
        if len(parts) == 6:
            return await self._json(client, 200, pod.to_json())
        sub = parts[6]
        query = parse_qs(raw_query, keep_blank_values=True)
        container = query.get("container", [pod.containers[0]])[0] or pod.containers[0]
        if sub in ("log", "exec", "attach") and container not in pod.containers:
            return await self._json(client, 400, bad_request(f"container {container} is not valid for pod {name}"))
        node = self.node(pod.node)
        if sub == "log":
            pairs = [(k, v) for k in _LOG_KEYS for v in query.get(k, [])]  # url.Values.Encode: keys sorted
            target = f"/containerLogs/{ns}/{name}/{container}" + (f"?{urlencode(pairs)}" if pairs else "")
            return await self._logs(client, node, target, name)
        ws = _header(request, b"upgrade").lower() == "websocket"
        if client.h11.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
            return await self._json(client, 400, bad_request("Upgrade request required"))
        if sub in ("exec", "attach"):
            flag = {k: query.get(k, ["false"])[-1] in ("true", "1") for k in ("stdin", "stdout", "stderr", "tty")}
            pairs = [("command", c) for c in query.get("command", [])] if sub == "exec" else []
            pairs += [(k, "1") for kube, k in (("stderr", "error"), ("stdin", "input"), ("stdout", "output"),
                                              ("tty", "tty")) if flag[kube]]
            target = f"/{sub}/{ns}/{name}/{container}?{urlencode(pairs)}"
            if ws and V5 in _offered(request) and not node.extend_websockets:
                return await self._translate(client, request, node, target,
                                             ExecOptions(flag["stdin"], flag["stdout"], flag["stderr"], flag["tty"]))
        elif sub == "portforward":
            tunnel = ws and any(p.startswith(TUNNEL_PREFIX) for p in _offered(request))
            ports = query.get("ports", [])
            query_ports = f"?{urlencode([('port', p) for p in ports])}" if ports else ""
            target = f"/portForward/{ns}/{name}{query_ports}"
            if tunnel and not node.extend_websockets:
                return await tunnel_port_forward(client, request, self.dial, node.address, node.port, target,
                                                 client_ip, self.kubelet_requests.append)
        else:
            return await self._json(client, 404, status_body(message="the server could not find the requested "
                                                             "resource", reason="NotFound", code=404))
        headers = forward_headers(request, client_ip)
        await passthrough(client, self.dial, node.address, node.port, request.method.decode(), target, headers)

    async def _translate(self, client: HttpStream, request: h11.Request, node: FrontNode, target: str,
                         options: ExecOptions) -> None:
        key = _header(request, b"sec-websocket-key")
        if not key or _header(request, b"sec-websocket-version") != "13":
            return await self._json(client, 400, bad_request("not a WebSocket handshake"))
        await client.send(h11.InformationalResponse(status_code=101, reason=b"Switching Protocols", headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(key)),
            ("Sec-WebSocket-Protocol", V5)]))
        ws = WsServer(client.reader, client.writer, client.trailing())
        translator = StreamTranslator(ws, options, self.dial, node.address, node.port, target,
                                      self.kubelet_requests.append)
        self.translators.append(translator)
        await translator.run()

    async def _logs(self, client: HttpStream, node: FrontNode, target: str, pod: str) -> None:
        headers = [("Host", f"{node.address}:{node.port}"), ("User-Agent", "Go-http-client/1.1"),
                   ("Accept-Encoding", "gzip")]
        await self._get(client, node, target, headers, pod=pod)

    async def _node_proxy(self, client: HttpStream, request: h11.Request, node: FrontNode, target: str,
                          client_ip: str) -> None:
        headers = forward_headers(request, client_ip, drop={"connection"},
                                  replace={"X-Forwarded-Uri": [request.target.decode("latin-1")]})
        await self._get(client, node, target, headers)

    async def _get(self, client: HttpStream, node: FrontNode, target: str, headers: list[tuple[str, str]],
                   pod: str = "") -> None:
        """One GET to the kubelet. Logs (``pod`` set): Go's transport un-gzips, a non-2xx becomes
        the API server's Status. Node proxy: status, headers and body relayed as they are."""
        try:
            upstream = await self.dial.open(node.address, node.port, upgrade=False)
        except DialError as exc:  # Go's url.Error for a logs GET; the proxy's transport error for the node proxy
            url = f"https://{node.address}:{node.port}{target}"
            return await self._json(client, 500, status_body(message=f'Get "{url}": {exc}' if pod else str(exc),
                                                             code=500))
        try:
            request = h11.Request(method="GET", target=target, headers=headers)
            self.dial.record(request)
            await upstream.send(request, h11.EndOfMessage())
            response = await upstream.next_event(30.0)
            if not isinstance(response, h11.Response):
                raise ConnectionError(f"the kubelet endpoint answered {response!r}")
            answer = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw_items()]
            gzipped = any(k.lower() == "content-encoding" and v == "gzip" for k, v in answer)
            if pod and not 200 <= response.status_code <= 206:
                body = bytearray()
                while isinstance(event := await upstream.next_event(30.0), h11.Data):
                    body += event.data[: 50_000 - len(body)]
                text = zlib.decompress(bytes(body), 31) if gzipped else bytes(body)
                error = server_response_error(response.status_code, "pods/log", pod, text.decode(errors="replace"))
                return await self._json(client, error["code"], error)
            inflate = zlib.decompressobj(31) if pod and gzipped else None
            if pod:
                answer = [("Content-Type", "text/plain")]
            else:
                answer = [(k, v) for k, v in answer if k.lower() not in _HOP]
            await client.send(h11.Response(status_code=response.status_code, headers=answer))
            async with contextlib.aclosing(_until_client_leaves(client, upstream)) as events:
                async for event in events:
                    data = inflate.decompress(event.data) if inflate else event.data
                    if data:
                        await client.send(h11.Data(data=data))  # flushed per chunk: logs -f streams
            await client.send(h11.EndOfMessage())
        finally:
            upstream.close()
            with contextlib.suppress(Exception):
                await upstream.writer.wait_closed()
