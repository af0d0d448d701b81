"""Node resolution from the connection's local address (no DNAT), and the kubelet's healthz
routes. The registry is the real one; sessions only need a node name and an IP."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pytest

from cloudstream.kubelet_api.http1 import parse_request_head
from cloudstream.kubelet_api.resolve import local_address, local_node_key, request_node_keys
from cloudstream.kubelet_api.routes import RouteKind, match_route
from cloudstream.registry import SessionRegistry


@dataclass
class _Node:
    node: str
    internal_ip: str


def _registry(*nodes: tuple[str, str]) -> SessionRegistry:
    registry = SessionRegistry()
    for name, ip in nodes:
        registry.register(_Node(name, ip))  # type: ignore[arg-type]
    return registry


def _head(host: str, forwarded: str | None = None, path: str = "/exec/ns/p/c") -> object:
    extra = f"X-Forwarded-Uri: {forwarded}\r\n" if forwarded else ""
    return parse_request_head(f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())


def test_local_address_picks_the_node_whose_ip_it_is() -> None:
    registry = _registry(("target", "127.0.0.5"), ("decoy", "127.0.0.1"))
    # exec passthrough: Host names the API server, whose IP a lab node also announces
    head = _head("127.0.0.1:6443")
    assert request_node_keys(head, None, "127.0.0.5", registry)[:1] == [("ip", "127.0.0.5")]
    # without the local address the Host would have picked the decoy
    assert request_node_keys(head, None) == [("ip", "127.0.0.1")]


def test_dnat_wins_over_the_local_address() -> None:
    registry = _registry(("a", "10.0.0.7"), ("b", "10.0.0.1"))
    keys = request_node_keys(_head("apiserver:6443"), "10.0.0.7", "10.0.0.1", registry)
    assert keys[0] == ("ip", "10.0.0.7") and ("ip", "10.0.0.1") not in keys


def test_shared_local_address_does_not_override_an_explicit_node_name() -> None:
    # cloudstream bound to 0.0.0.0, reached on 127.0.0.1, where lab node "local" also lives
    registry = _registry(("local", "127.0.0.1"), ("remote", "10.1.1.1"))
    by_name = _head("remote")
    assert local_node_key(by_name, "127.0.0.1", registry) is None
    assert request_node_keys(by_name, None, "127.0.0.1", registry)[0] == ("node", "remote")
    proxied = _head("apiserver:6443", "/api/v1/nodes/remote/proxy/healthz", "/healthz")
    assert request_node_keys(proxied, None, "127.0.0.1", registry)[0] == ("node", "remote")
    # a name that is no connected node (the API server's) does not count against it
    assert local_node_key(_head("apiserver.example:6443"), "127.0.0.1", registry) == ("ip", "127.0.0.1")
    # the node's own name agrees with it
    assert local_node_key(_head("local"), "127.0.0.1", registry) == ("ip", "127.0.0.1")


def test_names_of_absent_nodes() -> None:
    # a lab on loopback asking for a node that is not there: 503, not the neighbour's answer
    registry = _registry(("local", "127.0.0.1"))
    assert local_node_key(_head("edge-9"), "127.0.0.1", registry) is None
    # on a real address a bare name may be the API server's (kubeconfig without a port)
    registry = _registry(("edge-1", "10.2.0.5"))
    assert local_node_key(_head("abc.eks.example.com"), "10.2.0.5", registry) == ("ip", "10.2.0.5")
    # the node proxy names its node: that wins even when it is not connected
    proxied = _head("abc.eks.example.com", "/api/v1/nodes/edge-9/proxy/healthz", "/healthz")
    assert local_node_key(proxied, "10.2.0.5", registry) is None


def test_local_address_announced_by_several_nodes_is_ambiguous() -> None:
    registry = _registry(("a", "127.0.0.1"), ("b", "127.0.0.1"))
    assert local_node_key(_head("apiserver:6443"), "127.0.0.1", registry) is None
    assert local_node_key(_head("apiserver:6443"), "127.0.0.9", registry) is None  # nobody's
    assert local_node_key(_head("apiserver:6443"), None, registry) is None


def test_local_address_of_real_sockets() -> None:
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.5", port)) as client:
            conn, _ = server.accept()
            with conn:
                assert client.getpeername()[0] == "127.0.0.5"
                assert local_address(conn) == "127.0.0.5"
    if not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack IPv6 socket on this machine")
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.6", port)):
            conn, _ = server.accept()
            with conn:
                assert conn.getsockname()[0] == "::ffff:127.0.0.6"
                assert local_address(conn) == "127.0.0.6"
    assert local_address(None) is None


@pytest.mark.parametrize("path", ["/healthz", "/healthz/ping", "/healthz/log", "/healthz/syncloop", "/healthz/runtime"])
def test_healthz_routes_are_metrics_reads(path: str) -> None:
    route = match_route(path)
    assert route is not None and route.kind is RouteKind.METRICS and route.methods == ("GET",)


@pytest.mark.parametrize("path", ["/healthz/", "/healthz/a/b", "/healthzx"])
def test_healthz_lookalikes_are_not_routed(path: str) -> None:
    assert match_route(path) is None
