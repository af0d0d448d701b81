"""The ``replicas`` extension on one replica's tunnel port, without a balancer: the 101 names
the replica, a dial that says it already holds this replica gets a 409 before any session, a Go
dial sees none of it, and only a replica's own certificate may ask who holds a node."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamcerts import client_context
from streamproto.tunnel import FEATURES_HEADER
from streamproto.tunnel.replicas import HELD_HEADER, REPLICA_HEADER
from testkit.processes import apiserver_tls, kubelet_request
from testkit.replicas import Replicas

pytestmark = [pytest.mark.integration]

NODE, IP = "edge-1", "127.0.0.1"


def _dial(port: int, tls: ssl.SSLContext, **headers: str):
    return connect(
        f"wss://localhost:{port}/v1/kubeedge/connect", ssl=tls, host="127.0.0.1",
        additional_headers={"SessionHostNameOverride": NODE, "SessionInternalIP": IP, **headers},
        user_agent_header="Go-http-client/1.1", compression=None,
    )


async def _get(port: int, tls: ssl.SSLContext, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_dials_and_peer_questions(lab_pki, no_leaks) -> None:
    replicas = Replicas(lab_pki, 2)
    await replicas.start_all()
    r0, r1 = replicas.all
    edge_tls = client_context(lab_pki.ca_cert, lab_pki.edge_cert(NODE), lab_pki.edge_key(NODE))
    try:
        # ours: the 101 names the replica and the count
        async with _dial(r0.tunnel_port, edge_tls, **{FEATURES_HEADER: "status, flow, replicas"}) as ws:
            assert ws.response.headers[REPLICA_HEADER] == "id=replica-0; replicas=2"
            assert "replicas" in ws.response.headers[FEATURES_HEADER]
            await replicas.wait_tunnels(r0, 1, within=10)
            # the same node saying it holds replica-0: 409 before the upgrade, its tunnel stays
            since = len(r0.process.lines)
            with pytest.raises(InvalidStatus) as refused:
                async with _dial(r0.tunnel_port, edge_tls,
                                 **{FEATURES_HEADER: "replicas", HELD_HEADER: "replica-0, x" * 40}):
                    pass
            response = refused.value.response
            assert response.status_code == 409 and response.headers[REPLICA_HEADER] == "id=replica-0; replicas=2"
            assert b"already holds a tunnel to cloudstream replica replica-0" in response.body
            assert (await replicas.state(r0))["tunnels"] == 1 and ws.state.name == "OPEN"
            assert not [line for line in r0.process.lines[since:] if "refused" in line or "tunnel up" in line]
            # a replica's own certificate may ask who holds a node; the answer is JSON
            own = client_context(lab_pki.ca_cert, lab_pki.server_cert, lab_pki.server_key)
            status, body = await _get(r0.tunnel_port, own, f"/v1/kubeedge-stream/replica?node={NODE}")
            assert status == 200 and json.loads(body) == {"replica": "replica-0", "holds": True}
            status, body = await _get(r1.tunnel_port, own, f"/v1/kubeedge-stream/replica?node={NODE}")
            assert status == 200 and json.loads(body) == {"replica": "replica-1", "holds": False}
            # an edge may not
            status, body = await _get(r0.tunnel_port, edge_tls, f"/v1/kubeedge-stream/replica?node={NODE}")
            assert status == 403, body
            # replica-1 names replica-0: the node told it nothing, its peers did
            async with kubelet_request(r1.stream_port, "/containerLogs/a/b/c", host=NODE,
                                       tls=apiserver_tls(lab_pki)) as r:
                text = (await r.body()).decode()
            assert r.status == 503 and "replica-1 (of 2)" in text and "replica(s) replica-0 (asked just now)" in text, text
        # a Go dial (no features header): no replica header, one plain tunnel
        async with _dial(r1.tunnel_port, edge_tls) as go:
            assert REPLICA_HEADER not in go.response.headers and FEATURES_HEADER not in go.response.headers
        for replica in replicas.all:
            async with asyncio.timeout(10):
                while (await replicas.state(replica))["tunnels"]:
                    await asyncio.sleep(0.1)
    finally:
        await replicas.stop_all()
