"""``kubeedge-stream bundle build|verify`` (also ``python -m streambundle build|verify``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamops.cli import Parser
from streambundle.build import BuildOptions, build, default_cache, format_report
from streambundle.images import host_arch
from streambundle.verify import main_verify
from streambundle.wheelhouse import BundleError

DEFAULT_MIRRORS = ["deb http://deb.debian.org/debian bookworm main",
                   "deb http://deb.debian.org/debian-security bookworm-security main"]


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    top = Parser(prog="kubeedge-stream", description="kubeedge-stream's build-time tools")
    bundle = top.add_subparsers(dest="tool", required=True).add_parser(
        "bundle", description="the offline bundle: build it on a connected machine, carry it, verify it, "
        "install with no network")
    sub = bundle.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="wheelhouse + OCI images + manifests + edge install script + SHA256SUMS")
    b.add_argument("-o", "--out", required=True, type=Path, help="output directory, must be empty unless --force (required, no default)")
    b.add_argument("--arch", default="amd64,arm64", type=_csv, help="wheel architectures (amd64,arm64)")
    b.add_argument("--python", default="3.11,3.12,3.13", type=_csv, help="CPython versions (3.11,3.12,3.13)")
    b.add_argument("--image-arch", default=None, type=_csv,
                   help="architectures to build images for (default: this machine's, "
                        f"{host_arch()}); another one needs qemu-user-static binfmt")
    b.add_argument("--no-images", action="store_true", help="wheelhouse and edge files only (off)")
    b.add_argument("--suite", default="bookworm", help="Debian suite of the images (bookworm: Python 3.11)")
    b.add_argument("--mirror", action="append", default=None,
                   help="mmdebstrap mirror line, repeatable (default: deb.debian.org bookworm + security)")
    b.add_argument("--registry", default="docker.io/kubeedge-stream",
                   help="image name prefix (docker.io/kubeedge-stream): <prefix>/cloudstream:<version>")
    b.add_argument("--cache-dir", type=Path, default=None,
                   help="download cache kept across runs (default $KES_BUNDLE_CACHE, else "
                        "/var/cache/kubeedge-stream-bundle as root, else ~/.cache/kubeedge-stream-bundle)")
    b.add_argument("--project", type=Path, default=Path(__file__).resolve().parent.parent,
                   help="the project source (pyproject.toml) to build the wheel from (this checkout)")
    b.add_argument("--tar", action="store_true", help="also write OUT.tar (off)")
    b.add_argument("--force", action="store_true", help="replace a non-empty OUT (off)")
    b.add_argument("--report", type=Path, default=None, help="write the sizes and times as JSON here (default: none)")
    v = sub.add_parser("verify", help="check checksums and that every part is there; exit 1 naming what is not")
    v.add_argument("dir", type=Path)
    v.add_argument("--no-resolve", action="store_true",
                   help="skip the offline pip resolution per arch x Python (off: done, a few s each)")
    v.add_argument("--json", action="store_true", help="machine-readable result (off)")
    return top


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] not in (["bundle"], ["-h"], ["--help"], ["--version"]):
        args_list = ["bundle", *args_list]  # `python -m streambundle build ...`
    args = build_parser().parse_args(args_list)
    try:
        if args.command == "verify":
            return main_verify(args.dir, resolve=not args.no_resolve, as_json=args.json)
        opts = BuildOptions(
            project_dir=args.project, out=args.out, arches=args.arch, pythons=args.python,
            cache=args.cache_dir or default_cache(), images=not args.no_images,
            image_arches=args.image_arch or [host_arch()], suite=args.suite, mirrors=args.mirror or DEFAULT_MIRRORS,
            registry=args.registry, tar=args.tar, force=args.force)
        report = build(opts)
    except BundleError as e:
        print(f"bundle: {e}", file=sys.stderr)
        return 1
    text = format_report(report)
    if args.report:
        args.report.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
