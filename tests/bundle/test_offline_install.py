"""The wheelhouse installs with no network: inside a network namespace with only ``lo`` (no route out),
``edge/install.sh`` makes a venv from the bundle, then ``cloudstream --help``, ``kubeedge-stream bundle verify``
and a whole lab chain (streamcerts -> cloudstream -> edgestream emulated edge -> logs -f through 10003) run
from that venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bundle.conftest import Built

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500), pytest.mark.integration]
HERE = Path(__file__).resolve().parent


@pytest.fixture
def offline_netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make a network namespace")
    name = f"kes-bundle-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        yield name
    finally:
        # any process still in it (a failed run) goes first, then the namespace
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], check=True, timeout=30)


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH (the checkout must not be what runs) and no pip settings (no index, no proxy)."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PIP_")}


def test_offline_install_and_lab_chain(built_bundle: Built, offline_netns: str, tmp_path: Path) -> None:
    inns = ["ip", "netns", "exec", offline_netns]
    routes = subprocess.run([*inns, "ip", "route", "show", "table", "all"], capture_output=True, text=True,
                            check=True, timeout=30).stdout
    assert not [r for r in routes.splitlines() if " dev lo " not in f" {r} "], f"a route out exists:\n{routes}"
    # the kernel has no route to any outside address (asked without sending a packet; TEST-NET-1)
    probe = subprocess.run([*inns, "ip", "route", "get", "192.0.2.1"], capture_output=True, text=True, timeout=30)
    assert probe.returncode != 0 and "unreachable" in probe.stderr.lower(), probe.stderr

    prefix, units = tmp_path / "opt", tmp_path / "units"
    units.mkdir()
    env = _clean_env() | {"PYTHON": sys.executable, "PREFIX": str(prefix), "UNIT_DIR": str(units)}
    done = subprocess.run([*inns, "sh", str(built_bundle.dir / "edge" / "install.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"install.sh failed:\n{done.stdout}\n{done.stderr}"
    assert f"edgestream installed in {prefix}" in done.stdout
    unit = (units / "edgestream.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.startswith(f"ExecStart={prefix}/bin/edgestream"), exec_start
    venv = prefix / "bin"
    where = subprocess.run([*inns, str(venv / "python"), "-c", "import cloudstream, edgestream; "
                            "print(cloudstream.__file__); print(edgestream.__file__)"],
                           env=_clean_env(), cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60)
    for line in where.stdout.split():
        assert line.startswith(str(prefix)), f"not from the offline venv: {line}"

    helped = subprocess.run([*inns, str(venv / "cloudstream"), "--help"], env=_clean_env(), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--tunnel-port" in helped.stdout, helped.stderr

    # on site, from the installed venv: the bundle checks itself with no network (pip resolves offline)
    verified = subprocess.run([*inns, str(venv / "kubeedge-stream"), "bundle", "verify", str(built_bundle.dir)],
                              env=_clean_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "complete, every checksum matches" in verified.stdout

    chain = subprocess.run([*inns, str(venv / "python"), str(HERE / "offline_chain.py"), str(venv),
                            str(tmp_path / "lab")], env=_clean_env(), cwd=tmp_path, capture_output=True, text=True,
                           timeout=180, stdin=subprocess.DEVNULL)
    assert chain.returncode == 0, f"chain failed:\n{chain.stdout}\n{chain.stderr[-4000:]}"
    assert "CHAIN OK" in chain.stdout, chain.stdout
