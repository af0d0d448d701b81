"""KubeEdge's tunnel-port scheme against an in-test Kubernetes API endpoint (real HTTPS, bearer token,
resourceVersion conflicts as the API server answers them): replicas racing for ports, release on
shutdown, a restarted replica keeping its port, the watch that feeds per-port DNAT rules, and a real
cloudstream process writing a connected node's kubeletEndpoint.Port."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from testkit.kube_api import OPTIMISTIC_LOCK, KubeApi

from .framework import TUNNEL_UP, start_cloud, start_edge

kubernetes_asyncio = pytest.importorskip("kubernetes_asyncio", reason="the [kube] extra (kubernetes-asyncio) is not installed")

from cloudstream.kube.client import core_v1  # noqa: E402
from cloudstream.kube.record import ANNOTATION, RELEASED, TunnelPortRecord  # noqa: E402
from cloudstream.kube.settings import KubeSettings  # noqa: E402
from cloudstream.kube.tunnelport import TunnelPortClaimer  # noqa: E402
from cloudstream.kube.watch import watch_record  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GO_CLOUDCORE = '{"ipTunnelPort":{"192.168.1.16":10351},"port":{"10351":true}}'
"""A Go cloudcore already in the record (the shape of the website's HA docs)."""


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeApi]:
    api = await KubeApi().start(tmp_path)
    try:
        yield api
    finally:
        await api.close()


def settings(api: KubeApi, ip: str, **kw: object) -> KubeSettings:
    return KubeSettings(kubeconfig=api.kubeconfig, replica_ip=ip, retry_base=0.01, retry_max=0.1, **kw)  # type: ignore[arg-type]


async def state(cloud) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """cloudstream's own account (SIGUSR1 -> one ``state`` line)."""
    since = len(cloud.lines)
    cloud.proc.send_signal(signal.SIGUSR1)
    m = await cloud.wait_for_line(re.compile(r"state (.*)$"), since=since, timeout=10)
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def annotation(api: KubeApi) -> TunnelPortRecord:
    cm = api.get("configmaps", "tunnelport", "kubeedge")
    assert cm is not None
    return TunnelPortRecord.parse(cm["metadata"]["annotations"][ANNOTATION])


async def claim_all(api: KubeApi, ips: list[str]) -> list[tuple[int, int]]:
    """Claim concurrently, one client (own connection pool) per replica: [(port, conflicts)]."""
    async def one(ip: str) -> tuple[int, int]:
        async with core_v1(settings(api, ip)) as core:
            claim = await TunnelPortClaimer(core, settings(api, ip)).claim()
            return claim.port, claim.conflicts
    return list(await asyncio.gather(*(one(ip) for ip in ips)))


