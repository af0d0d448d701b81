"""Expiry warnings of the certificates in use: 30/7/1 days ahead, an error once expired, once per band."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest

from streamcerts.expiry import InUse, check_expiry, cloud_in_use, edge_in_use, watch

from .craft import NOW, craft, save


def _files(tmp_path: Path) -> list[InUse]:
    out = []
    for name, days in (("fine", 90), ("month", 20), ("week", 5), ("day", 0.5), ("gone", -2)):
        path = tmp_path / f"{name}.crt"
        save(path, craft(name, start=NOW - dt.timedelta(days=400), end=NOW + dt.timedelta(days=days)))
        out.append(InUse(f"role-{name}", path, f"renew {name}"))
    return out


def test_bands_and_messages(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = _files(tmp_path)
    with caplog.at_level(logging.WARNING, "streamcerts.expiry"):
        bands = check_expiry(files)
    by_role = {r.getMessage().split(" certificate")[0].lstrip("!x "): r for r in caplog.records}
    assert set(by_role) == {"role-month", "role-week", "role-day", "role-gone"}
    assert by_role["role-gone"].levelno == logging.ERROR and "EXPIRED" in by_role["role-gone"].getMessage()
    month = by_role["role-month"].getMessage()
    assert by_role["role-month"].levelno == logging.WARNING
    assert str(tmp_path / "month.crt") in month and "CN=month" in month and "fix: renew month" in month
    assert "expires in 20.0 days" in month or "expires in 19.9 days" in month
    assert "hours" in by_role["role-day"].getMessage()
    assert [bands[f.path] for f in files] == [None, 30.0, 7.0, 1.0, 0.0]
    # The next daily check logs only what entered a new band.
    caplog.clear()
    with caplog.at_level(logging.WARNING, "streamcerts.expiry"):
        check_expiry(files, last=bands)
        assert not caplog.records
        later = check_expiry(files, now=NOW + dt.timedelta(days=14), last=bands)
    logged = [r.getMessage().split(" certificate")[0].lstrip("!x ") for r in caplog.records]
    assert logged == ["role-month", "role-week", "role-day"]  # 20 -> 6 days, 5 days -> expired, 12 h -> expired
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR, logging.ERROR]
    assert later[files[1].path] == 7.0 and later[files[2].path] == 0.0


def test_missing_file_is_a_warning_not_a_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "streamcerts.expiry"):
        assert check_expiry([InUse("tunnel CA", tmp_path / "absent.crt", "x")]) == {}
    assert "absent.crt" in caplog.text


class FakeLoop:
    """Records call_later: the watcher's schedule without waiting a day."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Any]] = []
        self.cancelled = 0

    def call_later(self, delay: float, callback: Any) -> Any:
        self.calls.append((delay, callback))
        loop = self

        class Handle:
            def cancel(self) -> None:
                loop.cancelled += 1

        return Handle()


def test_watch_checks_at_start_then_daily(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = _files(tmp_path)[1:2]
    loop = FakeLoop()
    with caplog.at_level(logging.WARNING, "streamcerts.expiry"):
        stop = watch(loop, files)
        assert len(caplog.records) == 1  # at start
        assert [d for d, _ in loop.calls] == [86400.0]
        loop.calls[0][1]()  # a day later: same band, no new line; rescheduled
        assert len(caplog.records) == 1 and len(loop.calls) == 2
    stop()
    assert loop.cancelled == 1


def test_files_in_use_follow_the_configs() -> None:
    from cloudstream.config import CloudConfig
    from edgestream.config import EdgeConfig

    cloud = cloud_in_use(CloudConfig())
    assert [f.path for f in cloud] == [Path("/etc/kubeedge/ca/rootCA.crt"), Path("/etc/kubeedge/certs/server.crt"),
                                       Path("/etc/kubeedge/ca/streamCA.crt"), Path("/etc/kubeedge/certs/stream.crt")]
    assert "streamcerts issue server" in cloud[1].fix
    edge = edge_in_use(EdgeConfig(node_name="n1", node_ip="10.0.0.1"))
    assert [f.path for f in edge] == [Path("/etc/kubeedge/ca/rootCA.crt"), Path("/etc/kubeedge/certs/server.crt")]
    assert "streamcerts issue edge n1 --ip 10.0.0.1" in edge[1].fix
