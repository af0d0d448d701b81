"""OCI image archives without Docker: a Debian root filesystem from ``mmdebstrap`` (cached as a tarball, and
as an OCI layout holding it as one layer), our wheels installed with pip's cross-install flags into a
second layer (``umoci insert``), packed by ``umoci`` into an OCI layout,
then written as an OCI archive (the layout as a tar) that ``ctr images import`` and K3S's air-gap
images folder load.

The archive's index names the manifest twice, with ``io.containerd.image.name`` set to the tag
reference and to ``name@sha256:<digest>``: containerd then holds both names after an import, so
manifests pinned by digest run offline (the CRI finds the digest reference locally, no pull).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from streambundle.layout import PLATFORMS, ImageEntry
from streambundle.wheelhouse import BundleError, requirement, run_tool

TOOLS = {"mmdebstrap": "mmdebstrap", "umoci": "umoci"}
EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*", "/usr/share/lintian/*")
INCLUDES = ("/usr/share/doc/*/copyright",)  # the licences stay with the binaries
SITE = "/opt/kubeedge-stream/site"
NONROOT = "65532:65532"
MERGED_USR = Path("/usr/share/mmdebstrap/hooks/merged-usr")


@dataclass(frozen=True)
class ImageSpec:
    role: str
    packages: tuple[str, ...]
    user: str            # the image's default user (the manifests set the same)
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    extras: tuple[str, ...]  # those of the bundle's extras this image installs


SPECS = {
    "cloudstream": ImageSpec("cloudstream", ("python3",), NONROOT, ("cloudstream",), ("--help",), ("uvloop", "kube")),
    "iptables-manager": ImageSpec("iptables-manager", ("python3", "iptables"), "0:0",
                                  ("cloudstream", "iptables"), ("show",), ()),
}


def host_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def missing_tools() -> list[str]:
    return sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})


def debian_rootfs(packages: tuple[str, ...], arch: str, suite: str, mirrors: list[str], cache: Path) -> Path:
    """A tarball of a minimal Debian (``--variant=essential`` plus ``packages``), built once per
    package set and kept in ``cache``."""
    key = hashlib.sha256(json.dumps([sorted(packages), arch, suite, mirrors, EXCLUDES, INCLUDES]).encode()).hexdigest()[:16]
    out = cache / "rootfs" / f"{suite}-{arch}-{key}.tar"
    if out.is_file():
        return out
    if os.geteuid() != 0:
        raise BundleError("mmdebstrap needs root here (root mode keeps file ownership); run the build as root")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.tar")
    argv = ["mmdebstrap", "--mode=root", "--variant=essential", f"--architectures={arch}",
            f"--include={','.join(packages)}", "--aptopt=Acquire::Retries 3",
            '--aptopt=APT::Install-Recommends "false"']
    if MERGED_USR.is_dir():  # merged /usr by symlinks: no usrmerge package, so no perl (50 MB) in the image
        argv.append(f"--hook-dir={MERGED_USR}")
    argv += [f"--dpkgopt=path-exclude={p}" for p in EXCLUDES]
    argv += [f"--dpkgopt=path-include={p}" for p in INCLUDES]
    argv += ["--customize-hook=rm -rf \"$1\"/var/cache/apt/* \"$1\"/var/lib/apt/lists/* \"$1\"/var/log/*",
             suite, str(partial), *mirrors]
    run_tool(argv, f"mmdebstrap ({suite}/{arch}: {', '.join(packages)})", timeout=1500)
    partial.rename(out)
    return out


def _python_version(rootfs: Path) -> str:
    names = sorted(p.name for p in (rootfs / "usr" / "bin").glob("python3.*") if p.name[8:].isdigit())
    if not names:
        raise BundleError(f"no /usr/bin/python3.N in the Debian root filesystem ({rootfs})")
    return names[-1].removeprefix("python")


def _install_site(stage: Path, python: str, wheelhouse: Path, requirement: str, arch: str) -> None:
    """Our layer's files under ``stage``: the wheels for the image's Python and arch, and two wrappers."""
    site = stage / SITE.lstrip("/")
    argv = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheelhouse),
            "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
            "--no-compile", "--target", str(site)]
    for plat in PLATFORMS[arch]:
        argv += ["--platform", plat]
    argv.append(requirement)
    run_tool(argv, f"installing the wheelhouse into the image (Python {python}, {arch}); "
                   f"the bundle needs --python {python} for the image's Debian python3")
    shutil.rmtree(site / "bin", ignore_errors=True)  # scripts with the build host's interpreter in #!
    bindir = stage / "usr" / "local" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for module in ("cloudstream", "edgestream"):
        target = bindir / module
        target.write_text(f'#!/bin/sh\nexec /usr/bin/python3 -m {module} "$@"\n')
        target.chmod(0o755)
    # the layer's modes do not depend on the build's umask: the non-root user reads everything
    for path in [stage, *stage.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o111 else 0o644)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def base_layout(packages: tuple[str, ...], arch: str, suite: str, mirrors: list[str],
                cache: Path) -> tuple[Path, int, str]:
    """An OCI layout whose tag ``img`` is the Debian layer alone, kept in ``cache`` (so a rebuild only
    adds our layer, and the Debian layer keeps its digest across builds): (layout, unpacked size, python)."""
    rootfs_tar = debian_rootfs(packages, arch, suite, mirrors, cache)
    done = cache / "oci-base" / rootfs_tar.stem
    meta = done / "base.json"
    if meta.is_file():
        data = json.loads(meta.read_text())
        return done / "oci", int(data["size"]), str(data["python"])
    work = done.with_name(done.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    layout, bundle = work / "oci", work / "bundle"
    run_tool(["umoci", "init", "--layout", str(layout)], "umoci init")
    run_tool(["umoci", "new", "--image", f"{layout}:img"], "umoci new")
    run_tool(["umoci", "unpack", "--image", f"{layout}:img", str(bundle)], "umoci unpack")
    rootfs = bundle / "rootfs"
    run_tool(["tar", "-xpf", str(rootfs_tar), "-C", str(rootfs), "--numeric-owner", "--exclude=./dev/*"],
             "unpacking the Debian root filesystem")
    run_tool(["umoci", "repack", "--image", f"{layout}:img", str(bundle)], "umoci repack (Debian layer)")
    size, python = _dir_size(rootfs), _python_version(rootfs)
    shutil.rmtree(bundle)
    (work / "base.json").write_text(json.dumps({"size": size, "python": python}))
    shutil.rmtree(done, ignore_errors=True)
    work.rename(done)
    return done / "oci", size, python


def build_image(spec: ImageSpec, *, name: str, arch: str, suite: str, mirrors: list[str], wheelhouse: Path,
                project: str, version: str, extras: tuple[str, ...], cache: Path, out: Path,
                archive_rel: str) -> ImageEntry:
    base, base_size, python = base_layout(spec.packages, arch, suite, mirrors, cache)
    with tempfile.TemporaryDirectory(prefix="kes-bundle-img-", dir=cache) as tmp:
        layout, stage = Path(tmp) / "oci", Path(tmp) / "stage"
        shutil.copytree(base, layout)
        _install_site(stage, python, wheelhouse, requirement(project, version, tuple(e for e in extras if e in spec.extras)), arch)
        run_tool(["umoci", "insert", "--image", f"{layout}:img", str(stage), "/"], "umoci insert (kubeedge-stream layer)")
        size = base_size + _dir_size(stage)
        config = ["umoci", "config", "--image", f"{layout}:img", "--os", "linux", "--architecture", arch,
                  "--author", project, "--config.user", spec.user, "--config.workingdir", "/",
                  "--config.env", f"PYTHONPATH={SITE}", "--config.env", "PYTHONDONTWRITEBYTECODE=1",
                  "--config.env", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                  "--clear=config.entrypoint", "--clear=config.cmd",
                  "--config.label", f"org.opencontainers.image.version={version}",
                  "--config.label", f"org.opencontainers.image.title={project} {spec.role} (Python {python})"]
        for arg in spec.entrypoint:
            config += ["--config.entrypoint", arg]
        for arg in spec.cmd:
            config += ["--config.cmd", arg]
        run_tool(config, "umoci config")
        run_tool(["umoci", "gc", "--layout", str(layout)], "umoci gc")
        digest = _name_layout(layout, name)
        archive = out / archive_rel
        archive.parent.mkdir(parents=True, exist_ok=True)
        _tar_layout(layout, archive)
    return ImageEntry(role=spec.role, file=archive_rel, name=name, digest=digest, arch=arch, size=size)


def _name_layout(layout: Path, name: str) -> str:
    """Rewrite index.json: the one manifest under both its tag name and its digest name."""
    index = json.loads((layout / "index.json").read_text())
    found = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "img"]
    if len(found) != 1:
        raise BundleError(f"umoci's index.json has {len(found)} manifests tagged img, expected 1")
    desc = found[0]
    digest = str(desc["digest"])
    repo = name.rsplit(":", 1)[0]
    tag = name.rsplit(":", 1)[1]
    entries = []
    for ref, short in ((name, tag), (f"{repo}@{digest}", None)):
        annotations = {"io.containerd.image.name": ref}
        if short:
            annotations["org.opencontainers.image.ref.name"] = short
        entries.append({k: v for k, v in desc.items() if k != "annotations"} | {"annotations": annotations})
    index["manifests"] = entries
    (layout / "index.json").write_text(json.dumps(index))
    return digest


def _tar_layout(layout: Path, archive: Path) -> None:
    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layout.rglob("*")):
            info = tar.gettarinfo(str(path), path.relative_to(layout).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if path.is_file():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    partial.rename(archive)


def archive_digests(archive: Path) -> dict[str, str]:
    """io.containerd.image.name -> manifest digest, from an OCI archive's index.json; also checks that
    every blob the index, manifests and configs name is in the archive with that digest."""
    with tarfile.open(archive) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        def read(name: str) -> bytes:
            member = members.get(name)
            f = tar.extractfile(member) if member else None
            if f is None:
                raise BundleError(f"{archive.name}: {name} missing")
            return f.read()
        index = json.loads(read("index.json"))
        names: dict[str, str] = {}
        for desc in index.get("manifests", []):
            ref = desc.get("annotations", {}).get("io.containerd.image.name") or \
                desc.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
            names[ref] = desc["digest"]
            manifest_bytes = read(_blob(desc["digest"]))
            _check_blob(archive, desc["digest"], manifest_bytes)
            manifest = json.loads(manifest_bytes)
            for blob in [manifest["config"], *manifest["layers"]]:
                member = members.get(_blob(blob["digest"]))
                if member is None:
                    raise BundleError(f"{archive.name}: blob {blob['digest']} missing")
                f = tar.extractfile(member)
                assert f is not None
                h = hashlib.sha256()
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                if "sha256:" + h.hexdigest() != blob["digest"]:
                    raise BundleError(f"{archive.name}: blob {blob['digest']} corrupt")
    return names


def _blob(digest: str) -> str:
    algo, _, hexdigest = digest.partition(":")
    return f"blobs/{algo}/{hexdigest}"


def _check_blob(archive: Path, digest: str, data: bytes) -> None:
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"{archive.name}: blob {digest} corrupt")