async def test_stale_put_gets_the_api_servers_conflict_status(kube: KubeApi, no_leaks: None) -> None:
    kube.put_object("configmaps", {"metadata": {"name": "tunnelport", "namespace": "kubeedge"}})
    ctx = ssl.create_default_context(cafile=str(kube.kubeconfig.parent / "ca.crt"))  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {kube.token}"}
    url = f"{kube.url}/api/v1/namespaces/kubeedge/configmaps/tunnelport"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(url, ssl=ctx) as r:
            first = await r.json()
        fresh = {**first, "data": {"a": "1"}}
        async with http.put(url, json=fresh, ssl=ctx) as r:
            assert r.status == 200
            assert int((await r.json())["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
        async with http.put(url, json={**first, "data": {"a": "2"}}, ssl=ctx) as r:  # the stale resourceVersion
            assert r.status == 409
            assert await r.json() == {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": f'Operation cannot be fulfilled on configmaps "tunnelport": {OPTIMISTIC_LOCK}',
                "reason": "Conflict", "details": {"name": "tunnelport", "kind": "configmaps"}, "code": 409,
            }
        async with http.get(url.replace("tunnelport", "absent"), ssl=ctx) as r:
            assert r.status == 404 and (await r.json())["reason"] == "NotFound"
        async with http.get(url, ssl=ctx, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
    assert kube.get("configmaps", "tunnelport", "kubeedge")["data"] == {"a": "1"}  # type: ignore[index]


@pytest.mark.parametrize("replicas", [2, 3])
async def test_replicas_starting_at_once_get_distinct_ports(kube: KubeApi, replicas: int, no_leaks: None) -> None:
    """No ConfigMap yet: every replica reads 404 at the same moment (rendezvous) and creates; one
    create wins, the others get 409 AlreadyExists and redo on the record the winner wrote."""
    kube.rendezvous(replicas)
    ips = [f"10.244.{i}.7" for i in range(replicas)]
    results = await claim_all(kube, ips)
    ports = [port for port, _ in results]
    assert sorted(ports) == list(range(10351, 10351 + replicas))
    assert sum(conflicts for _, conflicts in results) >= replicas - 1  # the losers did lose, and retried
    record = annotation(kube)
    assert record.ip_ports == dict(zip(ips, ports, strict=True)) and record.ports == set(ports)


async def test_racing_replicas_next_to_a_go_cloudcore(kube: KubeApi, no_leaks: None) -> None:
    """The ConfigMap holds a Go cloudcore's entry; two replicas read the same resourceVersion, one
    PUT wins, the other gets 409 Conflict, re-reads and takes the next port; the Go entry stays."""
    kube.put_object("configmaps", {"metadata": {"name": "tunnelport", "namespace": "kubeedge",
                                                "annotations": {ANNOTATION: GO_CLOUDCORE}}})
    kube.rendezvous(2)
    results = await claim_all(kube, ["10.244.0.7", "10.244.1.7"])
    assert sorted(p for p, _ in results) == [10352, 10353]
    assert kube.conflicts >= 1 and sum(c for _, c in results) >= 1
    record = annotation(kube)
    assert record.ip_ports["192.168.1.16"] == 10351 and len(record.ip_ports) == 3


async def test_shutdown_releases_and_a_restart_keeps_its_port(kube: KubeApi, no_leaks: None) -> None:
    s = settings(kube, "10.244.0.7")
    async with core_v1(s) as core:
        first = await TunnelPortClaimer(core, s).claim()
    # a restart after a crash (no release) finds its own entry and writes nothing
    writes = kube.writes
    async with core_v1(s) as core:
        claimer = TunnelPortClaimer(core, s)
        again = await claimer.claim()
        assert again.port == first.port == 10351 and kube.writes == writes
        assert await claimer.release()
    record = annotation(kube)
    assert "10.244.0.7" not in record.ip_ports and 10351 in record.ports  # the port stays used, as KubeEdge keeps it
    assert kube.get("configmaps", "tunnelport", "kubeedge")["metadata"]["annotations"][RELEASED] == '{"10.244.0.7":10351}'  # type: ignore[index]
    other = settings(kube, "10.244.9.9")
    async with core_v1(other) as core:  # another IP never gets a released port
        assert (await TunnelPortClaimer(core, other).claim()).port == 10352
    async with core_v1(s) as core:  # the same IP back after a clean shutdown (host network, rolling update): its port
        assert (await TunnelPortClaimer(core, s).claim()).port == 10351
    assert RELEASED not in kube.get("configmaps", "tunnelport", "kubeedge")["metadata"]["annotations"]  # type: ignore[index]
    assert annotation(kube).ip_ports == {"10.244.0.7": 10351, "10.244.9.9": 10352}


async def test_release_of_an_entry_someone_else_removed_writes_nothing(kube: KubeApi, no_leaks: None) -> None:
    s = settings(kube, "10.244.0.7")
    async with core_v1(s) as core:
        claimer = TunnelPortClaimer(core, s)
        await claimer.claim()
        # KubeEdge's iptables-manager removed it (pod deleted), then a new replica took the IP's place
        kube.put_object("configmaps", {"metadata": {"name": "tunnelport", "namespace": "kubeedge",
                                                    "annotations": {ANNOTATION: GO_CLOUDCORE}}})
        writes = kube.writes
        assert not await claimer.release()
        assert kube.writes == writes


async def test_the_watch_follows_the_record(kube: KubeApi, no_leaks: None) -> None:
    """What the iptables manager is fed: every change of the ConfigMap, pushed by the watch."""
    seen: asyncio.Queue[list[tuple[int, str]]] = asyncio.Queue()
    s = settings(kube, "10.244.0.7")
    async with core_v1(s) as core:
        task = asyncio.create_task(watch_record(core, s, lambda r: seen.put_nowait(r.routes()), watch_seconds=30))
        try:
            assert await asyncio.wait_for(seen.get(), 10) == []  # listed: no ConfigMap yet
            await TunnelPortClaimer(core, s).claim()
            assert await asyncio.wait_for(seen.get(), 10) == [(10351, "10.244.0.7")]
            kube.put_object("configmaps", {"metadata": {"name": "tunnelport", "namespace": "kubeedge",
                                                        "annotations": {ANNOTATION: GO_CLOUDCORE}}})
            assert await asyncio.wait_for(seen.get(), 10) == [(10351, "192.168.1.16")]
            kube.delete_object("configmaps", "tunnelport", "kubeedge")
            assert await asyncio.wait_for(seen.get(), 10) == []
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_cloudstream_claims_writes_the_node_port_and_releases(kube: KubeApi, lab_pki, tmp_path: Path) -> None:
    """A real cloudstream process: claims next to a Go cloudcore, sets the connected node's
    kubeletEndpoint.Port to its port (a merge PATCH of nodes/edge-1/status), releases on SIGTERM."""
    kube.put_object("configmaps", {"metadata": {"name": "tunnelport", "namespace": "kubeedge",
                                                "annotations": {ANNOTATION: GO_CLOUDCORE}}})
    kube.add_node("edge-1", "127.0.0.1", port=10351)  # the Go cloudcore held it before
    cloud, _, tunnel_port = await start_cloud(lab_pki, "--kubeconfig", str(kube.kubeconfig), "--replica-ip", "10.244.3.4")
    edge = None
    try:
        await cloud.wait_for_line(r"tunnel port 10352 for 10\.244\.3\.4")
        before = await state(cloud)
        edge = await start_edge(lab_pki, "edge-1", tunnel_port)
        await edge.wait_for_line(TUNNEL_UP)
        await cloud.wait_for_line(r"node edge-1: kubeletEndpoint.Port = 10352")
        node = kube.get("nodes", "edge-1")
        assert node is not None and node["status"]["daemonEndpoints"]["kubeletEndpoint"] == {"Port": 10352}
        assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "127.0.0.1"}  # the rest untouched
        # the node reconnects: written again (another replica may have pointed it elsewhere meanwhile)
        kube.add_node("edge-1", "127.0.0.1", port=10351)
        await edge.stop()
        since = len(cloud.lines)
        edge = await start_edge(lab_pki, "edge-1", tunnel_port)
        await cloud.wait_for_line(r"node edge-1: kubeletEndpoint.Port = 10352", since=since)
        assert kube.get("nodes", "edge-1")["status"]["daemonEndpoints"]["kubeletEndpoint"] == {"Port": 10352}  # type: ignore[index]
        await edge.stop()
        edge = None
        for _ in range(100):  # the node writes done, the tunnel gone: back to where it started
            now = await state(cloud)
            if now["tunnels"] == 0 and now["tasks"] <= before["tasks"] and now["fds"] <= before["fds"]:
                break
            await asyncio.sleep(0.1)
        assert now["tunnels"] == 0 and now["tasks"] <= before["tasks"] and now["fds"] <= before["fds"], (before, now)
    finally:
        if edge is not None:
            await edge.stop()
        assert await cloud.stop(signal.SIGTERM) == 0, cloud.output
    assert "tunnel port 10352 of 10.244.3.4 released" in cloud.output
    record = annotation(kube)
    assert record.ip_ports == {"192.168.1.16": 10351} and record.ports == {10351, 10352}
    assert json.loads(record.dump())["port"] == {"10351": True, "10352": True}


async def test_an_api_that_refuses_is_one_line_with_the_fix_and_tunnels_still_serve(
    kube: KubeApi, lab_pki, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """A kubeconfig whose token the API server refuses (401): not retried in a loop per request,
    one rate-limited line naming the fix, and cloudstream keeps serving tunnels."""
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text(kube.kubeconfig.read_text().replace(kube.token, "not-the-token"))  # type: ignore[union-attr]
    cloud, _, tunnel_port = await start_cloud(lab_pki, "--kubeconfig", str(bad), "--replica-ip", "10.244.3.4")
    edge = None
    try:
        await cloud.wait_for_line(r"! tunnel port: cannot claim a tunnel port in kubeedge/tunnelport: HTTP 401 .*grant")
        requests = kube.requests
        edge = await start_edge(lab_pki, "edge-1", tunnel_port)
        await edge.wait_for_line(TUNNEL_UP)
        await asyncio.sleep(0.5)
        assert kube.requests == requests  # nothing hammers the API server meanwhile (next try in 10 s)
    finally:
        if edge is not None:
            await edge.stop()
        assert await cloud.stop(signal.SIGTERM) == 0, cloud.output
    assert cloud.output.count("HTTP 401") == 1
