"""Issue 21: the admin port of real processes. /metrics scraped during real traffic (a real
cloudstream and an emulated edge, logs and exec through 10003) and parsed with prometheus_client's
own parser; /readyz following the listeners and the tunnel; SIGTERM with a running ``logs -f``
and exec (stream ended with an error at the end of the grace, exit 0, no traceback); JSON logs;
the Grafana dashboard's queries against a real scrape."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import MS
from testkit.scrape import get, scrape, total, value

from .framework import ROOT, Process, apiserver_tls, kubelet_request, start_cloud, start_edge
from .k8s_ws import open_ws, run_exec
from .test_logs_chain import wait_node_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CLOUD_ADMIN = re.compile(r"cloudstream admin on http://127\.0\.0\.1:(\d+)")
EDGE_ADMIN = re.compile(r"edgestream admin on http://127\.0\.0\.1:(\d+)")
FOLLOW = "/containerLogs/default/demo/app?follow=true"
DASHBOARD = ROOT / "deploy/grafana/kubeedge-stream.json"

async def started_pair(lab_pki, *cloud_args: str, edge_args: tuple[str, ...] = ()) -> tuple[Process, Process, int, int, int, int]:
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki, "--admin-port", "0", *cloud_args)
    cloud_admin = int((await cloud.wait_for_line(CLOUD_ADMIN)).group(1))
    edge = await start_edge(lab_pki, "edge-1", tunnel_port, "--admin-port", "0", "--emulate-log-rate", "50", *edge_args)
    edge_admin = int((await edge.wait_for_line(EDGE_ADMIN)).group(1))
    await wait_node_ready(stream_port, apiserver_tls(lab_pki), "edge-1")
    return cloud, edge, stream_port, tunnel_port, cloud_admin, edge_admin


def no_traceback(proc: Process) -> None:
    text = "\n".join(proc.lines)
    assert "Traceback" not in text, f"{proc.name} logged a traceback:\n{proc.output}"


async def test_metrics_move_during_traffic_and_dashboard_queries_exist(lab_pki) -> None:
    cloud, edge, port, _, cloud_admin, edge_admin = await started_pair(lab_pki)
    tls = apiserver_tls(lab_pki)
    try:
        before, edge_before = await scrape(cloud_admin), await scrape(edge_admin)
        assert value(before, "kubeedge_stream_tunnels_connected") == 1
        assert value(edge_before, "kubeedge_stream_tunnels_connected") == 1
        for status_path in ("/healthz", "/readyz"):
            assert (await get(cloud_admin, status_path))[0] == 200
            assert (await get(edge_admin, status_path))[0] == 200

        async with kubelet_request(port, FOLLOW, host="edge-1", tls=tls) as follow:
            assert follow.status == 200
            chunks = follow.chunks()
            got = 0
            while got < 2000:
                got += len(await anext(chunks))
            during = await scrape(cloud_admin)
            assert value(during, "kubeedge_stream_streams", kind="logs", state="open") == 1
            assert value(during, "kubeedge_stream_bytes_total", direction="received", kind="logs") > \
                value(before, "kubeedge_stream_bytes_total", direction="received", kind="logs")
            assert value(during, "kubeedge_stream_node_streams", node="edge-1") == 1
            status, body = await get(cloud_admin, "/debug/streams")
            listing = json.loads(body)
            assert status == 200 and listing["total"] == 1 and not listing["truncated"]
            (live,) = listing["streams"]
            assert live["node"] == "edge-1" and live["kind"] == "logs" and live["bytes_received"] > 0
            edge_listing = json.loads((await get(edge_admin, "/debug/streams"))[1])
            assert edge_listing["total"] == 1 and edge_listing["streams"][0]["kind"] == "logs"
            nodes = json.loads((await get(cloud_admin, "/debug/nodes"))[1])
            assert nodes["total"] == 1 and nodes["nodes"][0]["node"] == "edge-1"
            assert nodes["nodes"][0]["features"] and nodes["nodes"][0]["streams"] == 1
            capped = json.loads((await get(cloud_admin, "/debug/nodes?limit=0"))[1])
            assert capped["truncated"] is True and capped["nodes"] == [] and capped["total"] == 1
            # bytes keep moving while the stream runs, and the scrape sees it (read from the mux)
            while got < 6000:
                got += len(await anext(chunks))
            later = await scrape(cloud_admin)
            assert value(later, "kubeedge_stream_bytes_total", direction="received", kind="logs") > \
                value(during, "kubeedge_stream_bytes_total", direction="received", kind="logs")

        path = "/exec/default/demo/app?command=cat&input=1&output=1&error=1"
        ws = await open_ws(port, path, node="edge-1", tls=tls)
        result = await run_exec(ws, stdin=[b"hello admin\n"])
        assert result.stdout == b"hello admin\n" and result.exit_code == 0
        async with kubelet_request(port, "/containerLogs/default/demo/app?tailLines=5", host="nosuch", tls=tls) as resp:
            assert resp.status == 503
            await resp.body()

        deadline = time.monotonic() + 10 * MS
        while True:  # the relays count a stream when its handler ends, just after the client saw the end
            after, edge_after = await scrape(cloud_admin), await scrape(edge_admin)
            if value(after, "kubeedge_stream_streams", kind="logs", state="open") == 0 and \
                    value(after, "kubeedge_stream_stream_opens_total", kind="exec", result="ok") >= 1:
                break
            assert time.monotonic() < deadline, after
            await asyncio.sleep(0.1)

        def moved(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)

        assert moved("kubeedge_stream_stream_opens_total", kind="logs", result="ok") >= 1
        assert moved("kubeedge_stream_stream_opens_total", kind="exec", result="ok") == 1
        assert moved("kubeedge_stream_time_to_first_byte_seconds_count", kind="logs") >= 1
        assert moved("kubeedge_stream_exec_round_trip_seconds_count", kind="exec") == 1
        assert moved("kubeedge_stream_exec_round_trip_seconds_sum", kind="exec") > 0
        assert moved("kubeedge_stream_stream_setup_seconds_count", kind="exec") == 1
        assert moved("kubeedge_stream_stream_duration_seconds_count") >= 2
        assert moved("kubeedge_stream_bytes_total", direction="sent", kind="exec") >= len(b"hello admin\n")
        assert moved("kubeedge_stream_bytes_total", direction="received", kind="exec") >= len(b"hello admin\n")
        assert moved("kubeedge_stream_refusals_total", listener="kubelet_api", reason="no_node") == 1
        # the edge's side of the same traffic
        assert total(edge_after, "kubeedge_stream_stream_opens_total", kind="exec", result="ok") - \
            total(edge_before, "kubeedge_stream_stream_opens_total", kind="exec", result="ok") == 1
        assert value(edge_after, "kubeedge_stream_bytes_total", direction="sent", kind="logs") > \
            value(edge_before, "kubeedge_stream_bytes_total", direction="sent", kind="logs")
        expiry = [v for (n, _), v in after.items() if n == "kubeedge_stream_certificate_expiry_timestamp_seconds"]
        assert len(expiry) == 4 and all(v > time.time() for v in expiry)
        assert value(after, "process_resident_memory_bytes") > 0

        # every series the dashboard queries is in a real scrape of one process or the other
        dashboard = json.loads(DASHBOARD.read_text())
        names = {n for (n, _) in after} | {n for (n, _) in edge_after}
        queried = set()
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                queried |= set(re.findall(r"\b(kubeedge_stream_[a-z_]+|process_[a-z_]+)", target["expr"]))
        assert queried, "the dashboard queries nothing"
        missing = sorted(queried - names)
        assert not missing, f"the dashboard queries series no process exports: {missing}"
    finally:
        await edge.stop()
        assert await cloud.stop() == 0
    no_traceback(cloud)


async def test_readyz_follows_the_tunnel_and_the_listeners(lab_pki) -> None:
    cloud, edge, _, tunnel_port, cloud_admin, edge_admin = await started_pair(lab_pki)
    try:
        assert await get(edge_admin, "/readyz") == (200, "ok\n")
        assert (await get(cloud_admin, "/readyz"))[0] == 200
        assert await cloud.stop() == 0
        deadline = time.monotonic() + 10 * MS
        while (status := await get(edge_admin, "/readyz"))[0] != 503:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        assert "no tunnel to cloudstream" in status[1]
        deadline = time.monotonic() + 10 * MS
        while "nothing listens on" not in (status := await get(edge_admin, "/readyz"))[1]:  # the next dial says why
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        assert value(await scrape(edge_admin), "kubeedge_stream_tunnel_dial_failures_total") >= 1
        assert (await get(edge_admin, "/healthz"))[0] == 200  # alive, only not ready
        cloud, _, _ = await start_cloud(lab_pki, "--tunnel-port", str(tunnel_port), "--admin-port", "0")
        cloud_admin = int((await cloud.wait_for_line(CLOUD_ADMIN)).group(1))
        deadline = time.monotonic() + 20 * MS
        while (status := await get(edge_admin, "/readyz"))[0] != 200:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        edge_samples = await scrape(edge_admin)
        assert value(edge_samples, "kubeedge_stream_tunnel_reconnects_total") >= 1
        assert total(edge_samples, "kubeedge_stream_tunnel_disconnects_total") >= 1
        assert (await get(cloud_admin, "/readyz"))[0] == 200
    finally:
        await edge.stop()
        await cloud.stop()


async def test_sigterm_ends_running_streams_after_the_grace_and_exits_0(lab_pki) -> None:
    cloud, edge, port, _, cloud_admin, _ = await started_pair(lab_pki, "--shutdown-grace", "3")
    tls = apiserver_tls(lab_pki)
    try:
        ws = await open_ws(port, "/exec/default/demo/app?command=cat&input=1&output=1&error=1", node="edge-1", tls=tls)
        execution = asyncio.create_task(run_exec(ws, stdin=[b"x\n"], close_stdin=False, timeout=30 * MS))
        async with kubelet_request(port, FOLLOW, host="edge-1", tls=tls) as follow:
            assert follow.status == 200
            chunks = follow.chunks()
            await anext(chunks)
            signalled = time.monotonic()
            cloud.proc.send_signal(signal.SIGTERM)
            await cloud.wait_for_line("listeners closed")
            status, text = await get(cloud_admin, "/readyz")  # (the admin port stays up for the grace)
            assert status == 503 and "shutting down" in text, (status, text)
            with pytest.raises(OSError):  # no new connection on 10003
                async with kubelet_request(port, FOLLOW, host="edge-1", tls=tls):
                    pass
            received_after = 0
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                async for chunk in chunks:  # flows on during the grace, then is cut (a broken chunked body)
                    received_after += len(chunk)
            ended = time.monotonic() - signalled
        assert received_after > 0, "the logs -f stopped at SIGTERM instead of running on for the grace"
        assert 2.5 <= ended < 10 * MS, ended
        result = await execution
        assert result.status.get("status") == "Failure" and "shutting down" in result.status.get("message", ""), result
        assert await asyncio.wait_for(cloud.proc.wait(), 10 * MS) == 0
    finally:
        await edge.stop()
        await cloud.stop()
    no_traceback(cloud)
    assert any("ending 2 streams still running after the grace period" in line for line in cloud.lines), cloud.output


async def test_sigterm_without_streams_exits_at_once(lab_pki) -> None:
    cloud, edge, _, _, _, _ = await started_pair(lab_pki)  # default grace (30 s): nothing waits for it
    try:
        began = time.monotonic()
        cloud.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(cloud.proc.wait(), 10 * MS) == 0
        assert time.monotonic() - began < 8
    finally:
        await edge.stop()
        await cloud.stop()
    no_traceback(cloud)


async def test_json_log_lines_parse(lab_pki) -> None:
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki, "--log-format", "json")
    edge = await start_edge(lab_pki, "edge-1", tunnel_port, "--log-format", "json")
    try:
        await wait_node_ready(stream_port, apiserver_tls(lab_pki), "edge-1")
    finally:
        await edge.stop()
        await cloud.stop()
    for proc in (cloud, edge):
        entries = [json.loads(line) for line in proc.lines if line.strip()]
        assert entries and all({"time", "level", "logger", "message"} <= set(e) for e in entries), proc.output
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]) for e in entries)
    up = [e for e in (json.loads(line) for line in cloud.lines) if "tunnel up" in e["message"]]
    assert up and up[0]["node"] == "edge-1" and up[0]["level"] == "INFO"


def test_dashboard_is_valid_json_with_a_panel_per_family() -> None:
    dashboard = json.loads(Path(DASHBOARD).read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for family in (
        "tunnels_connected", "tunnel_connects_total", "tunnel_disconnects_total", "tunnel_reconnects_total",
        "streams", "stream_opens_total", "bytes_total", "errors_total", "refusals_total", "send_queue_messages",
        "stalls_total", "time_to_first_byte_seconds_bucket", "exec_round_trip_seconds_bucket",
        "stream_setup_seconds_bucket", "certificate_expiry_timestamp_seconds",
    ):
        assert "kubeedge_stream_" + family in exprs, family


async def test_emulated_fleet_serves_one_admin_port_for_all_its_nodes(tmp_path) -> None:
    from streamcerts import Layout
    from edgestream.fleet import node_configs
    from edgestream.fleet_profile import FleetProfile

    nodes = 5
    node_configs(FleetProfile(nodes=nodes, pki_dir=tmp_path / "pki", cidr="10.78.0.0/24"))
    layout = Layout(tmp_path / "pki")
    cloud, port, tunnel_port = await start_cloud(layout, "--admin-port", "0")
    cloud_admin = int((await cloud.wait_for_line(CLOUD_ADMIN)).group(1))
    fleet = await Process.start("fleet", [
        "edgestream", "emulate", "--nodes", str(nodes), "--pki-dir", str(layout.root), "--cidr", "10.78.0.0/24",
        "--server", f"localhost:{tunnel_port}", "--admin-port", "0", "--log-format", "json",
    ])
    try:
        fleet_admin = int((await fleet.wait_for_line(re.compile(r"emulate admin on http://127\.0\.0\.1:(\d+)"))).group(1))
        await fleet.wait_for_line(rf"all {nodes} nodes up", timeout=60)
        assert await get(fleet_admin, "/readyz") == (200, "ok\n")
        listing = json.loads((await get(fleet_admin, "/debug/nodes?limit=2"))[1])
        assert listing["total"] == nodes and listing["truncated"] and all(n["tunnel_up"] for n in listing["nodes"])
        samples = await scrape(fleet_admin)
        assert value(samples, "kubeedge_stream_tunnels_connected") == nodes
        cloud_samples = await scrape(cloud_admin)
        assert value(cloud_samples, "kubeedge_stream_tunnels_connected") == nodes
        assert len([k for k in cloud_samples if k[0] == "kubeedge_stream_node_streams"]) == nodes
        certs = [k for k in samples if k[0] == "kubeedge_stream_certificate_expiry_timestamp_seconds"]
        assert len(certs) == nodes + 1  # each node's certificate and the one CA
        assert await cloud.stop() == 0  # the fleet's nodes lose their tunnel: not ready, and says how many
        deadline = time.monotonic() + 10 * MS
        while (status := await get(fleet_admin, "/readyz"))[0] != 503:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        assert "nodes have no tunnel" in status[1]
    finally:
        await fleet.stop()
        await cloud.stop()
    assert all(json.loads(line) for line in fleet.lines if line.strip())
    no_traceback(fleet)


async def test_edge_sigterm_drains_not_ready_then_exits_0(lab_pki) -> None:
    cloud, edge, port, _, _, edge_admin = await started_pair(lab_pki, edge_args=("--drain-timeout", "2"))
    tls = apiserver_tls(lab_pki)
    try:
        async with kubelet_request(port, FOLLOW, host="edge-1", tls=tls) as follow:
            assert follow.status == 200
            chunks = follow.chunks()
            await anext(chunks)
            edge.proc.send_signal(signal.SIGTERM)
            await edge.wait_for_line("draining")
            status, text = await get(edge_admin, "/readyz")
            assert status == 503 and "draining" in text, (status, text)
            received_after = 0
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                async for chunk in chunks:  # runs on during the drain, then the tunnel goes
                    received_after += len(chunk)
            assert received_after > 0
        assert await asyncio.wait_for(edge.proc.wait(), 10 * MS) == 0
    finally:
        await edge.stop()
        await cloud.stop()
    no_traceback(edge)


async def _state(cloud: Process) -> dict[str, int]:
    since = len(cloud.lines)
    cloud.proc.send_signal(signal.SIGUSR1)
    m = await cloud.wait_for_line(re.compile(r"state (.*)$"), since=since, timeout=10)
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


async def test_admin_requests_leave_nothing_behind(lab_pki) -> None:
    cloud, edge, _, _, cloud_admin, _ = await started_pair(lab_pki)
    try:
        await scrape(cloud_admin)  # warm up (first-use imports and objects)
        baseline = await _state(cloud)
        for _ in range(30):
            await scrape(cloud_admin)
            for path in ("/healthz", "/readyz", "/debug/nodes", "/debug/streams?limit=1000", "/nope"):
                await get(cloud_admin, path)
        deadline = time.monotonic() + 10 * MS
        while True:
            after = await _state(cloud)
            if (after["tasks"] <= baseline["tasks"] and after["fds"] <= baseline["fds"]) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert after["tasks"] <= baseline["tasks"] and after["fds"] <= baseline["fds"], (baseline, after)
    finally:
        await edge.stop()
        await cloud.stop()
