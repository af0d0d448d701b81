from __future__ import annotations

import pytest

from cloudstream.config import ALL_ROUTES, AccessRule, CloudConfig
from cloudstream.kubelet_api.http1 import HttpError, parse_request_head
from cloudstream.kubelet_api.resolve import request_node_keys
from cloudstream.kubelet_api.routes import RouteKind, match_route
from streamproto.tunnel import ConfigError


def test_access_rule_parsing() -> None:
    assert AccessRule.parse("group:system:masters") == AccessRule("group", "system:masters", ALL_ROUTES)
    rule = AccessRule.parse("cn:metrics-server=metrics,logs")
    assert rule.routes == {"metrics", "logs"} and str(rule) == "cn:metrics-server=logs,metrics"
    for bad in ("metrics-server", "cn:", "user:x", "cn:x=shell"):
        with pytest.raises(ConfigError):
            AccessRule.parse(bad)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        CloudConfig(stream_port=70000)
    with pytest.raises(ConfigError):
        CloudConfig(max_payload=1 << 20)
    assert "server.key" not in repr(CloudConfig())  # key paths stay out of logs


@pytest.mark.parametrize(
    ("path", "kind", "pod", "container"),
    [
        ("/containerLogs/ns/p/c", RouteKind.LOGS, "p", "c"),
        ("/exec/ns/p/c", RouteKind.EXEC, "p", "c"),
        ("/exec/ns/p/uid/c", RouteKind.EXEC, "p", "c"),
        ("/attach/ns/p/c", RouteKind.ATTACH, "p", "c"),
        ("/portForward/ns/p", RouteKind.PORTFORWARD, "p", ""),
        ("/portForward/ns/p/uid", RouteKind.PORTFORWARD, "p", ""),
        ("/stats/summary", RouteKind.METRICS, "", ""),
        ("/metrics/cadvisor", RouteKind.METRICS, "", ""),
        ("/stats/ns/p/uid/c", RouteKind.METRICS, "", ""),
    ],
)
def test_routes(path: str, kind: RouteKind, pod: str, container: str) -> None:
    route = match_route(path)
    assert route is not None and route.kind is kind and route.pod == pod and route.container == container


@pytest.mark.parametrize("path", ["/", "/containerLogs/a/b", "/run/a/b/c", "/exec/a", "/configz", "/debug/pprof/"])
def test_unrouted(path: str) -> None:
    assert match_route(path) is None


def test_request_head_parsing() -> None:
    head = parse_request_head(
        b"POST /exec/a/b/c?command=ls HTTP/1.1\r\nHost: 10.0.0.5:10250\r\nConnection: Upgrade\r\n"
        b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: channel.k8s.io\r\n\r\n"
    )
    assert head.is_upgrade and head.raw_query == "command=ls"
    assert [v for k, v in head.headers if k == "X-Stream-Protocol-Version"] == ["v4.channel.k8s.io", "channel.k8s.io"]
    assert request_node_keys(head, None) == [("ip", "10.0.0.5")]
    assert request_node_keys(head, "10.0.0.9")[0] == ("ip", "10.0.0.9")
    for bad in (b"GET\r\n\r\n", b"GET / HTTP/2\r\n\r\n", b"GET / HTTP/1.1\r\nbad header\r\n\r\n", b"G T / HTTP/1.1\r\n\r\n"):
        with pytest.raises(HttpError):
            parse_request_head(bad)


def test_node_keys_from_forwarded_uri_and_names() -> None:
    head = parse_request_head(
        b"GET /stats/summary HTTP/1.1\r\nHost: apiserver:6443\r\nX-Forwarded-Uri: /api/v1/nodes/edge-7/proxy/stats/summary\r\n\r\n"
    )
    assert request_node_keys(head, None) == [("node", "edge-7"), ("node", "apiserver")]
    head = parse_request_head(b"GET / HTTP/1.1\r\nHost: [fd00::5]:10250\r\n\r\n")
    assert request_node_keys(head, None) == [("ip", "fd00::5")]
