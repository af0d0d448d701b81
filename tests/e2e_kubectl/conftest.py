"""Real kubectl binaries (1.27 ... 1.33) against the chain, through ``ApiServerFront``."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
VERSIONS = ["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"]


def kubectl_binary(version: str) -> Path:
    path = KUBECTL_DIR / f"kubectl.{version}"
    if not (path.exists() and os.access(path, os.X_OK)):
        pytest.skip(f"kubectl {version} is not installed at {path}")
    return path


@dataclass
class Kubectl:
    binary: Path
    home: Path
    kubeconfig: Path

    @property
    def version(self) -> tuple[int, int]:
        major, minor = self.binary.name.split(".", 1)[1].split(".")
        return int(major), int(minor)

    def env(self) -> dict[str, str]:
        return dict(os.environ, HOME=str(self.home), KUBECONFIG=str(self.kubeconfig))

    async def start(self, *args: str, stdin: bool = False) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            str(self.binary), "--kubeconfig", str(self.kubeconfig), "--request-timeout", "0", *args,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env(),
        )

    async def run(self, *args: str, input: bytes | None = None, timeout: float = 60) -> tuple[int, bytes, bytes]:
        proc = await self.start(*args, stdin=input is not None)
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return proc.returncode or 0, out, err


def write_kubeconfig(path: Path, port: int) -> None:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: front
  cluster:
    server: http://127.0.0.1:{port}
users:
- name: tester
  user:
    token: not-a-secret
contexts:
- name: front
  context:
    cluster: front
    user: tester
    namespace: default
current-context: front
"""
    )


def make_kubectl(version: str, tmp: Path, port: int) -> Kubectl:
    binary = kubectl_binary(version)
    home = tmp / f"home-{version}"
    home.mkdir(parents=True, exist_ok=True)
    kubeconfig = tmp / f"kubeconfig-{version}"
    write_kubeconfig(kubeconfig, port)
    return Kubectl(binary, home, kubeconfig)


def have_script() -> bool:
    return shutil.which("script") is not None


def kubelet_client_tls(make: Callable[[], ssl.SSLContext]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The API server's two kubelet dials: ALPN ``h2, http/1.1`` for plain requests,
    ``http/1.1`` only for upgrades (apiserver-observed.md section 1)."""
    plain, upgrade = make(), make()
    plain.set_alpn_protocols(["h2", "http/1.1"])
    upgrade.set_alpn_protocols(["http/1.1"])
    return plain, upgrade


async def run_in_terminal(kubectl: Kubectl, *args: str, keys: Sequence[bytes] = (), until: bytes | None = None,
                          size: tuple[int, int] = (33, 91), timeout: float = 60) -> tuple[int | None, bytes]:
    """Run kubectl under ``script`` (a pseudo-terminal of ``size`` rows x cols): returns the exit
    code and what the terminal showed. With ``until``, type ``keys`` and stop once it appears."""
    rows, cols = size
    command = f"stty rows {rows} cols {cols}; exec {kubectl.binary} --kubeconfig {kubectl.kubeconfig} " + " ".join(
        shlex.quote(a) for a in args)
    proc = await asyncio.create_subprocess_exec(
        "script", "-qec", command, "/dev/null", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=kubectl.env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    out = bytearray()
    try:
        async with asyncio.timeout(timeout):
            for key in keys:
                proc.stdin.write(key)
                await proc.stdin.drain()
            while until is None or until not in out:  # stdin stays open: an EOF would reach the process
                chunk = await proc.stdout.read(4096)
                if not chunk:
                    break
                out += chunk
            if until is None:
                return await proc.wait(), bytes(out)
            return None, bytes(out)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
