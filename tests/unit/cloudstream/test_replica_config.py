"""HA flags: the replica's name, the count and the peers are checked at start."""

from __future__ import annotations

import argparse

import pytest

from cloudstream.config import CloudConfig, add_arguments, default_replica_id
from streamproto.tunnel.errors import ConfigError


def _parse(*argv: str) -> CloudConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return CloudConfig.from_args(parser.parse_args(list(argv)))


def test_flags() -> None:
    config = _parse("--replica-id", "cs-0", "--replicas", "3", "--replica-peers", "a:10004,b:10004",
                    "--replica-peers", "c:1")
    assert (config.replica_id, config.replicas, config.replica_peers) == ("cs-0", 3, ("a:10004", "b:10004", "c:1"))


def test_defaults_are_one_replica_named_after_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "cloudstream-5d8f-abcde")
    assert default_replica_id() == "cloudstream-5d8f-abcde"
    config = CloudConfig()
    assert config.replicas == 1 and config.replica_peers == ()
    monkeypatch.setenv("POD_NAME", "not a name")
    assert default_replica_id() == "cloudstream"


@pytest.mark.parametrize("settings", [
    {"replicas": 0}, {"replicas": 17}, {"replica_id": "a,b"}, {"replica_peers": ("nohost",)},
    {"replica_peers": ("h:0",)}, {"replica_peers": ("h:x",)},
])
def test_bad_values_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CloudConfig(**settings)  # type: ignore[arg-type]
