"""``bundle verify DIR``: checksums and completeness, each problem named (file, what, the fix)."""

from __future__ import annotations

import json
from pathlib import Path

from streambundle.checksums import check_sums
from streambundle.images import archive_digests
from streambundle.manifests import IMAGE_LINE
from streambundle.layout import (BUNDLE_JSON, EDGE, EDGE_FILES, IMAGE_ROLES, MANIFEST_FILES, MANIFESTS, WHEELHOUSE,
                                 BundleInfo)
from streambundle.wheelhouse import BundleError, resolvable



def verify(root: Path, resolve: bool = True) -> tuple[list[str], list[str]]:
    """(problems, notes): the bundle is good when problems is empty."""
    problems = check_sums(root)
    notes: list[str] = []
    try:
        info = BundleInfo.read(root)
    except (OSError, ValueError, TypeError, KeyError) as e:
        return problems + [f"{BUNDLE_JSON} unreadable ({e}): not a bundle, or a damaged one; rebuild it"], notes

    wheelhouse = root / WHEELHOUSE
    for arch in info.arches:
        for python in info.pythons:
            names = info.wheels.get(arch, {}).get(python)
            if not names:
                problems.append(f"wheels for {arch} / Python {python}: none listed in {BUNDLE_JSON}")
                continue
            absent = [n for n in names if not (wheelhouse / n).is_file()]
            for name in absent:
                problems.append(f"missing wheel: {WHEELHOUSE}/{name} (needed on {arch} / Python {python})")
            if resolve and not absent:
                reason = resolvable(wheelhouse, info.project, info.version, arch, python, tuple(info.extras))
                if reason:
                    problems.append(f"{info.project}=={info.version} does not install offline on {arch} / "
                                    f"Python {python}: {reason}")
            notes.append(f"{arch} / Python {python}: {len(names)} wheels" + (", pip resolves offline" if resolve and not absent else ""))

    refs: dict[str, str] = {}
    if not info.images:
        notes.append("no images in this bundle (built with --no-images)")
    roles = {img.role for img in info.images}
    for role in IMAGE_ROLES:
        if info.images and role not in roles:
            problems.append(f"image {role}: not in {BUNDLE_JSON}")
    for img in info.images:
        path = root / img.file
        if not path.is_file():
            problems.append(f"missing image: {img.file} ({img.name})")
            continue
        try:
            in_archive = archive_digests(path)
        except (BundleError, OSError, ValueError, KeyError, EOFError) as e:
            problems.append(f"image {img.file} unreadable or corrupt: {e}")
            continue
        if in_archive.get(img.name) != img.digest:
            problems.append(f"image {img.file}: {img.name} is {in_archive.get(img.name)} in the archive, "
                            f"{img.digest} in {BUNDLE_JSON}")
        refs[f"{img.name.rsplit(':', 1)[0]}@{img.digest}"] = img.file
        notes.append(f"image {img.name} {img.digest} ({img.arch}) in {img.file}")

    if info.images:
        for name in MANIFEST_FILES:
            if not (root / MANIFESTS / name).is_file():
                problems.append(f"missing manifest: {MANIFESTS}/{name}")
        for path in sorted((root / MANIFESTS).rglob("*.yaml")):
            rel = path.relative_to(root).as_posix()
            for ref in (m.group(2) for m in IMAGE_LINE.finditer(path.read_text())):
                if ref not in refs:
                    problems.append(f"{rel}: image {ref} is none of the bundle's images "
                                    f"({', '.join(refs) or 'none readable'})")
    for name in EDGE_FILES:
        if not (root / EDGE / name).is_file():
            problems.append(f"missing edge file: {EDGE}/{name}")
    return problems, notes


def main_verify(root: Path, resolve: bool, as_json: bool) -> int:
    if not root.is_dir():
        print(f"bundle verify: {root} is not a directory")
        return 2
    problems, notes = verify(root, resolve=resolve)
    if as_json:
        print(json.dumps({"ok": not problems, "problems": problems, "notes": notes}, indent=2))
    else:
        for note in notes:
            print(f"ok: {note}")
        for problem in problems:
            print(f"PROBLEM: {problem}")
        print(f"bundle {root}: " + (f"{len(problems)} problem(s)" if problems else "complete, every checksum matches"))
    return 1 if problems else 0
