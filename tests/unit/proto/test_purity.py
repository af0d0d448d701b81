"""The protocol core is pure, and the tree states the dependency direction."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_tunnel_core_imports_without_io_modules() -> None:
    code = (
        "import sys\n"
        "for name in ('asyncio', 'socket', 'ssl', 'grpc', 'selectors'):\n"
        "    sys.modules[name] = None  # makes 'import name' fail\n"
        "import streamproto.tunnel\n"
        "from streamproto.tunnel import decode, encode, Mux\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_dependency_direction() -> None:
    assert not _imports("streamproto") & {"cloudstream", "edgestream", "streamcerts", "streamops"}
    assert not _imports("streamops") & {"cloudstream", "edgestream"}
    assert "edgestream" not in _imports("cloudstream")
    assert "cloudstream" not in _imports("edgestream")
    assert not _imports("streamcerts") & {"cloudstream", "edgestream", "asyncio"}


def test_generic_top_level_names_resolve_inside_the_repo() -> None:
    """Our packages, not another distribution's (proto-plus installs a top-level proto; a PyPI project is named certs)."""
    import streamcerts
    import streamproto

    assert Path(streamproto.__file__).resolve().parent == ROOT / "streamproto"
    assert Path(streamcerts.__file__).resolve().parent == ROOT / "streamcerts"
