#!/usr/bin/env bash
# Rename the import packages proto -> streamproto and certs -> streamcerts (issue 21: proto-plus
# installs a top-level `proto`, and `certs` is as generic). The CLI `streamcerts` keeps its name.
#
#   bash scripts/rename_import_packages.sh && git commit -qm "..."      (at the repo root, clean tree)
#
# Mechanical and idempotent (a second run changes nothing). What it rewrites, in every tracked
# text file except this one and LICENSE (a line holding the marker "rename: keep" is left alone):
#   1. import statements, also inside strings:   from proto.x import / import certs
#   2. dotted module names:   proto.tunnel, -m proto._gen, "certs.__main__:main", DeprecationWarning:proto.*
#   3. package paths:   proto/... anywhere; certs/ only as the package (certs/lab.py, `certs/`), never
#      /etc/kubeedge/certs/... or KubeEdge's layout "certs/server.crt"
#   4. quoted bare names:   "proto", 'certs', "proto*" (pyproject's package list, mypy's files, ROOT / "proto"),
#      but not "certs" joined onto a path other than *ROOT (pki / "certs" is KubeEdge's directory)
# It leaves prose words ("edge certs"), proto-plus, .proto files, protobuf, textproto, and the
# tests/unit/proto, tests/unit/certs test directories. At the end it prints what rule 4 changed
# and every bare word left, for a human to look over.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "rename_import_packages: commit or stash your changes first" >&2
  exit 1
fi
for name in proto certs; do
  if [ -d "$name" ] && [ ! -e "stream$name" ]; then
    git mv "$name" "stream$name"
  fi
done
python3 - <<'PY'
import re
import subprocess
from pathlib import Path

SELF = {"scripts/rename_import_packages.sh", "LICENSE"}
KEEP = "rename: keep"
NAMES = "proto|certs"
certs_entries = "|".join(sorted((re.escape(p.name) for p in Path("streamcerts").iterdir()), key=len, reverse=True))
RULES = [
    (re.compile(rf"(?<![\w.])(from|import)(\s+)({NAMES})(?=[\s.,;)]|$)"), r"\1\2stream\3"),
    (re.compile(rf"(?<![\w./-])({NAMES})\.(?=[A-Za-z_*])"), r"stream\1."),
    (re.compile(r"(?<![\w./-])proto/"), "streamproto/"),
    (re.compile(rf"(?<![\w./-])certs/(?=(?:{certs_entries})(?![\w.])|[`'\"\s),:]|$)"), "streamcerts/"),
]
QUOTED = re.compile(rf"([\"'])({NAMES})(\*?)\1")



def _quoted(m: re.Match[str], line: str) -> str:
    """"certs" joined onto a path (pki / "certs") is KubeEdge's directory, unless onto *ROOT."""
    before = line[: m.start()]
    if m.group(2) == "certs" and re.search(r"/\s*$", before) and not re.search(r"ROOT\s*/\s*$", before):
        return m.group(0)
    return f"{m.group(1)}stream{m.group(2)}{m.group(3)}{m.group(1)}"


files = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout.decode().split("\0")
quoted_changes = []
for name in filter(None, files):
    path = Path(name)
    if name in SELF or not path.is_file() or path.is_symlink():
        continue
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        continue  # binary (images)
    lines = text.splitlines(keepends=True)
    out = []
    for number, line in enumerate(lines, 1):
        if KEEP not in line:
            for pattern, replacement in RULES:
                line = pattern.sub(replacement, line)
            new = QUOTED.sub(lambda m, line=line: _quoted(m, line), line)
            if new != line:
                quoted_changes.append(f"{name}:{number}: {new.strip()}")
            line = new
        out.append(line)
    new_text = "".join(out)
    if new_text != text:
        path.write_text(new_text)
        print(f"rewrote {name}")

print("\n-- quoted bare names renamed (rule 4): check that each one means the package --")
print("\n".join(quoted_changes) or "(none)")
PY
echo
echo "-- bare words proto/certs left (prose and variables are fine; a package reference is not) --"
git grep -nP '(?<![\w./-])(proto|certs)(?![\w./-])' -- . ':!LICENSE' ':!scripts/rename_import_packages.sh' || echo "(none)"
git add -u
