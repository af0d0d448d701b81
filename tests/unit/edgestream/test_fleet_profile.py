"""The fleet profile: YAML keys, flags over the file, node names/IPs from the patterns, and
errors that say what to fix."""

from __future__ import annotations

import argparse

import pytest

from edgestream.fleet_profile import FleetProfile, add_arguments
from streamproto.tunnel.errors import ConfigError


def _parse(*argv: str) -> FleetProfile:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return FleetProfile.from_args(parser.parse_args(list(argv)))


def test_yaml_profile_and_flags_over_it(tmp_path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "nodes: 300\ncidr: 10.9.0.0/16\nname: 'lab-{i}'\npods: [kube-system/agent/main]\npods_per_node: 2\n"
        "log_rate: 5\nline_size: 120\nchurn: {rate: 0.5, down: 3}\nramp: 50\n"
    )
    profile = _parse("--profile", str(path), "--nodes", "20", "--log-rate", "0")
    assert profile.nodes == 20 and profile.log_rate == 0.0  # flags win
    assert (profile.churn_rate, profile.churn_down, profile.ramp, profile.line_size) == (0.5, 3.0, 50.0, 120)
    assert [profile.node_name(i) for i in (0, 19)] == ["lab-0", "lab-19"]
    assert [profile.node_ip(i) for i in (0, 19)] == ["10.9.0.1", "10.9.0.20"]
    emulator = profile.emulator()
    assert emulator.pods == (("kube-system", "agent", "main"), ("default", "pod-0", "app"), ("default", "pod-1", "app"))
    assert (emulator.log_rate, emulator.line_size) == (0.0, 120)


def test_every_node_has_its_own_name_and_ip() -> None:
    profile = FleetProfile(nodes=1000, cidr="127.20.0.0/20")
    assert len({profile.node_name(i) for i in range(1000)}) == 1000
    assert len({profile.node_ip(i) for i in range(1000)}) == 1000


@pytest.mark.parametrize(("settings", "says"), [
    ({"nodes": 300, "cidr": "10.0.0.0/24"}, "fewer than 300 host addresses"),
    ({"cidr": "not-a-network"}, "is not a network"),
    ({"name": "edge", "nodes": 2}, "same name"),
    ({"name": "edge-{j}"}, "name pattern"),
    ({"pods": ("default/demo",)}, "namespace/pod/container"),
    ({"ramp": 0}, "ramp"),
])
def test_errors_say_what_to_fix(settings, says) -> None:
    with pytest.raises(ConfigError, match=says):
        FleetProfile(**settings)


def test_unknown_yaml_keys_are_named(tmp_path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("nodes: 3\nnode_count: 5\n")
    with pytest.raises(ConfigError, match="node_count"):
        _parse("--profile", str(path))
