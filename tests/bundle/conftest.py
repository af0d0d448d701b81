"""The bundle, built once per session by ``python -m streambundle build`` (the real pip, mmdebstrap and umoci),
with its download cache in /var/cache/kubeedge-stream-bundle (root) so reruns ask no index.

Images are built only as root with mmdebstrap and umoci on PATH; under CI (or KES_INSTALL_BUNDLE_TOOLS=1)
the fixture apt-get installs them first. Without them the bundle is built with --no-images and the image
tests skip, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
HOST_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
# the host's Python (the offline install test runs it) + 3.11 (Debian bookworm's, inside the images)
PYTHONS = sorted({HOST_PYTHON, "3.11", "3.12"})
ARCHES = ["amd64", "arm64"]
TOOL_PACKAGES = {"mmdebstrap": "mmdebstrap", "umoci": "umoci"}


@dataclass(frozen=True)
class Built:
    dir: Path
    report: dict
    images: bool
    why_no_images: str


def _image_tools() -> str:
    """'' when images can be built here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "building images needs root (mmdebstrap --mode=root)"
    missing = sorted(pkg for tool, pkg in TOOL_PACKAGES.items() if shutil.which(tool) is None)
    if not missing:
        return ""
    if not (os.environ.get("CI") or os.environ.get("KES_INSTALL") == "1" or os.environ.get("KES_INSTALL_BUNDLE_TOOLS") == "1"):
        return f"{', '.join(missing)} not installed (`make test` as root installs them: KES_INSTALL=1)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=600, stdin=subprocess.DEVNULL)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        return f"apt-get install {' '.join(missing)} failed: {done.stderr[-500:]}"
    return ""


@pytest.fixture(scope="session")
def built_bundle(tmp_path_factory: pytest.TempPathFactory) -> Built:
    why = _image_tools()
    out = tmp_path_factory.mktemp("bundle") / "kes-bundle"
    report = out.parent / "report.json"
    argv = [sys.executable, "-m", "streambundle", "build", "-o", str(out), "--arch", ",".join(ARCHES),
            "--python", ",".join(PYTHONS), "--report", str(report)]
    if why:
        argv.append("--no-images")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
                          stdin=subprocess.DEVNULL)
    sys.stderr.write(done.stderr)
    assert done.returncode == 0, f"bundle build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return Built(out, json.loads(report.read_text()), images=not why, why_no_images=why)


@pytest.fixture
def bundle_copy(built_bundle: Built, tmp_path: Path) -> Path:
    """A private copy to damage (hard links would share the damage with the session's bundle)."""
    dest = tmp_path / "copy"
    shutil.copytree(built_bundle.dir, dest)
    return dest
