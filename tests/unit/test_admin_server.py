"""streamops.admin: the admin HTTP server over a real loopback socket (aiohttp client), the JSON log
formatter, certificate expiry read from real certificate files, and the bounded label values."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from streamcerts import init_lab
from streamops.admin import AdminConfig, AdminServer, Debug
from streamops.admin.certexpiry import CertExpiryCollector, not_after
from streamops.admin.jsonlog import JsonFormatter
from streamops.admin.labels import CLOSE_REASONS, close_reason, reason_label
from streamops.admin.server import MAX_DEBUG_ITEMS
from streamproto.tunnel.errors import ConfigError


def _items(n: int):
    def listing(limit: int) -> tuple[int, list[dict[str, object]]]:
        return n, [{"i": i} for i in range(min(n, limit))]
    return listing


async def _get(port: int, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_endpoints_readiness_and_bounded_listings() -> None:
    registry = CollectorRegistry()
    Counter("kubeedge_stream_test_events", "events", registry=registry).inc(3)
    problem: list[str | None] = [None]
    server = AdminServer(AdminConfig(port=0), registry, Debug(lambda: problem[0], _items(5000), _items(3)), name="t")
    port = await server.start()
    try:
        assert port > 0
        status, ctype, body = await _get(port, "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        (family,) = [f for f in text_string_to_metric_families(body) if f.name == "kubeedge_stream_test_events"]
        assert family.samples[0].value == 3
        status, _, body = await _get(port, "/healthz")
        assert status == 200 and body.startswith("ok")
        assert (await _get(port, "/readyz"))[0] == 200
        problem[0] = "the tunnel listener is not serving"
        status, _, body = await _get(port, "/readyz")
        assert status == 503 and "the tunnel listener is not serving" in body
        listing = json.loads((await _get(port, "/debug/nodes"))[2])
        assert listing["total"] == 5000 and listing["truncated"] and len(listing["nodes"]) == 100
        listing = json.loads((await _get(port, "/debug/nodes?limit=999999"))[2])
        assert len(listing["nodes"]) == MAX_DEBUG_ITEMS and listing["truncated"]
        listing = json.loads((await _get(port, "/debug/streams"))[2])
        assert listing == {"total": 3, "truncated": False, "limit": 100, "streams": [{"i": 0}, {"i": 1}, {"i": 2}]}
        assert (await _get(port, "/debug/streams?limit=x"))[0] == 400
        assert (await _get(port, "/nothing"))[0] == 404
    finally:
        await server.close()


async def test_port_in_use_is_an_oserror() -> None:
    first = AdminServer(AdminConfig(port=0), CollectorRegistry(), Debug(lambda: None, _items(0), _items(0)), name="a")
    port = await first.start()
    try:
        second = AdminServer(AdminConfig(port=port), CollectorRegistry(), Debug(lambda: None, _items(0), _items(0)),
                             name="b")
        with pytest.raises(OSError):
            await second.start()
    finally:
        await first.close()


def test_admin_config() -> None:
    assert not AdminConfig().enabled and AdminConfig().loopback
    assert AdminConfig(port=0).enabled
    assert not AdminConfig(address="0.0.0.0", port=1).loopback
    with pytest.raises(ConfigError):
        AdminConfig(port=70000)


def test_json_log_lines() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("cloudstream.x", logging.WARNING, __file__, 1, "node %s: %d \"quoted\"\n", ("e1", 3), None)
    record.node = "e1"
    entry = json.loads(formatter.format(record))
    assert entry["level"] == "WARNING" and entry["logger"] == "cloudstream.x"
    assert entry["message"] == 'node e1: 3 "quoted"\n' and entry["node"] == "e1"
    assert entry["time"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line and "boom" in json.loads(line)["exception"]


def test_certificate_expiry_follows_the_file(tmp_path: Path) -> None:
    layout = init_lab(tmp_path / "pki", ["n1"])
    files = [layout.ca_cert, layout.edge_cert("n1"), tmp_path / "missing.crt"]
    collector = CertExpiryCollector(lambda: files)
    (family,) = list(collector.collect())
    values = {s.labels["file"]: s.value for s in family.samples}
    assert set(values) == {str(layout.ca_cert), str(layout.edge_cert("n1"))}
    assert values[str(layout.edge_cert("n1"))] == not_after(layout.edge_cert("n1"))
    # a rotated file (another certificate at the same path) shows its own date at once
    os.replace(layout.ca_cert, layout.edge_cert("n1"))
    (family,) = list(collector.collect())
    values = {s.labels["file"]: s.value for s in family.samples}
    assert values == {str(layout.edge_cert("n1")): not_after(layout.edge_cert("n1"))}


def test_labels_are_bounded() -> None:
    assert reason_label((403, "no node")) == "no_node" and reason_label("ip-cap") == "ip_cap"
    assert len(reason_label("x" * 1000)) == 40
    samples = [
        ("closed with code 1011: keepalive ping timeout", False), ("connection lost (no close frame)", False),
        ("closed with code 1000", False), ("replaced by a new tunnel from node a", False),
        ("cloudstream is shutting down", False), ("anything", True), ("anything", False),
    ]
    assert {close_reason(text, over) for text, over in samples} == set(CLOSE_REASONS)
