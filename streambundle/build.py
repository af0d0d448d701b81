"""``bundle build``: the whole offline bundle in one directory (and optionally one tar)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from streambundle import edge, images, manifests
from streambundle.checksums import write_sums
from streambundle.layout import (EDGE, IMAGES, MANIFESTS, PLATFORMS, WHEELHOUSE, BundleInfo, ImageEntry)
from streambundle.wheelhouse import (BundleError, build_project_wheel, fill_wheelhouse, project_meta,
                                     requirement, runtime_extras)

README = """kubeedge-stream {version} offline bundle ({arches}; Python {pythons})

wheelhouse/   every wheel, all targets:  pip install --no-index --find-links wheelhouse {project}[uvloop,kube]
images/       OCI archives:  ctr -n k8s.io images import images/<file>.tar
              (K3S: copy them to /var/lib/rancher/k3s/agent/images/ before starting k3s)
kubernetes/   manifests pinned to the images' digests:  kubectl apply -f kubernetes/
edge/         edge hosts:  sudo sh edge/install.sh   (venv + systemd unit, no network)
bundle.json   what was built; SHA256SUMS: sha256sum -c SHA256SUMS

Certificates are not in the bundle: create them on site with `streamcerts init|issue|lab`
(installed with the wheelhouse); see the project README, "Certificates".
Check the bundle after carrying it:  kubeedge-stream bundle verify <this directory>
"""


@dataclass
class BuildOptions:
    project_dir: Path
    out: Path
    arches: list[str]
    pythons: list[str]
    cache: Path
    images: bool = True
    image_arches: list[str] = field(default_factory=list)
    suite: str = "bookworm"
    mirrors: list[str] = field(default_factory=list)
    registry: str = "docker.io/kubeedge-stream"
    tar: bool = False
    force: bool = False


def default_cache() -> Path:
    env = os.environ.get("KES_BUNDLE_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/kubeedge-stream-bundle")
    return Path.home() / ".cache" / "kubeedge-stream-bundle"


def _log(msg: str) -> None:
    sys.stderr.write(f"[bundle] {msg}\n")
    sys.stderr.flush()


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not force:
            raise BundleError(f"{out} exists and is not empty; pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def build(opts: BuildOptions) -> dict[str, object]:
    """Build the bundle; returns the measurements (sizes in bytes, times in seconds)."""
    for arch in opts.arches:
        if arch not in PLATFORMS:
            raise BundleError(f"unknown arch {arch!r}; known: {', '.join(PLATFORMS)}")
    if not (opts.project_dir / "pyproject.toml").is_file():
        raise BundleError(f"no pyproject.toml in {opts.project_dir}: the build needs the project's source checkout "
                          "(--project DIR)")
    started = time.monotonic()
    times: dict[str, float] = {}
    project, version = project_meta(opts.project_dir)
    _prepare_out(opts.out, opts.force)
    opts.cache.mkdir(parents=True, exist_ok=True)
    with (opts.cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per cache: they share its partial files
        return _build_locked(opts, project, version, started, times)


def _build_locked(opts: BuildOptions, project: str, version: str, started: float,
                  times: dict[str, float]) -> dict[str, object]:
    t = time.monotonic()
    wheel = build_project_wheel(opts.project_dir, opts.cache / "project")
    times["project wheel"] = time.monotonic() - t
    _log(f"project wheel {wheel.name} ({times['project wheel']:.1f}s)")

    t = time.monotonic()
    wheelhouse = opts.out / WHEELHOUSE
    extras = runtime_extras(opts.project_dir)
    info = BundleInfo(project=project, version=version, arches=list(opts.arches), pythons=list(opts.pythons),
                      extras=list(extras))
    info.wheels = fill_wheelhouse(wheel, opts.arches, opts.pythons, opts.cache, wheelhouse, extras)
    times["wheelhouse"] = time.monotonic() - t
    _log(f"wheelhouse: {len(list(wheelhouse.iterdir()))} wheels for {len(opts.arches)} arch(es) x "
         f"{len(opts.pythons)} Python(s) ({times['wheelhouse']:.1f}s)")

    if opts.images:
        info.images = _build_images(opts, project, version, extras, wheelhouse, times)
        (opts.out / MANIFESTS).mkdir()
        by_role = {(img.role, img.arch): img for img in info.images}
        arch = opts.image_arches[0]
        (opts.out / MANIFESTS / "namespace.yaml").write_text(manifests.NAMESPACE_YAML)
        (opts.out / MANIFESTS / "cloudstream.yaml").write_text(manifests.cloudstream_yaml(by_role["cloudstream", arch]))
        (opts.out / MANIFESTS / "iptables-manager.yaml").write_text(
            manifests.iptables_yaml(by_role["iptables-manager", arch]))
        # the project's own manifests (e.g. the HA Deployment), pinned to the same digests
        deploy = opts.project_dir / "deploy" / "kubernetes"
        roles = {role: img for (role, img_arch), img in by_role.items() if img_arch == arch}
        for src in sorted(deploy.rglob("*.yaml")) if deploy.is_dir() else []:
            dest = opts.out / MANIFESTS / "deploy" / src.relative_to(deploy)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(manifests.pin_images(src.read_text(), roles))

    edge_dir = opts.out / EDGE
    edge_dir.mkdir()
    (edge_dir / "edgestream.service").write_text(edge.unit(opts.project_dir))
    (edge_dir / "install.sh").write_text(edge.install_sh(requirement(project, version, tuple(e for e in extras if e == "uvloop"))))
    (edge_dir / "install.sh").chmod(0o755)
    (opts.out / "README.txt").write_text(README.format(
        version=version, project=project, arches=", ".join(opts.arches), pythons=", ".join(opts.pythons)))
    info.write(opts.out)
    count = write_sums(opts.out)
    times["total"] = time.monotonic() - started
    report = measure(opts.out, info, times)
    _log(f"{count} files checksummed in {opts.out}/SHA256SUMS")
    if opts.tar:
        t = time.monotonic()
        tar_path = opts.out.with_name(opts.out.name + ".tar")
        with tarfile.open(tar_path, "w") as tar:
            tar.add(opts.out, arcname=opts.out.name)
        report["tar"] = {"file": str(tar_path), "bytes": tar_path.stat().st_size, "seconds": time.monotonic() - t}
    return report


def _build_images(opts: BuildOptions, project: str, version: str, extras: tuple[str, ...], wheelhouse: Path,
                  times: dict[str, float]) -> list[ImageEntry]:
    missing = images.missing_tools()
    if missing:
        raise BundleError(f"building images needs {', '.join(missing)}: apt-get install -y {' '.join(missing)} "
                          "(or --no-images)")
    built: list[ImageEntry] = []
    for arch in opts.image_arches:
        if arch not in opts.arches:
            raise BundleError(f"--image-arch {arch} is not in --arch {','.join(opts.arches)}")
        for role, spec in images.SPECS.items():
            t = time.monotonic()
            name = f"{opts.registry}/{role}:{version}"
            entry = images.build_image(spec, name=name, arch=arch, suite=opts.suite, mirrors=opts.mirrors,
                                       wheelhouse=wheelhouse, project=project, version=version, extras=extras,
                                       cache=opts.cache,
                                       out=opts.out, archive_rel=f"{IMAGES}/{role}-{version}-{arch}.tar")
            times[f"image {role} {arch}"] = time.monotonic() - t
            _log(f"image {name} {entry.digest[:19]} ({times[f'image {role} {arch}']:.1f}s)")
            built.append(entry)
    return built


def measure(out: Path, info: BundleInfo, times: dict[str, float]) -> dict[str, object]:
    wheelhouse = out / WHEELHOUSE
    per_arch = {}
    for arch, by_python in info.wheels.items():
        names = {n for names in by_python.values() for n in names}
        per_arch[arch] = sum((wheelhouse / n).stat().st_size for n in names)
    pure = {n for by_python in info.wheels.values() for names in by_python.values() for n in names
            if n.endswith("-none-any.whl")}
    sizes = {
        "wheelhouse": sum(p.stat().st_size for p in wheelhouse.iterdir()),
        "wheelhouse per arch (pure wheels counted in each)": per_arch,
        "pure wheels (shared)": sum((wheelhouse / n).stat().st_size for n in pure),
        "image archives": {img.file: (out / img.file).stat().st_size for img in info.images},
        "images unpacked": {img.name: img.size for img in info.images},
        "total": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    }
    return {"sizes": sizes, "seconds": {k: round(v, 1) for k, v in times.items()}}


def format_report(report: dict[str, object]) -> str:
    return json.dumps(report, indent=2)
