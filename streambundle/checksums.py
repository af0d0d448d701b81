"""SHA256SUMS in ``sha256sum`` format (so ``sha256sum -c SHA256SUMS`` checks it without our code)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from streambundle.layout import SUMS


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_files(root: Path) -> list[str]:
    """Every regular file under ``root`` but the sums file, as sorted POSIX relative paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != SUMS)


def write_sums(root: Path) -> int:
    lines = [f"{sha256_file(root / rel)}  {rel}\n" for rel in bundle_files(root)]
    (root / SUMS).write_text("".join(lines))
    return len(lines)


def check_sums(root: Path) -> list[str]:
    """Problems, one line each: missing, corrupt, unlisted files; [] when every checksum matches."""
    sums_path = root / SUMS
    if not sums_path.is_file():
        return [f"{SUMS} missing: the bundle has no checksum manifest (rebuild it)"]
    problems: list[str] = []
    listed: set[str] = set()
    for number, line in enumerate(sums_path.read_text().splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            problems.append(f"{SUMS}:{number}: not a '<sha256>  <path>' line: {line[:80]!r}")
            continue
        listed.add(rel)
        path = root / rel
        if not path.is_file():
            problems.append(f"missing: {rel} (listed in {SUMS})")
        elif sha256_file(path) != digest:
            problems.append(f"corrupt: {rel} (sha256 differs from {SUMS})")
    for rel in bundle_files(root):
        if rel not in listed:
            problems.append(f"unlisted: {rel} (not in {SUMS}; added after the build?)")
    return problems
