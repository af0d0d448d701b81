"""pytest fixture ``realstack``: a real containerd with CRI for the whole test session.

Use it from a conftest.py (pytest only honours ``pytest_plugins`` in the root conftest)::

    from tests.realstack.conftest_plugin import pytest_configure, realstack  # noqa: F401

and mark tests ``@pytest.mark.containerd``. The fixture

* skips unless running as root;
* skips if containerd/runc/busybox-static are missing and installing them is not allowed.
  Installing is allowed when ``KES_INSTALL=1`` (``make test`` sets it), ``CI`` is set, or
  ``KES_INSTALL_CONTAINERD=1``; then ``tests/realstack/setup.sh`` apt-get installs them;
* runs ``setup.sh up`` once per session with ``RS`` in pytest's temp dir, yields a
  :class:`tests.realstack.cri.RealStack`, and runs ``setup.sh down`` at the end (that removes all
  pods, stops containerd and its shims, unmounts and deletes ``RS``).

The per-phase timings printed by setup.sh are kept in ``RealStack.setup_output``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realstack.cri import RealStack

SETUP_SH = Path(__file__).resolve().parent / "setup.sh"
REQUIRED = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
}
BUSYBOX = "/bin/busybox"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "containerd: needs a real containerd (root; see tests/realstack/setup.sh)"
    )


def install_allowed() -> bool:
    """May tests apt-get install what they need? ``make test`` says yes (KES_INSTALL=1), as CI does."""
    return (
        bool(os.environ.get("CI"))
        or os.environ.get("KES_INSTALL") == "1"
        or os.environ.get("KES_INSTALL_CONTAINERD") == "1"
    )


def _missing_packages() -> list[str]:
    missing = {pkg for binary, pkg in REQUIRED.items() if shutil.which(binary) is None}
    if not os.access(BUSYBOX, os.X_OK):
        missing.add("busybox-static")
    return sorted(missing)


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "real containerd stack needs Linux"
    if os.geteuid() != 0:
        return "real containerd stack needs root (runs containerd, runc and mounts)"
    missing = _missing_packages()
    if missing:
        if not install_allowed():
            return (
                f"{', '.join(missing)} not installed; run `make test` as root (it sets KES_INSTALL=1), or set "
                "KES_INSTALL=1 to let tests/realstack/setup.sh apt-get install containerd runc busybox-static"
            )
        if shutil.which("apt-get") is None:
            return f"{', '.join(missing)} not installed and apt-get is unavailable to install them"
    return None


def _run_setup(action: str, rs: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RS=str(rs), PYTHON=sys.executable)
    if not install_allowed():
        env["NO_INSTALL"] = "1"
    return subprocess.run(
        ["bash", str(SETUP_SH), action],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def realstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    """A :class:`RealStack` bound to a containerd started for this session (torn down after)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    rs = tmp_path_factory.mktemp("realstack", numbered=True)
    up = _run_setup("up", rs, timeout=900)
    if up.returncode != 0:
        _run_setup("down", rs, timeout=300)
        if _missing_packages():
            pytest.skip(f"installing containerd failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
        pytest.fail(f"tests/realstack/setup.sh up failed (rc {up.returncode}):\n{up.stdout}\n{up.stderr}")
    stack = RealStack.from_rs(rs)
    stack.setup_output = up.stdout  # type: ignore[attr-defined]
    sys.stderr.write("\n" + up.stdout)
    try:
        yield stack
    finally:
        stack.close()
        down = _run_setup("down", rs, timeout=300)
        sys.stderr.write(down.stdout)
        if down.returncode != 0:
            sys.stderr.write(f"tests/realstack/setup.sh down failed (rc {down.returncode}):\n{down.stderr}\n")
