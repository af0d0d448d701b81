"""Shared fixtures: the lab PKI, the real containerd, and the leak check fault tests end with
(no leaked task, file descriptor or loop error)."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
from pathlib import Path

import pytest

from streamcerts import Layout, create_ca, init_lab, issue_client_cert, load_cert, load_key, write_pem
from tests.realstack.conftest_plugin import realstack  # noqa: F401  (the real containerd, once per session)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MS = float(os.environ.get("KES_TIMEOUT_FACTOR", "1"))
"""Scale every test timeout on slow machines."""


def free_port() -> int:
    """A TCP port free on loopback right now (for host-network pods and fixed-port servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _open_fds() -> set[tuple[int, str]]:
    """(fd, what it points to): the pair, so a reused fd number still shows as new."""
    found = set()
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # pragma: no cover - not Linux
        return set()
    for name in names:
        try:
            found.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except OSError:  # the directory handle listdir used, already closed
            pass
    return found


@pytest.fixture
async def no_leaks():
    """Use in fault tests: at teardown no task and no file descriptor is left behind."""
    gc.collect()
    before_fds = _open_fds()
    current = asyncio.current_task()
    before_tasks = {t for t in asyncio.all_tasks() if t is not current}
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    yield
    for _ in range(50):  # let closing transports finish their callbacks
        leftover = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} - before_tasks
        if not leftover:
            break
        await asyncio.sleep(0.02)
    leftover = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} - before_tasks
    assert not leftover, f"tasks leaked: {leftover}"
    gc.collect()
    await asyncio.sleep(0.05)
    leaked = sorted(_open_fds() - before_fds)
    assert not leaked, f"file descriptors leaked: {leaked}"
    assert not errors, f"the loop's exception handler fired: {errors}"
    loop.set_exception_handler(None)


def pytest_report_header(config: pytest.Config) -> str:
    return f"kubeedge-stream: python {sys.version.split()[0]}, shared spec at {SHARED} ({'present' if SHARED.exists() else 'absent'})"


NODES = ["edge-1", "edge-2", "edge-3"]


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """A streamcerts lab, plus identities the refusal tests need."""
    layout = init_lab(tmp_path_factory.mktemp("pki"), NODES)
    root = layout.root
    # An API-server-looking client cert from a CA cloudstream does not trust.
    other_ca = create_ca("kubernetes")
    write_pem(root / "stranger/client.crt", *issue_client_cert(*other_ca, "kube-apiserver-kubelet-client", ["system:masters"]))
    # A trusted CA but an identity that may not use the kubelet API.
    stream_ca = load_cert(layout.stream_ca), load_key(layout.stream_ca_key)
    write_pem(root / "nobody/client.crt", *issue_client_cert(*stream_ca, "system:anonymous-user", ["developers"]))
    return layout
