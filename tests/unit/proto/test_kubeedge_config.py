from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cloudstream.config import CloudConfig
from cloudstream.config import add_arguments as cloud_args
from edgestream.config import EdgeConfig
from edgestream.config import add_arguments as edge_args
from streamops.kubeedge_config import parse_duration
from streamproto.tunnel import ConfigError

EDGECORE = """
apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
modules:
  edged:
    hostnameOverride: edge-zone-a-7
    nodeIP: 192.0.2.17
    tailoredKubeletConfig:
      runtimeRequestTimeout: 2m
    tailoredKubeletFlag:
      remoteRuntimeEndpoint: unix:///run/k3s/containerd/containerd.sock
  edgeStream:
    enable: true
    handshakeTimeout: 30
    readDeadline: 15
    server: 203.0.113.5:10004
    tlsTunnelCAFile: /etc/kubeedge/ca/rootCA.crt
    tlsTunnelCertFile: /etc/kubeedge/certs/server.crt
    tlsTunnelPrivateKeyFile: /etc/kubeedge/certs/server.key
    writeDeadline: 15
"""

CLOUDCORE = """
apiVersion: cloudcore.config.kubeedge.io/v1alpha2
kind: CloudCore
modules:
  cloudStream:
    enable: true
    streamPort: 10003
    tunnelPort: 10004
    tlsStreamCAFile: /etc/kubeedge/ca/streamCA.crt
    tlsStreamCertFile: /etc/kubeedge/certs/stream.crt
    tlsStreamPrivateKeyFile: /etc/kubeedge/certs/stream.key
    tlsTunnelCAFile: /etc/kubeedge/ca/rootCA.crt
    tlsTunnelCertFile: /srv/certs/server.crt
    tlsTunnelPrivateKeyFile: /srv/certs/server.key
"""


def parse(add, argv: list[str]) -> argparse.Namespace:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


def test_edgecore_yaml_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "edgecore.yaml"
    path.write_text(EDGECORE)
    config = EdgeConfig.from_args(parse(edge_args, ["--config", str(path)]))
    assert config.node_name == "edge-zone-a-7" and config.node_ip == "192.0.2.17"
    assert config.server == "203.0.113.5:10004" and config.handshake_timeout == 30
    assert config.cri_endpoint == "unix:///run/k3s/containerd/containerd.sock" and config.cri_timeout == 120
    assert config.tls_tunnel_cert_file == Path("/etc/kubeedge/certs/server.crt")
    assert config.backend == "cri"  # the default backend is containerd
    flagged = EdgeConfig.from_args(parse(edge_args, ["--config", str(path), "--node-name", "other", "--server", "h:1"]))
    assert flagged.node_name == "other" and flagged.server == "h:1" and flagged.node_ip == "192.0.2.17"


def test_edge_defaults_are_kubeedges() -> None:
    config = EdgeConfig.from_args(parse(edge_args, []))
    assert config.server == "127.0.0.1:10004"
    assert config.tls_tunnel_ca_file == Path("/etc/kubeedge/ca/rootCA.crt")
    assert config.handshake_timeout == 30


def test_cloudcore_yaml_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "cloudcore.yaml"
    path.write_text(CLOUDCORE)
    config = CloudConfig.from_args(parse(cloud_args, ["--config", str(path), "--stream-port", "20003"]))
    assert config.stream_port == 20003 and config.tunnel_port == 10004
    assert config.tls_tunnel_cert_file == Path("/srv/certs/server.crt")
    assert config.tls_stream_ca_file == Path("/etc/kubeedge/ca/streamCA.crt")


def test_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        EdgeConfig.from_args(parse(edge_args, ["--config", str(tmp_path / "missing.yaml")]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("modules: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        CloudConfig.from_args(parse(cloud_args, ["--config", str(bad)]))


@pytest.mark.parametrize(("text", "seconds"), [(30, 30.0), ("2m", 120.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration() -> None:
    with pytest.raises(ConfigError):
        parse_duration("soon")
