"""edgestream's renewal flags and the feature it offers."""

from __future__ import annotations

import argparse

import pytest

from edgestream.cert_renewal import CertRenewal
from edgestream.config import EdgeConfig, add_arguments
from streamproto.tunnel import ConfigError, Feature


def _config(*flags: str) -> EdgeConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return EdgeConfig.from_args(parser.parse_args(["--node-name", "n1", *flags]))


def test_defaults_and_flags() -> None:
    config = _config()
    assert config.cert_renewal and config.renew_fraction == pytest.approx(2 / 3) and config.renew_min_left == 86400
    assert CertRenewal(config).offer == {Feature.RENEW}
    config = _config("--renew-at", "0.5", "--renew-min-left", "3600")
    assert (config.renew_fraction, config.renew_min_left) == (0.5, 3600)
    off = _config("--no-cert-renewal")
    assert not off.cert_renewal and CertRenewal(off).offer == frozenset()


@pytest.mark.parametrize("flags", [("--renew-at", "0"), ("--renew-at", "1.5"), ("--renew-min-left", "-1")])
def test_bad_values(flags: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        _config(*flags)
