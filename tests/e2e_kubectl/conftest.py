"""Real kubectl binaries (1.27 ... 1.33) against the chain, through ``ApiServerFront``."""

from __future__ import annotations

import asyncio
import os
import shutil
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
