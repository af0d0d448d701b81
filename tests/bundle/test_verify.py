"""``bundle verify`` on the real bundle: clean passes; a removed wheel, a corrupted file and a missing
image each fail, naming the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streambundle.checksums import write_sums
from tests.bundle.conftest import ARCHES, PYTHONS, ROOT, Built

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500), pytest.mark.integration]


def verify(path: Path, *flags: str) -> tuple[int, dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "streambundle", "verify", "--json", *flags, str(path)],
                          env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    return done.returncode, json.loads(done.stdout)


def test_clean_bundle_verifies_and_lists_every_target(built_bundle: Built) -> None:
    rc, result = verify(built_bundle.dir)
    assert (rc, result["problems"]) == (0, [])
    info = json.loads((built_bundle.dir / "bundle.json").read_text())
    for arch in ARCHES:
        for python in PYTHONS:
            names = info["wheels"][arch][python]
            tag = "x86_64" if arch == "amd64" else "aarch64"
            # the compiled dependencies are there as this target's binary wheels
            for dep in ("grpcio", "cryptography", "websockets", "uvloop", "aiohttp"):
                assert any(n.startswith(dep + "-") and tag in n for n in names), (arch, python, dep, names)
            assert f"{arch} / Python {python}: {len(names)} wheels, pip resolves offline" in result["notes"]
    # the project's own manifests ride along, pinned to the bundle's cloudstream digest
    cloudstream = next((i for i in info["images"] if i["role"] == "cloudstream"), None)
    for src in sorted((ROOT / "deploy" / "kubernetes").rglob("*.yaml")) if cloudstream else []:
        carried = built_bundle.dir / "kubernetes" / "deploy" / src.relative_to(ROOT / "deploy" / "kubernetes")
        if "image:" in src.read_text():
            assert f"image: {cloudstream['name'].rsplit(':', 1)[0]}@{cloudstream['digest']}" in carried.read_text()
    # the runtime extras pyproject declares (uvloop, kube) resolve too
    assert info["extras"] == ["uvloop", "kube"] and any(n.startswith("kubernetes_asyncio-") for n in info["wheels"]["arm64"]["3.12"])
    # `sha256sum -c` reads the same manifest
    done = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=built_bundle.dir, capture_output=True)
    assert done.returncode == 0, done.stdout


def test_removed_wheel_is_named(bundle_copy: Path) -> None:
    info = json.loads((bundle_copy / "bundle.json").read_text())
    victim = next(n for n in info["wheels"]["arm64"]["3.12"] if n.startswith("grpcio-"))
    (bundle_copy / "wheelhouse" / victim).unlink()
    rc, result = verify(bundle_copy)
    assert rc == 1
    assert f"missing: wheelhouse/{victim} (listed in SHA256SUMS)" in result["problems"]
    assert f"missing wheel: wheelhouse/{victim} (needed on arm64 / Python 3.12)" in result["problems"]


def test_unlisted_dependency_gap_is_found_by_pip(bundle_copy: Path) -> None:
    """A wheel gone from the wheelhouse AND from the manifests: only pip's offline resolution sees it."""
    info = json.loads((bundle_copy / "bundle.json").read_text())
    victim = next(n for n in info["wheels"]["amd64"]["3.11"] if n.startswith("h11-"))
    (bundle_copy / "wheelhouse" / victim).unlink()
    for by_python in info["wheels"].values():
        for names in by_python.values():
            names[:] = [n for n in names if n != victim]
    (bundle_copy / "bundle.json").write_text(json.dumps(info))
    write_sums(bundle_copy)  # a consistent but incomplete bundle
    rc, result = verify(bundle_copy)
    assert rc == 1
    gaps = [p for p in result["problems"] if "does not install offline" in p]
    assert len(gaps) == len(ARCHES) * len(PYTHONS), result["problems"]
    assert all("h11" in p for p in gaps), gaps


def test_corrupted_file_is_named(bundle_copy: Path) -> None:
    unit = bundle_copy / "edge" / "edgestream.service"
    unit.write_text(unit.read_text() + "ExecStartPre=/bin/true\n")
    rc, result = verify(bundle_copy, "--no-resolve")
    assert rc == 1
    assert result["problems"] == ["corrupt: edge/edgestream.service (sha256 differs from SHA256SUMS)"]


def test_missing_image_is_named(built_bundle: Built, bundle_copy: Path) -> None:
    if not built_bundle.images:
        pytest.skip(f"bundle built without images: {built_bundle.why_no_images}")
    info = json.loads((bundle_copy / "bundle.json").read_text())
    image = next(i for i in info["images"] if i["role"] == "iptables-manager")
    (bundle_copy / image["file"]).unlink()
    rc, result = verify(bundle_copy, "--no-resolve")
    assert rc == 1
    assert f"missing image: {image['file']} ({image['name']})" in result["problems"]
    ref = f"{image['name'].rsplit(':', 1)[0]}@{image['digest']}"
    assert any(p.startswith(f"kubernetes/iptables-manager.yaml: image {ref} is none of") for p in result["problems"])


def test_corrupted_image_layer_is_named(built_bundle: Built, bundle_copy: Path) -> None:
    if not built_bundle.images:
        pytest.skip(f"bundle built without images: {built_bundle.why_no_images}")
    info = json.loads((bundle_copy / "bundle.json").read_text())
    image = next(i for i in info["images"] if i["role"] == "cloudstream")
    archive = bundle_copy / image["file"]
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit pattern inside the big layer blob
    archive.write_bytes(bytes(data))
    rc, result = verify(bundle_copy, "--no-resolve")
    assert rc == 1
    assert f"corrupt: {image['file']} (sha256 differs from SHA256SUMS)" in result["problems"]
    assert any(p.startswith(f"image {image['file']} unreadable or corrupt") for p in result["problems"]), result


def test_manifests_pass_the_kubernetes_schemas_strictly(built_bundle: Built) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="test-only dependency: pip install -e '.[test]'")
    import yaml
    if not built_bundle.images:
        pytest.skip(f"bundle built without images, so without manifests: {built_bundle.why_no_images}")
    files = sorted((built_bundle.dir / "kubernetes").rglob("*.yaml"))
    kinds = set()
    for path in files:
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            kinds.add(doc["kind"])
            for version in ("1.27.0", kv.latest_version()):
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as exc:
                    pytest.fail(f"{path.relative_to(built_bundle.dir)} ({doc['kind']}) against Kubernetes {version}: {exc}")
    assert {"Namespace", "Deployment", "Service", "ServiceAccount", "DaemonSet", "ConfigMap"} <= kinds
