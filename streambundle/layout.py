"""What a bundle holds and where: the file names both `build` and `verify` agree on, and ``bundle.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

BUNDLE_JSON = "bundle.json"
SUMS = "SHA256SUMS"
WHEELHOUSE = "wheelhouse"
IMAGES = "images"
MANIFESTS = "kubernetes"
EDGE = "edge"
EDGE_FILES = ("edgestream.service", "install.sh")
IMAGE_ROLES = ("cloudstream", "iptables-manager")
MANIFEST_FILES = ("namespace.yaml", "cloudstream.yaml", "iptables-manager.yaml")

# Debian architecture -> the manylinux platform tags pip is asked for (glibc >= 2.17).
PLATFORMS = {
    "amd64": ("manylinux2014_x86_64", "manylinux_2_17_x86_64"),
    "arm64": ("manylinux2014_aarch64", "manylinux_2_17_aarch64"),
}


@dataclass(frozen=True)
class ImageEntry:
    role: str           # cloudstream | iptables-manager
    file: str           # relative to the bundle root
    name: str           # the tag reference, e.g. docker.io/kubeedge-stream/cloudstream:0.1.0
    digest: str         # the manifest digest, sha256:...
    arch: str
    size: int           # uncompressed layers + config, what the image takes once unpacked


@dataclass
class BundleInfo:
    project: str
    version: str
    arches: list[str]
    pythons: list[str]
    extras: list[str] = field(default_factory=list)  # pip extras every target resolves (e.g. kube)
    # arch -> python -> the wheel file names pip resolved for that target (project wheel included)
    wheels: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    images: list[ImageEntry] = field(default_factory=list)

    def write(self, root: Path) -> None:
        data = asdict(self)
        (root / BUNDLE_JSON).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, root: Path) -> BundleInfo:
        data = json.loads((root / BUNDLE_JSON).read_text())
        images = [ImageEntry(**entry) for entry in data.pop("images", [])]
        return cls(images=images, **data)
