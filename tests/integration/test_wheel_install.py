"""The built wheel installs beside proto-plus in a fresh virtual environment, and both keep working.

proto-plus installs a top-level ``proto`` package; ours are ``streamproto`` and ``streamcerts``.
The wheel is built from exactly what deploy/image/Containerfile copies into its build stage, so
this is also the image's build step without a container engine. Needs PyPI (or pip's cache) for
the dependencies and proto-plus; about a minute the first time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.integration.test_deploy_files import build_stage_sources

ROOT = Path(__file__).resolve().parents[2]
OURS = {"cloudstream", "edgestream", "streamproto", "streamops", "streamcerts", "streambundle"}
pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _run(*argv: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of this tree on the path
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _setuptools_ok() -> bool:
    if importlib.util.find_spec("setuptools") is None:
        return False
    from importlib.metadata import version

    return int(version("setuptools").split(".")[0]) >= 77


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in build_stage_sources():  # what the Containerfile's build stage copies
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(origin, src / name)
    isolation = ["--no-build-isolation"] if _setuptools_ok() else []  # else pip fetches setuptools>=77
    built = _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", tmp / "dist", src, cwd=tmp)
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = (tmp / "dist").glob("kubeedge_stream-*.whl")
    return path


def test_wheel_holds_our_packages_only_and_its_license(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == OURS, f"top-level names in the wheel: {sorted(top)}"
    assert "streamproto/cri/v1/api.proto" in names and "streamproto/py.typed" in names
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in meta and "Provides-Extra: uvloop" in meta
    assert [line for line in meta.splitlines() if line.startswith("Requires-Dist: uvloop")] == [
        "Requires-Dist: uvloop>=0.19; sys_platform != \"win32\" and extra == \"uvloop\""]
    license_text = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert license_text and b"Apache License" in zipfile.ZipFile(wheel).read(license_text[0])
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "streamcerts = streamcerts.__main__:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_fresh_venv_with_proto_plus_runs_every_entry_point(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, timeout=120)
    assert made.returncode == 0, made.stderr
    python, bin_ = venv / "bin/python", venv / "bin"
    install = _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel, "proto-plus", cwd=tmp_path)
    if install.returncode != 0 and ("No matching distribution" in install.stderr or "NewConnectionError" in install.stderr):
        pytest.skip(f"the dependencies cannot be fetched here (no index, no cache):\n{install.stderr[-1500:]}")
    assert install.returncode == 0, install.stdout + install.stderr
    check = _run(sys.executable, "-m", "pip", "--python", python, "check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr

    version = wheel.name.split("-")[1]
    for program, variable in (("cloudstream", "CLOUDSTREAM_TUNNEL_PORT"), ("edgestream", "EDGESTREAM_NODE_NAME")):
        shown = _run(bin_ / program, "--help", cwd=tmp_path, timeout=60)
        assert shown.returncode == 0 and variable in shown.stdout, shown.stdout + shown.stderr
        said = _run(bin_ / program, "--version", cwd=tmp_path, timeout=60)
        assert said.returncode == 0 and said.stdout == f"{program} {version}\n", said.stdout + said.stderr
    said = _run(bin_ / "streamcerts", "--version", cwd=tmp_path, timeout=60)
    assert said.returncode == 0 and said.stdout == f"streamcerts {version}\n", said.stdout + said.stderr
    lab = _run(bin_ / "streamcerts", "lab", "--dir", tmp_path / "lab", "--node", "edge-1", cwd=tmp_path, timeout=60)
    assert lab.returncode == 0 and (tmp_path / "lab/ca/rootCA.crt").is_file(), lab.stderr

    # proto-plus still works, and each import name resolves to its own distribution.
    code = (
        "import proto, streamproto, streamcerts, cloudstream, edgestream\n"  # rename: keep
        "class M(proto.Message):\n"  # rename: keep
        "    n = proto.Field(proto.INT32, number=1)\n"  # rename: keep
        "assert M(n=7).n == 7 and M.serialize(M(n=7)) == b'\\x08\\x07'\n"
        "from streamproto.cri.v1 import api_pb2\n"
        "from importlib.metadata import packages_distributions as d\n"
        "print(d()['proto'], d()['streamproto'], d()['streamcerts'])\n"  # rename: keep
        "print(proto.__file__, streamproto.__file__, streamcerts.__file__, cloudstream.__file__)\n"  # rename: keep
    )
    probe = _run(python, "-c", code, cwd=tmp_path, timeout=60)
    assert probe.returncode == 0, probe.stderr
    owners, paths = probe.stdout.splitlines()
    assert owners == "['proto-plus'] ['kubeedge-stream'] ['kubeedge-stream']", owners
    assert all(p.startswith(str(venv)) for p in paths.split()), paths
