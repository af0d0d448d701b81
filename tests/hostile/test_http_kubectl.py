"""Finding 8 with real kubectl (1.27 and 1.29 speak SPDY): errors from 10003 reach the user.

client-go decodes a refused upgrade's body with its universal decoder, which reads YAML too:
a text body with one ``": "`` (``cloudstream: node victim runs KubeEdge's Go edgecore, ...``)
became an empty Status and kubectl printed ``error upgrading connection: `` and nothing else.
As ``metav1.Status`` JSON the message arrives. Driven through the e2e API-server front
(``tests/e2e_kubectl/apiserver_front.py``) against a second real cloudstream whose only edge
is a Go edgecore (the fleet's bystander announces 127.0.0.1, the address the front dials, so
the local-address rule would send every request there).
"""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect

from streamcerts import client_context
from tests.e2e_kubectl.apiserver_front import ApiServerFront, FrontNode, FrontPod
from tests.e2e_kubectl.conftest import make_kubectl
from tests.integration.framework import apiserver_tls, start_cloud

from .conftest import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.kubectl, pytest.mark.timeout(120)]

VICTIM_IP = "127.0.3.1"


@pytest.mark.parametrize("version", ["1.27", "1.29"])
async def test_kubectl_shows_our_refusals(fleet: Fleet, version: str, tmp_path) -> None:
    layout = fleet.layout
    # Each node at its own address, and cloudstream reached on it (the no-DNAT wiring), as a real
    # API server dials a node's InternalIP: that address, not Host, says which node is meant.
    cloud, stream_port, tunnel_port = await start_cloud(layout, "--stream-address", "0.0.0.0")
    nodes = [FrontNode("victim", VICTIM_IP, stream_port), FrontNode("ghost", "127.0.3.2", stream_port)]
    pods = [
        FrontPod("default", "demo", "victim", ("app", "a%2Fb")),
        FrontPod("default", "web", "victim", ("app",)),  # victim: a Go edgecore (no port-forward)
        FrontPod("default", "ghost", "ghost", ("app",)),  # no such node connected
    ]
    front = ApiServerFront(stream_port, apiserver_tls(layout), pods, nodes)
    port = await front.start()
    kubectl = make_kubectl(version, tmp_path, port)
    tls = client_context(layout.ca_cert, layout.edge_cert("victim"), layout.edge_key("victim"))
    try:
        async with connect(
            f"wss://localhost:{tunnel_port}/v1/kubeedge/connect", ssl=tls,
            additional_headers={"SessionHostNameOverride": "victim", "SessionInternalIP": VICTIM_IP},
            user_agent_header="Go-http-client/1.1",
        ):
            await cloud.wait_for_line("tunnel up: node victim")
            # 501 from the cloud, one ": " in the old text body: was an empty message
            rc, _, err = await kubectl.run("port-forward", "web", "18080:80", timeout=30)
            text = err.decode()
            assert rc != 0 and "KubeEdge's Go edgecore, which has no port-forward" in text, text
            # 503 for a node without a tunnel
            rc, _, err = await kubectl.run("exec", "ghost", "--", "ls")
            text = err.decode()
            assert rc != 0 and "ServiceUnavailable" in text and "reached cloudstream on 127.0.3.2" in text, text
            # 400 naming the segment: an encoded '/' in a container name never reaches the edge
            rc, _, err = await kubectl.run("exec", "demo", "-c", "a%2Fb", "--", "ls")
            text = err.decode()
            assert rc != 0 and "BadRequest" in text and "container name 'a%2Fb' contains an encoded slash" in text, text
    finally:
        await front.close()
        await cloud.stop()
