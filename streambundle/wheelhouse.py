"""The wheelhouse: the project's wheel plus every runtime dependency, for each arch x Python version.

pip resolves each target (``pip download --only-binary=:all: --platform ... --python-version ...``);
downloads land in a cache directory keyed by target, so a rerun with the same project wheel asks no
index. Pure-Python wheels are one file in the wheelhouse, shared by every target.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
import re
from pathlib import Path

from streambundle.layout import PLATFORMS


SAVED = re.compile(r"(?:Saved|File was already downloaded) (\S+\.whl)")


class BundleError(Exception):
    """A build or verify step failed; the message names the step, the cause and the fix."""


def project_meta(project_dir: Path) -> tuple[str, str]:
    data = tomllib.loads((project_dir / "pyproject.toml").read_text())
    return data["project"]["name"], data["project"]["version"]


def runtime_extras(project_dir: Path, wanted: tuple[str, ...] = ("uvloop", "kube")) -> tuple[str, ...]:
    """The optional runtime extras the bundle carries: those of ``wanted`` pyproject declares
    (``uvloop``: the faster loop; ``kube``: the Kubernetes client HA cloudstream uses); test/dev/bench never."""
    data = tomllib.loads((project_dir / "pyproject.toml").read_text())
    declared = data["project"].get("optional-dependencies", {})
    return tuple(e for e in wanted if e in declared)


def run_tool(argv: list[str], what: str, timeout: float = 900) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BundleError(f"{what}: no answer after {timeout:.0f}s ({' '.join(argv[:6])} ...)") from e
    if done.returncode != 0:
        raise BundleError(f"{what} failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout


def build_project_wheel(project_dir: Path, out: Path) -> Path:
    """``pip wheel`` of a clean copy of the sources (only what pyproject packages), so the work tree
    gets no build/ or egg-info and the wheel holds no tests."""
    data = tomllib.loads((project_dir / "pyproject.toml").read_text())
    patterns = data.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {}).get("include", [])
    tops = sorted({p.rstrip("*").split(".")[0] for p in patterns})
    if not tops:
        raise BundleError(f"{project_dir}/pyproject.toml lists no packages under [tool.setuptools.packages.find]")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kes-bundle-src-") as tmp:
        src = Path(tmp)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (project_dir / name).is_file():
                shutil.copy2(project_dir / name, src / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for top in tops:
            if (project_dir / top).is_dir():
                shutil.copytree(project_dir / top, src / top, ignore=ignore)
        before = set(out.glob("*.whl"))
        run_tool([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)], "building the project wheel")
    name, version = project_meta(project_dir)
    stem = name.replace("-", "_")
    found = sorted(out.glob(f"{stem}-{version}-*.whl"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise BundleError(f"pip wheel made no {stem}-{version}-*.whl in {out} (new: {set(out.glob('*.whl')) - before})")
    return found[-1]


def _requirements(project_wheel: Path) -> str:
    """The wheel's Requires-Python and Requires-Dist lines: what the resolution depends on (the wheel's
    bytes change with every build, its requirements only when pyproject's do)."""
    with zipfile.ZipFile(project_wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(name).decode()
    return "\n".join(ln for ln in text.splitlines() if ln.startswith(("Requires-Dist:", "Requires-Python:", "Version:")))


def requirement(project: str, version: str, extras: tuple[str, ...]) -> str:
    return f"{project}[{','.join(extras)}]=={version}" if extras else f"{project}=={version}"


def _target_key(project_wheel: Path, arch: str, python: str, extras: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    h.update(_requirements(project_wheel).encode())
    h.update(",".join(extras).encode())
    h.update(f"{arch}/{python}/{','.join(PLATFORMS[arch])}".encode())
    return h.hexdigest()[:16]


def resolve_target(project_wheel: Path, arch: str, python: str, cache: Path,
                   extras: tuple[str, ...] = ()) -> list[Path]:
    """Every wheel the project needs on ``arch`` with CPython ``python``: pip's resolution, cached."""
    target_dir = cache / "wheels" / f"{arch}-py{python}"
    record = cache / "resolved" / f"{_target_key(project_wheel, arch, python, extras)}.json"
    if record.is_file():
        names = json.loads(record.read_text())
        paths = [target_dir / n for n in names]
        if all(p.is_file() for p in paths):
            shutil.copy2(project_wheel, target_dir / project_wheel.name)  # this build's wheel, same requirements
            return paths
    target_dir.mkdir(parents=True, exist_ok=True)
    name = project_wheel.name.split("-")[0]
    for stale in target_dir.glob(f"{name}-*.whl"):  # pip would take an old build's metadata from it
        stale.unlink()
    argv = [sys.executable, "-m", "pip", "download", "--progress-bar", "off", "--only-binary=:all:",
            "--implementation", "cp", "--python-version", python, "-d", str(target_dir),
            "--find-links", str(project_wheel.parent)]
    for platform in PLATFORMS[arch]:
        argv += ["--platform", platform]
    argv.append(requirement(name, project_wheel.name.split("-")[1], extras))
    try:
        output = run_tool(argv, f"pip download for {arch} / Python {python}")
    except BundleError as e:
        hint = ("\nfix: a dependency has no binary wheel for this target; drop the target or pin a version "
                "that ships one") if "No matching distribution" in str(e) else ""
        raise BundleError(f"{e}{hint}") from None
    # pip names each file it resolved: "Saved <path>" or "File was already downloaded <path>"
    names = sorted({Path(m).name for m in SAVED.findall(output)})
    if not any(n.startswith(name + "-") for n in names) or len(names) < 2:
        raise BundleError(f"pip download for {arch} / Python {python} named no wheels I could read:\n{output[-2000:]}")
    shutil.copy2(project_wheel, target_dir / project_wheel.name)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(names))
    return [target_dir / n for n in names]


def fill_wheelhouse(project_wheel: Path, arches: list[str], pythons: list[str], cache: Path,
                    wheelhouse: Path, extras: tuple[str, ...] = ()) -> dict[str, dict[str, list[str]]]:
    wheelhouse.mkdir(parents=True, exist_ok=True)
    listing: dict[str, dict[str, list[str]]] = {}
    for arch in arches:
        for python in pythons:
            paths = resolve_target(project_wheel, arch, python, cache, extras)
            for path in paths:
                dest = wheelhouse / path.name
                if not dest.exists():
                    shutil.copy2(path, dest)
            listing.setdefault(arch, {})[python] = [p.name for p in paths]
    return listing


def resolvable(wheelhouse: Path, project: str, version: str, arch: str, python: str,
               extras: tuple[str, ...] = ()) -> str | None:
    """None if pip, offline, can install ``project==version`` for the target from ``wheelhouse`` alone;
    else pip's reason."""
    with tempfile.TemporaryDirectory(prefix="kes-bundle-dry-") as tmp:
        argv = [sys.executable, "-m", "pip", "install", "--dry-run", "-q", "--no-index", "--find-links", str(wheelhouse),
                "--only-binary=:all:", "--implementation", "cp", "--python-version", python, "--target", tmp]
        for platform in PLATFORMS[arch]:
            argv += ["--platform", platform]
        argv.append(requirement(project, version, extras))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if done.returncode == 0:
        return None
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    return " | ".join(lines[-3:])
