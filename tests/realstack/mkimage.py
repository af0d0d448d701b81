#!/usr/bin/env python3
"""Build a single-layer container image tarball (docker-archive format) without a registry.

The real-stack tests run containerd with no network access, so the sandbox ("pause") image and
the busybox image are built locally from host binaries and imported with
``ctr -n k8s.io images import``.

Usage::

    mkimage.py --name registry.k8s.io/pause:3.6 --out pause.tar \
        --entrypoint '["/pause"]' --file /path/to/pause:/pause
    mkimage.py --name docker.io/library/busybox:latest --out busybox.tar \
        --cmd '["sh"]' --busybox /bin/busybox

The archive holds ``manifest.json`` (with ``RepoTags``), the image config ``<sha256>.json`` and
``<sha256>/layer.tar``. The output is deterministic: every entry has mtime 0 and root ownership.
Only the standard library is used, so any ``python3`` can run it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import posixpath
import subprocess
import sys
import tarfile

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_DIRS = ("dev", "etc", "proc", "sys", "tmp")


class LayerWriter:
    """Accumulates a layer tar in memory, creating parent directories on demand."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.GNU_FORMAT)
        self._dirs: set[str] = set()

    @staticmethod
    def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.size = size
        info.linkname = link
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def mkdirs(self, path: str) -> None:
        parts = [p for p in path.strip("/").split("/") if p]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._dirs:
                self._dirs.add(d)
                self._tar.addfile(self._info(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))

    def add_file(self, src: str, dest: str, mode: int = 0o755) -> None:
        dest = dest.strip("/")
        self.mkdirs(posixpath.dirname(dest))
        with open(src, "rb") as f:
            data = f.read()
        self._tar.addfile(self._info(dest, tarfile.REGTYPE, mode, size=len(data)), io.BytesIO(data))

    def add_symlink(self, target: str, path: str) -> None:
        path = path.strip("/")
        self.mkdirs(posixpath.dirname(path))
        self._tar.addfile(self._info(path, tarfile.SYMTYPE, 0o777, link=target))

    def finish(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def busybox_applets(busybox: str) -> list[str]:
    """Paths (relative, e.g. ``usr/bin/wc``) of every applet the busybox binary provides."""
    out = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True).stdout
    return sorted({line.strip().strip("/") for line in out.splitlines() if line.strip()})


def build_layer(files: list[tuple[str, str]], links: list[tuple[str, str]], busybox: str | None) -> bytes:
    layer = LayerWriter()
    for d in BASE_DIRS:
        layer.mkdirs(d)
    for src, dest in files:
        layer.add_file(src, dest)
    if busybox:
        layer.add_file(busybox, "/bin/busybox")
        for applet in busybox_applets(busybox):
            if applet != "bin/busybox":
                layer.add_symlink("/bin/busybox", applet)
    for target, path in links:
        layer.add_symlink(target, path)
    return layer.finish()


def build_archive(name: str, layer: bytes, entrypoint: list[str] | None, cmd: list[str] | None) -> bytes:
    layer_digest = hashlib.sha256(layer).hexdigest()
    runtime_cfg: dict[str, object] = {"Env": [DEFAULT_PATH], "WorkingDir": "/"}
    if entrypoint:
        runtime_cfg["Entrypoint"] = entrypoint
    if cmd:
        runtime_cfg["Cmd"] = cmd
    # containerd only imports images whose config matches the host platform and whose
    # diff_ids name the uncompressed layer.
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": runtime_cfg,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
        },
        sort_keys=True,
    ).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": config_digest + ".json", "RepoTags": [name], "Layers": [layer_digest + "/layer.tar"]}]
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for entry, data in (
            (layer_digest + "/layer.tar", layer),
            (config_digest + ".json", config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(entry)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _pair(value: str) -> tuple[str, str]:
    left, sep, right = value.partition(":")
    if not sep or not left or not right:
        raise argparse.ArgumentTypeError(f"expected A:B, got {value!r}")
    return left, right


def _json_list(value: str) -> list[str] | None:
    parsed = json.loads(value)
    if parsed is not None and not (isinstance(parsed, list) and all(isinstance(x, str) for x in parsed)):
        raise argparse.ArgumentTypeError(f"expected a JSON list of strings or null, got {value!r}")
    return parsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="image reference stored in RepoTags")
    ap.add_argument("--out", required=True, help="output tarball")
    ap.add_argument("--entrypoint", type=_json_list, default=None, help="JSON list")
    ap.add_argument("--cmd", type=_json_list, default=None, help="JSON list")
    ap.add_argument("--file", type=_pair, action="append", default=[], metavar="SRC:DEST",
                    help="copy host file SRC to DEST in the image (mode 0755)")
    ap.add_argument("--symlink", type=_pair, action="append", default=[], metavar="TARGET:PATH",
                    help="create symlink PATH -> TARGET in the image")
    ap.add_argument("--busybox", metavar="BINARY",
                    help="add this static busybox as /bin/busybox plus a symlink per applet")
    args = ap.parse_args(argv)

    layer = build_layer(args.file, args.symlink, args.busybox)
    archive = build_archive(args.name, layer, args.entrypoint, args.cmd)
    with open(args.out, "wb") as f:
        f.write(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
