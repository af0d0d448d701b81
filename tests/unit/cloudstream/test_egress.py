"""The egress front's sans-I/O parts: the CONNECT head (h11), where a target goes, the refusal
answer (read back by h11 as a client, as Go's http.ReadResponse would), the flags, and the
``cloudstream egress-config`` document (read back by PyYAML)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import h11
import pytest
import yaml

from cloudstream.__main__ import main as cloudstream_main
from cloudstream.config import CloudConfig, add_arguments
from cloudstream.egress.command import render
from cloudstream.egress.connect import (
    ESTABLISHED,
    ConnectHeadReader,
    ConnectRefused,
    ConnectTarget,
    Route,
    decide,
    parse_target,
    refusal_response,
)
from cloudstream.egress.settings import EgressConfig
from cloudstream.kubelet_api.http1 import RequestHead
from cloudstream.kubelet_api.resolve import ResolvedTarget, request_node_keys
from streamproto.tunnel.errors import ConfigError
from testkit.egress import connect_request

GO_CONNECT = connect_request("10.0.0.9:10250")


def test_go_connect_bytes_are_what_the_apiserver_writes() -> None:
    assert GO_CONNECT == b"CONNECT 10.0.0.9:10250 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.mark.parametrize("split", [None, 1, 7])
def test_head_whole_or_in_pieces(split: int | None) -> None:
    reader = ConnectHeadReader(8192)
    pieces = [GO_CONNECT] if split is None else [GO_CONNECT[i:i + split] for i in range(0, len(GO_CONNECT), split)]
    results = [reader.feed(p) for p in pieces]
    assert results[-1] == ConnectTarget("10.0.0.9", 10250)
    assert all(r is None for r in results[:-1])
    assert reader.early == b""


def test_bytes_behind_the_head_are_kept_as_early() -> None:
    reader = ConnectHeadReader(8192)
    assert reader.feed(GO_CONNECT + b"\x16\x03\x01") is not None
    assert reader.early == b"\x16\x03\x01"


@pytest.mark.parametrize(("data", "status"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"CONNECT 10.0.0.9:10250 HTTP/1.1\r\n\r\n", 400),              # no Host: h11 refuses an HTTP/1.1 head
    (b"CONNECT 10.0.0.9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),          # no port
    (b"CONNECT 10.0.0.9:99999 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"CONNECT bad_name!:10250 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"\x00\x01garbage\r\n\r\n", 400),
    (b"CONNECT 10.0.0.9:10250 HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
])
def test_malformed_heads_are_refused(data: bytes, status: int) -> None:
    with pytest.raises(ConnectRefused) as info:
        ConnectHeadReader(8192).feed(data)
    assert info.value.status == status


def test_head_is_bounded() -> None:
    reader = ConnectHeadReader(1024)
    reader.feed(b"CONNECT 10.0.0.9:10250 HTTP/1.1\r\nHost: x\r\n")
    with pytest.raises(ConnectRefused) as info:
        for _ in range(100):
            reader.feed(b"X-Pad: " + b"a" * 100 + b"\r\n")
    assert info.value.status == 431


def test_eof_before_the_head() -> None:
    reader = ConnectHeadReader(1024)
    reader.feed(b"CONNECT 10.0")
    with pytest.raises(EOFError):
        reader.feed(b"")


def test_targets() -> None:
    assert parse_target("[FD00::9]:10250") == ConnectTarget("fd00::9", 10250)
    assert str(parse_target("[fd00::9]:10250")) == "[fd00::9]:10250"
    assert parse_target("Edge-1:10250") == ConnectTarget("edge-1", 10250)
    assert not parse_target("edge-1:10250").is_ip and parse_target("10.0.0.1:1").is_ip


@dataclass
class _Session:
    node: str
    internal_ip: str


class _Registry:
    def __init__(self, *sessions: _Session) -> None:
        self.all = list(sessions)

    def get(self, node: str) -> _Session | None:
        return next((s for s in self.all if s.node == node), None)

    def get_by_ip(self, ip: str) -> _Session | None:
        return next((s for s in self.all if s.internal_ip == ip), None)

    def sessions(self) -> list[_Session]:
        return self.all


def test_decide() -> None:
    import ipaddress

    registry = _Registry(_Session("edge-1", "10.0.0.9"))
    nets = (ipaddress.ip_network("192.168.0.0/16"),)
    assert decide(ConnectTarget("10.0.0.9", 10250), registry, (10250,), ()).node == "edge-1"
    assert decide(ConnectTarget("edge-1", 10250), registry, (10250,), ()).route is Route.EDGE
    assert decide(ConnectTarget("192.168.3.4", 10250), registry, (10250,), nets).route is Route.DIRECT
    with pytest.raises(ConnectRefused) as info:
        decide(ConnectTarget("10.0.0.9", 9100), registry, (10250,), nets)
    assert info.value.status == 403 and "--egress-kubelet-port 9100" in info.value.detail
    with pytest.raises(ConnectRefused) as info:
        decide(ConnectTarget("10.7.7.7", 10250), registry, (10250,), nets)
    detail = info.value.detail
    assert info.value.status == 503 and "10.7.7.7" in detail and "--egress-direct" in detail and "edge-1 (10.0.0.9)" in detail


def test_refusal_reads_as_go_would() -> None:
    """Status line text is what the API server quotes; the body says the rest; nothing after it."""
    data = refusal_response(503, "no edge node 10.7.7.7 connected\r\nX: y", "CONNECT 10.7.7.7:10250: why. Fix: this")
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="CONNECT", target="10.7.7.7:10250", headers=[("Host", "127.0.0.1")]))
    client.receive_data(data)
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 503
    assert response.reason == b"no edge node 10.7.7.7 connected??X: y"
    body = client.next_event()
    assert isinstance(body, h11.Data) and body.data.startswith(b"cloudstream egress: CONNECT 10.7.7.7:10250")
    assert isinstance(client.next_event(), h11.EndOfMessage)


def test_established_is_a_bare_200_head() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="CONNECT", target="10.0.0.9:10250", headers=[("Host", "127.0.0.1")]))
    client.receive_data(ESTABLISHED)
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 200
    assert client.next_event() is h11.PAUSED and client.trailing_data == (b"", False)


def test_resolved_target_alone_picks_the_node() -> None:
    head = RequestHead("GET", "/containerLogs/a/b/c", "HTTP/1.1", (("Host", "edge-2"), ("X-Forwarded-Uri", "/api/v1/nodes/edge-3/proxy/x")))
    target = ResolvedTarget(key=("ip", "10.0.0.9"), port=10250, via="egress CONNECT 10.0.0.9:10250")
    assert request_node_keys(head, "10.1.1.1", "10.2.2.2", None, target) == [("ip", "10.0.0.9")]


def _config(*argv: str) -> CloudConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--log-level")
    return CloudConfig.from_args(parser.parse_args(list(argv)))


def test_flags() -> None:
    assert not _config().egress.enabled
    egress = _config("--egress-port", "10005", "--egress-direct", "10.0.0.0/8", "--egress-kubelet-port", "10350",
                     "--egress-kubelet-port", "10250", "--egress-allow", "cn:proxy", "--egress-head-timeout", "3").egress
    assert egress.enabled and egress.port == 10005 and egress.kubelet_ports == (10350, 10250)
    assert [str(n) for n in egress.direct] == ["10.0.0.0/8"] and egress.allow == (("cn", "proxy"),)
    assert egress.head_timeout == 3
    with pytest.raises(ConfigError):
        _config("--egress-direct", "not-a-cidr")
    with pytest.raises(ConfigError):
        _config("--egress-allow", "user:x")
    with pytest.raises(ConfigError):
        EgressConfig(port=70000)


def test_egress_config_document() -> None:
    text = render(url="https://10.0.0.1:10005", ca="/ca.crt", cert="/c.crt", key="/c.key", uds=None, file="/f.yaml")
    doc = yaml.safe_load(text)
    assert doc["apiVersion"] == "apiserver.k8s.io/v1beta1" and doc["kind"] == "EgressSelectorConfiguration"
    (selection,) = doc["egressSelections"]
    assert selection["name"] == "cluster"
    assert selection["connection"] == {"proxyProtocol": "HTTPConnect", "transport": {"tcp": {
        "url": "https://10.0.0.1:10005", "tlsConfig": {"caBundle": "/ca.crt", "clientCert": "/c.crt", "clientKey": "/c.key"}}}}
    assert "--kube-apiserver-arg=egress-selector-config-file=/f.yaml" in text and "--egress-selector-mode=disabled" in text
    uds = yaml.safe_load(render(url=None, ca=None, cert=None, key=None, uds="/run/e.sock"))
    assert uds["egressSelections"][0]["connection"]["transport"] == {"uds": {"udsName": "/run/e.sock"}}
    for bad in ({"url": "http://h:1"}, {"url": "https://h"}, {"url": None, "uds": None}):
        args = {"url": None, "ca": None, "cert": "/c", "key": "/k", "uds": None} | bad
        with pytest.raises(ValueError):
            render(**args)


def test_egress_config_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert cloudstream_main(["egress-config", "--uds", "/run/e.sock"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["kind"] == "EgressSelectorConfiguration"
    assert cloudstream_main(["egress-config", "--url", "https://h:1"]) == 2
    assert "--cert" in capsys.readouterr().err


def test_server_cert_check(lab_pki) -> None:
    from cloudstream.egress.command import _check_server_cert

    assert _check_server_cert(str(lab_pki.stream_cert), "https://127.0.0.1:10005") is None
    assert _check_server_cert(str(lab_pki.stream_cert), "https://localhost:10005") is None
    warning = _check_server_cert(str(lab_pki.stream_cert), "https://10.0.0.1:10005")
    assert warning is not None and "10.0.0.1" in warning


def test_unix_socket_binding(tmp_path) -> None:
    import os
    import stat

    from cloudstream.egress.front import _bind_unix

    path = tmp_path / "e.sock"
    first = _bind_unix(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(OSError, match="another process serves"):
            _bind_unix(path)
    finally:
        first.close()
    second = _bind_unix(path)  # a stale socket file nobody listens on is replaced
    second.close()
    os.unlink(path)
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        _bind_unix(path)
    assert path.read_text() == "not a socket"
