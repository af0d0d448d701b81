"""When cloudstream talks to the Kubernetes API, and what it claims as its replica IP."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cloudstream.config import CloudConfig, add_arguments
from cloudstream.kube import settings as kube_settings_module
from streamproto.tunnel.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_off_without_kubeconfig_outside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert CloudConfig.from_args(parse()).kube is None
    with pytest.raises(ConfigError, match="needs --kubeconfig"):
        CloudConfig.from_args(parse("--kubeedge-tunnel-port", "on"))


def test_in_a_pod_only_with_a_mounted_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setattr(kube_settings_module, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "token"))
    assert CloudConfig.from_args(parse()).kube is None  # automountServiceAccountToken: false
    (tmp_path / "token").write_text("t")
    monkeypatch.setenv("POD_IP", "10.244.0.5")
    kube = CloudConfig.from_args(parse()).kube
    assert kube is not None and kube.kubeconfig is None and kube.replica_ip == "10.244.0.5"
    assert CloudConfig.from_args(parse("--kubeedge-tunnel-port", "off")).kube is None


def test_kubeconfig_and_replica_ip_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube = CloudConfig.from_args(parse("--kubeconfig", "/k/config", "--replica-ip", "192.0.2.7")).kube
    assert kube is not None and kube.kubeconfig == Path("/k/config") and kube.replica_ip == "192.0.2.7"
    with pytest.raises(ConfigError, match="not an IP"):
        CloudConfig.from_args(parse("--kubeconfig", "/k/config", "--replica-ip", "cloud-1"))


def test_without_the_client_package_a_kubeconfig_is_an_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_settings_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"kubeedge-stream\[kube\]"):
        CloudConfig.from_args(parse("--kubeconfig", "/k/config", "--replica-ip", "192.0.2.7"))


def test_default_replica_ip_is_pod_ip_else_the_route_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_IP", "10.244.0.9")
    assert kube_settings_module.default_replica_ip() == "10.244.0.9"
    monkeypatch.delenv("POD_IP")
    import ipaddress

    ipaddress.ip_address(kube_settings_module.default_replica_ip())  # an address, whatever the host's routes
