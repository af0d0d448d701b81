"""Regenerate the CRI gRPC Python modules from ``streamproto/cri/v1/api.proto``.

This is the one regeneration command::

    python -m scripts.cri_gen            # rewrite streamproto/cri/v1/api_pb2{.py,.pyi,_grpc.py}
    python -m scripts.cri_gen --check    # exit 1 if the committed modules are stale

It runs ``grpc_tools.protoc -I streamproto/cri v1/api.proto`` (needs the ``grpcio-tools`` dev
dependency), then makes the output importable as the package ``streamproto.cri.v1``:

* ``api_pb2_grpc.py``: protoc writes ``from v1 import api_pb2 as ...``, which only works with
  ``streamproto/cri`` on ``sys.path``; it is rewritten to the package-relative ``from . import api_pb2``.
* ``api_pb2.py``: the module name handed to the protobuf builder (``'v1.api_pb2'``) becomes
  ``'streamproto.cri.v1.api_pb2'`` so that generated classes report their real ``__module__``.

The output depends on the grpcio-tools version (it embeds the protobuf gencode version), so
``--check`` also reports which grpcio-tools produced the difference.

The module also knows how to pull the upstream ``runtime.v1`` schema out of a containerd binary
(Go programs embed every ``.proto`` as a gzipped ``FileDescriptorProto``) and compare our subset
with it; ``tests/unit/cri/test_schema.py`` uses that, and so does::

    python -m scripts.cri_gen --against /usr/bin/containerd
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from google.protobuf.descriptor_pb2 import DescriptorProto, FileDescriptorProto

REPO_ROOT = Path(__file__).resolve().parent.parent
INCLUDE_DIR = REPO_ROOT / "streamproto" / "cri"  # the -I root; generated modules land beside the .proto
PROTO_FILE = "v1/api.proto"  # path of the source relative to INCLUDE_DIR
PACKAGE = "streamproto.cri.v1"
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")
UPSTREAM_PACKAGE = "runtime.v1"

_GRPC_IMPORT = re.compile(r"^from v1 import api_pb2 as (\w+)$|^import api_pb2 as (\w+)$", re.M)
_BUILDER_MODULE = "'v1.api_pb2'"


def _postprocess(name: str, text: str) -> str:
    if name == "api_pb2_grpc.py":
        text, n = _GRPC_IMPORT.subn(lambda m: f"from . import api_pb2 as {m.group(1) or m.group(2)}", text)
        if n != 1:
            raise RuntimeError(f"expected exactly one api_pb2 import in {name}, rewrote {n}")
    elif name == "api_pb2.py":
        if text.count(_BUILDER_MODULE) != 1:
            raise RuntimeError(f"expected one {_BUILDER_MODULE} in {name}")
        text = text.replace(_BUILDER_MODULE, f"'{PACKAGE}.api_pb2'")
    return text


def generate(out_root: Path) -> dict[str, Path]:
    """Run protoc with output root ``out_root`` and post-process; returns name -> generated path.

    Files land in ``out_root / "v1"`` (mirroring the proto's path under the include root).
    """
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("grpcio-tools is required: pip install grpcio-tools") from exc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{INCLUDE_DIR}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        PROTO_FILE,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}: {' '.join(args)}")
    out_dir = out_root / Path(PROTO_FILE).parent
    result = {}
    for name in GENERATED:
        path = out_dir / name
        path.write_text(_postprocess(name, path.read_text(encoding="utf-8")), encoding="utf-8")
        result[name] = path
    return result


def _tools_version() -> str:
    try:
        from importlib.metadata import version

        return f"grpcio-tools {version('grpcio-tools')}, protobuf {version('protobuf')}"
    except Exception:  # pragma: no cover
        return "grpcio-tools (version unknown)"


def check() -> list[str]:
    """Regenerate into a temporary directory; return the names of committed files that differ."""
    committed_dir = INCLUDE_DIR / Path(PROTO_FILE).parent
    stale = []
    with tempfile.TemporaryDirectory(prefix="kes-protogen-") as tmp:
        for name, fresh in generate(Path(tmp)).items():
            committed = committed_dir / name
            want = fresh.read_text(encoding="utf-8")
            have = committed.read_text(encoding="utf-8") if committed.exists() else None
            if have != want:
                stale.append(name)
                if have is None:
                    print(f"missing: {committed.relative_to(REPO_ROOT)}", file=sys.stderr)
                else:
                    diff = difflib.unified_diff(
                        have.splitlines(), want.splitlines(), f"committed/{name}", f"regenerated/{name}", lineterm="", n=1
                    )
                    lines = list(diff)
                    print("\n".join(lines[:40]), file=sys.stderr)
                    if len(lines) > 40:
                        print(f"... ({len(lines) - 40} more diff lines)", file=sys.stderr)
    return stale


# ------------------------------------------------------------------------------ upstream schema


def upstream_descriptor(binary: str | Path = "/usr/bin/containerd") -> FileDescriptorProto:
    """Return the ``runtime.v1`` FileDescriptorProto embedded (gzipped) in a Go binary.

    Raises ``LookupError`` if the binary holds no such descriptor.
    """
    from google.protobuf import descriptor_pb2

    data = Path(binary).read_bytes()
    pos = 0
    while (pos := data.find(b"\x1f\x8b\x08", pos)) >= 0:
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[pos : pos + 4_000_000])
            fd = descriptor_pb2.FileDescriptorProto()
            fd.ParseFromString(raw)
        except Exception:
            pos += 3
            continue
        if fd.package == UPSTREAM_PACKAGE and fd.service:
            return fd
        pos += 3
    raise LookupError(f"no {UPSTREAM_PACKAGE} descriptor with services found in {binary}")


def our_descriptor() -> FileDescriptorProto:
    """Our schema, as compiled into the generated module."""
    from google.protobuf import descriptor_pb2

    from streamproto.cri.v1 import api_pb2

    fd = descriptor_pb2.FileDescriptorProto()
    api_pb2.DESCRIPTOR.CopyToProto(fd)
    return fd


def _messages(fd: FileDescriptorProto) -> dict[str, DescriptorProto]:
    """Every message (nested ones included) by its fully qualified name, e.g. '.runtime.v1.Foo.Bar'."""
    out: dict[str, DescriptorProto] = {}

    def walk(prefix: str, msgs) -> None:
        for m in msgs:
            fq = f"{prefix}.{m.name}"
            out[fq] = m
            walk(fq, m.nested_type)

    walk(f".{fd.package}", fd.message_type)
    return out


def _enums(fd: FileDescriptorProto) -> dict[str, dict[str, int]]:
    out = {f".{fd.package}.{e.name}": {v.name: v.number for v in e.value} for e in fd.enum_type}
    for fq, m in _messages(fd).items():
        for e in m.enum_type:
            out[f"{fq}.{e.name}"] = {v.name: v.number for v in e.value}
    return out


def compare(ours: FileDescriptorProto, upstream: FileDescriptorProto) -> list[str]:
    """List every way ``ours`` is not a faithful subset of ``upstream`` (empty list = compatible).

    Checked: package; every declared message exists upstream; each of its fields exists upstream
    with the same number, type, label and type name; every declared enum value exists with the same
    number; every declared RPC exists with the same request/response types and streaming flags.
    """
    from google.protobuf import descriptor_pb2

    F = descriptor_pb2.FieldDescriptorProto
    problems: list[str] = []
    if ours.package != upstream.package:
        problems.append(f"package {ours.package!r} != upstream {upstream.package!r}")
    if ours.syntax != upstream.syntax:
        problems.append(f"syntax {ours.syntax!r} != upstream {upstream.syntax!r}")

    up_msgs = _messages(upstream)
    for fq, msg in _messages(ours).items():
        up = up_msgs.get(fq)
        if up is None:
            problems.append(f"message {fq} does not exist upstream")
            continue
        if msg.options.map_entry != up.options.map_entry:
            problems.append(f"message {fq}: map_entry {msg.options.map_entry} != upstream {up.options.map_entry}")
        up_fields = {f.name: f for f in up.field}
        for f in msg.field:
            where = f"{fq}.{f.name}"
            uf = up_fields.get(f.name)
            if uf is None:
                problems.append(f"field {where} does not exist upstream")
                continue
            if f.number != uf.number:
                problems.append(f"field {where}: number {f.number} != upstream {uf.number}")
            if f.type != uf.type:
                problems.append(f"field {where}: type {F.Type.Name(f.type)} != upstream {F.Type.Name(uf.type)}")
            if f.label != uf.label:
                problems.append(f"field {where}: label {F.Label.Name(f.label)} != upstream {F.Label.Name(uf.label)}")
            if f.type in (F.TYPE_MESSAGE, F.TYPE_ENUM) and f.type_name != uf.type_name:
                problems.append(f"field {where}: type name {f.type_name} != upstream {uf.type_name}")
            if f.HasField("oneof_index") != uf.HasField("oneof_index"):
                problems.append(f"field {where}: oneof membership differs from upstream")

    up_enums = _enums(upstream)
    for fq, values in _enums(ours).items():
        up_values = up_enums.get(fq)
        if up_values is None:
            problems.append(f"enum {fq} does not exist upstream")
            continue
        for name, number in values.items():
            if up_values.get(name) != number:
                problems.append(f"enum value {fq}.{name} = {number}; upstream has {up_values.get(name)}")

    up_services = {s.name: {m.name: m for m in s.method} for s in upstream.service}
    for svc in ours.service:
        up_methods = up_services.get(svc.name)
        if up_methods is None:
            problems.append(f"service {svc.name} does not exist upstream")
            continue
        for m in svc.method:
            um = up_methods.get(m.name)
            where = f"rpc {svc.name}.{m.name}"
            if um is None:
                problems.append(f"{where} does not exist upstream")
                continue
            if (m.input_type, m.output_type) != (um.input_type, um.output_type):
                problems.append(
                    f"{where}: ({m.input_type}) returns ({m.output_type}); "
                    f"upstream ({um.input_type}) returns ({um.output_type})"
                )
            if (m.client_streaming, m.server_streaming) != (um.client_streaming, um.server_streaming):
                problems.append(f"{where}: streaming flags differ from upstream")
    return problems


# ------------------------------------------------------------------------------------------ cli


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.cri_gen", description="Regenerate the CRI Python stubs.")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the committed generated files are stale")
    mode.add_argument(
        "--against",
        metavar="BINARY",
        help="compare streamproto/cri/v1/api.proto with the runtime.v1 schema embedded in BINARY (e.g. /usr/bin/containerd)",
    )
    args = ap.parse_args(argv)

    if args.check:
        stale = check()
        if stale:
            print(
                f"stale generated files in streamproto/cri/v1: {', '.join(stale)} (checked with {_tools_version()}); "
                "run: python -m scripts.cri_gen",
                file=sys.stderr,
            )
            return 1
        print("streamproto/cri/v1 generated files are up to date")
        return 0

    if args.against:
        problems = compare(our_descriptor(), upstream_descriptor(args.against))
        for p in problems:
            print(p)
        print(f"{len(problems)} difference(s) from {args.against}")
        return 1 if problems else 0

    for path in generate(INCLUDE_DIR).values():
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
