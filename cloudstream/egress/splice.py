"""Direct targets: dial, then copy bytes both ways until either side ends.

Used for what the ``cluster`` egress selection also carries that is no edge node (cloud
nodes' kubelets, pods, webhooks), when ``--egress-direct`` allows its network. No half-close:
when one direction ends the other is cut too (an SSL transport cannot half-close, and the
API server's kubelet traffic is TLS whose close_notify travels as data).
"""

from __future__ import annotations

import asyncio
import socket

from .connect import ConnectRefused, ConnectTarget, in_networks
from .settings import IPNetwork

__all__ = ["dial_direct", "splice"]

_CHUNK = 64 * 1024


async def _resolve(target: ConnectTarget, direct: tuple[IPNetwork, ...], timeout: float) -> str:
    """The first address of ``target`` inside the allowed networks."""
    if target.is_ip:
        return target.host
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise ConnectRefused(502, f"cannot resolve {target.host}",
                             f"CONNECT {target}: resolving {target.host} failed ({exc or 'timeout'})",
                             "resolve") from None
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if in_networks(address, direct):
            return address
    raise ConnectRefused(
        403, f"{target.host} is outside --egress-direct",
        f"CONNECT {target}: {target.host} resolves to {', '.join(addresses[:5])}, none of them in a --egress-direct "
        f"network ({', '.join(map(str, direct))}); add its CIDR to --egress-direct to let cloudstream dial it",
        "direct-denied",
    )


async def dial_direct(
    target: ConnectTarget, direct: tuple[IPNetwork, ...], timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = await _resolve(target, direct, timeout)
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(address, target.port)
    except TimeoutError:
        raise ConnectRefused(504, f"dial {target} timed out",
                             f"CONNECT {target}: no answer from {address}:{target.port} within {timeout:g} s "
                             "(a firewall, or a host that is down)", "dial-timeout") from None
    except OSError as exc:
        raise ConnectRefused(502, f"dial {target} failed",
                             f"CONNECT {target}: dialling {address}:{target.port} failed: "
                             f"{exc.strerror or exc.__class__.__name__}", "dial-failed") from None


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counted: list[int], index: int) -> None:
    while data := await reader.read(_CHUNK):
        writer.write(data)
        counted[index] += len(data)
        await writer.drain()  # the slower side holds the faster back: one chunk in flight each way


async def splice(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> tuple[int, int]:
    """Copy both ways until one side ends; returns (bytes to upstream, bytes to client)."""
    counted = [0, 0]
    up = asyncio.ensure_future(_copy(client[0], upstream[1], counted, 0))
    down = asyncio.ensure_future(_copy(upstream[0], client[1], counted, 1))
    try:
        await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
    return counted[0], counted[1]
