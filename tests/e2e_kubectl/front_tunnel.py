"""Upgrades the API server proxies without translating: the UpgradeAwareProxy's passthrough
(SPDY from kubectl <= 1.29 exec/attach and <= 1.30 port-forward; WebSocket when the node
declares ExtendWebSocketsToKubelet) and port-forward tunnelling (kubectl >= 1.31 sends
WebSocket ``SPDY/3.1+portforward.k8s.io``; ``streamtunnel.go`` sends the kubelet a plain SPDY
POST and carries the SPDY bytes inside binary WebSocket messages).

A kubelet's refusal (403, 404 ...) comes back to kubectl as an HTTP answer and the connection
is closed, as the proxy does: kubectl >= 1.30 then falls back to SPDY on a new request.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
from collections.abc import Callable

import h11

from .front_http import HttpStream, KubeletDial, Upstream, go_header_name, status_body
from .front_ws import WsServer, accept_key

__all__ = ["TUNNEL_PREFIX", "forward_headers", "passthrough", "tunnel_port_forward"]

TUNNEL_PREFIX = "SPDY/3.1+"
_DROPPED = {"host", "user-agent", "content-length", "authorization", "x-forwarded-for"}


def forward_headers(request: h11.Request, client_ip: str, replace: dict[str, list[str]] | None = None,
                    drop: set[str] = frozenset(), content_length: str | None = None) -> list[tuple[str, str]]:
    """The head Go's ``Request.Write`` sends for the proxy's clone of kubectl's request: Host
    (the API server as kubectl addressed it), User-Agent, Content-Length, then every other
    header sorted, names canonical, X-Forwarded-For appended, credentials gone."""
    values: dict[str, list[str]] = {}
    for name, value in request.headers.raw_items():
        values.setdefault(go_header_name(name.decode("latin-1")), []).append(value.decode("latin-1"))
    first = {k.lower(): v[0] for k, v in values.items()}
    out = [("Host", first.get("host", "")), ("User-Agent", first.get("user-agent", "Go-http-client/1.1"))]
    length = content_length if content_length is not None else first.get("content-length")
    if length is not None:
        out.append(("Content-Length", length))
    forwarded = values.get("X-Forwarded-For", [])
    values = {k: v for k, v in values.items() if k.lower() not in _DROPPED | drop
              and not k.lower().startswith("impersonate-")}
    values.update(replace or {})
    values["X-Forwarded-For"] = [", ".join(forwarded + [client_ip])]
    for name in sorted(values):
        out += [(name, v) for v in values[name]]
    return out


def _dial_failed(exc: BaseException) -> tuple[int, bytes]:
    """The proxy's responder for a dial error: a plain 500 Status naming the backend error."""
    return 500, json.dumps(status_body(message=f"error dialing backend: {exc or type(exc).__name__}",
                                       code=500)).encode()


