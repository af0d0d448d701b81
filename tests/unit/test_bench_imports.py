"""bench/ never imports tests/: what both need lives in testkit/ (the house rule; a benchmark
must run from a checkout whose tests changed, and tests may import bench, never the reverse)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module", "__import__",
        ) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.append((node.lineno, node.args[0].value))
    return found


def offenders(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        for line, module in imported_modules(path):
            if module == "tests" or module.startswith("tests."):
                bad.append(f"{path.relative_to(root.parent)}:{line} imports {module}")
    return bad


def test_bench_imports_nothing_from_tests() -> None:
    assert (ROOT / "bench").is_dir()
    assert offenders(ROOT / "bench") == []


def test_testkit_imports_nothing_from_tests() -> None:
    assert offenders(ROOT / "testkit") == []


def test_the_walk_finds_a_tests_import(tmp_path: Path) -> None:
    pkg = tmp_path / "bench"
    pkg.mkdir()
    (pkg / "a.py").write_text("import os\nfrom tests.integration.framework import Process\n")
    (pkg / "b.py").write_text("def f():\n    import tests.conftest\n    __import__('tests.x')\n")
    (pkg / "c.py").write_text("from testkit.processes import Process\nfrom . import tests\n")
    assert offenders(pkg) == [
        "bench/a.py:2 imports tests.integration.framework",
        "bench/b.py:2 imports tests.conftest",
        "bench/b.py:3 imports tests.x",
    ]