async def _answer(client: HttpStream, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    keep = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding", "connection")]
    keep += [("Content-Length", str(len(body))), ("Connection", "close")]  # the proxy closes after a refusal
    with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
        await client.send(h11.Response(status_code=status, headers=keep, reason=_reason(status)),
                          h11.Data(data=body), h11.EndOfMessage())


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


async def _upgrade(dial: KubeletDial, address: str, port: int, request: h11.Request,
                   client: HttpStream) -> Upstream | None:
    """Dial and upgrade; on a refusal or a dial error answer kubectl and return None."""
    try:
        upstream = await dial.upgrade(address, port, request)
    except (OSError, TimeoutError, h11.ProtocolError) as exc:
        status, body = _dial_failed(exc)
        await _answer(client, status, [("Content-Type", "application/json")], body)
        return None
    if upstream.status != 101:
        await _answer(client, upstream.status, upstream.raw_headers, upstream.body)
        return None
    return upstream


async def _splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def passthrough(client: HttpStream, dial: KubeletDial, address: str, port: int, method: str, target: str,
                      headers: list[tuple[str, str]]) -> None:
    """Forward the upgrade, relay the kubelet's 101 head, then bytes both ways until one ends."""
    upstream = await _upgrade(dial, address, port, h11.Request(method=method, target=target, headers=headers),
                              client)
    if upstream is None:
        return
    try:
        await client.send(h11.InformationalResponse(status_code=101, headers=upstream.raw_headers,
                                                    reason=b"Switching Protocols"))
        early, late = client.trailing(), upstream.stream.trailing()
        if early:
            upstream.stream.writer.write(early)
        if late:
            client.writer.write(late)
        a = asyncio.ensure_future(_splice(client.reader, upstream.stream.writer))
        b = asyncio.ensure_future(_splice(upstream.stream.reader, client.writer))
        try:
            await asyncio.wait((a, b), return_when=asyncio.FIRST_COMPLETED)
            await asyncio.wait((a, b), timeout=2)
        finally:
            for task in (a, b):
                task.cancel()
            await asyncio.gather(a, b, return_exceptions=True)
    finally:
        upstream.stream.close()


async def tunnel_port_forward(client: HttpStream, request: h11.Request, dial: KubeletDial, address: str, port: int,
                              target: str, client_ip: str, note: Callable[[str], None]) -> None:
    offered = [p.strip() for k, v in request.headers if k == b"sec-websocket-protocol"
               for p in v.decode("latin-1").split(",")]
    spdy = [p[len(TUNNEL_PREFIX):] for p in offered if p.startswith(TUNNEL_PREFIX) and p.endswith(".k8s.io")]
    key = next((v.decode() for k, v in request.headers if k == b"sec-websocket-key"), "")
    if not spdy:
        await _answer(client, 400, [("Content-Type", "text/plain; charset=utf-8")],
                      b"unable to upgrade: no tunneling spdy protocols provided\n")
        return
    headers = forward_headers(request, client_ip, content_length="0", replace={
        "Upgrade": ["SPDY/3.1"], "X-Stream-Protocol-Version": spdy},
        drop={"sec-websocket-protocol", "sec-websocket-key", "sec-websocket-version", "upgrade",
              "x-stream-protocol-version"})
    note(f"kubelet POST {target} upgrade=SPDY/3.1 protocols={','.join(spdy)} (tunnel)")
    upstream = await _upgrade(dial, address, port, h11.Request(method="POST", target=target, headers=headers), client)
    if upstream is None:
        return
    try:
        chosen = upstream.header("x-stream-protocol-version").strip()
        if "upgrade" not in upstream.header("connection").lower() or \
                "spdy/3.1" not in upstream.header("upgrade").lower():
            await _answer(client, 500, [("Content-Type", "text/plain; charset=utf-8")],
                          b"unable to upgrade: missing upgrade headers in response\n")
            return
        answer = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(key))]
        if chosen and TUNNEL_PREFIX + chosen in offered:  # gorilla answers only a protocol the client offered
            answer.append(("Sec-WebSocket-Protocol", TUNNEL_PREFIX + chosen))
        await client.send(h11.InformationalResponse(status_code=101, headers=answer, reason=b"Switching Protocols"))
        ws = WsServer(client.reader, client.writer, client.trailing())
        kubelet = upstream.stream

        async def down() -> None:  # kubelet SPDY bytes -> binary messages
            if early := kubelet.trailing():
                await ws.send_binary(early)
            while data := await kubelet.reader.read(65536):
                await ws.send_binary(data)

        async def up() -> None:  # message payloads -> the kubelet, as a byte stream
            while (frame := await ws.recv()) is not None:
                kubelet.writer.write(bytes(frame.data))
                await kubelet.writer.drain()

        a, b = asyncio.ensure_future(down()), asyncio.ensure_future(up())
        try:
            await asyncio.wait((a, b), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (a, b):
                task.cancel()
            await asyncio.gather(a, b, return_exceptions=True)
            with contextlib.suppress(ConnectionError, OSError):
                await ws.close()  # TunnelingConnection.Close: a normal close frame
            kubelet.close()
            await ws.wait_closed(5.0)
    finally:
        upstream.stream.close()
