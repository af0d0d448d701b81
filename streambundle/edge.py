"""Edge host files: the project's systemd unit (deploy/systemd/edgestream.service, else a minimal one)
and the install script (a venv from the bundle's wheelhouse, no network)."""

from __future__ import annotations

from pathlib import Path

FALLBACK_UNIT = """[Unit]
Description=kubeedge-stream edgestream: the edge end of the stream tunnel
After=network-online.target containerd.service
Wants=network-online.target

[Service]
EnvironmentFile=-/etc/default/edgestream
ExecStart=/opt/kubeedge-stream/bin/edgestream --config /etc/kubeedge/config/edgecore.yaml
Restart=on-failure
RestartSec=2s
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
"""

INSTALL_SH = r"""#!/bin/sh
# Install edgestream from this bundle, with no network: a venv from ../wheelhouse plus the systemd unit.
#   sudo sh edge/install.sh     # then settings in /etc/default/edgestream (EDGESTREAM_<FLAG>=...) or
#                               # edgecore.yaml, the node's certificates, and systemctl enable --now edgestream
# Environment: PYTHON (python3, >= 3.11, with its venv module), PREFIX (the venv, /opt/kubeedge-stream),
#   UNIT_DIR (/etc/systemd/system; empty: no unit).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BUNDLE=$(dirname "$HERE")
PYTHON=${PYTHON:-python3}
PREFIX=${PREFIX:-/opt/kubeedge-stream}
UNIT_DIR=${UNIT_DIR-/etc/systemd/system}
REQUIREMENT='@REQUIREMENT@'

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "install.sh: $PYTHON is $("$PYTHON" -V 2>&1); kubeedge-stream needs Python 3.11+ (set PYTHON=)" >&2; exit 1; }
"$PYTHON" -m venv "$PREFIX" || {
  echo "install.sh: '$PYTHON -m venv' failed; on Debian/Ubuntu install python3-venv from your local mirror" >&2; exit 1; }
"$PREFIX/bin/python" -m pip install -q --no-index --find-links "$BUNDLE/wheelhouse" "$REQUIREMENT"
"$PREFIX/bin/edgestream" --help >/dev/null
if [ -n "$UNIT_DIR" ]; then
  sed "s#/opt/kubeedge-stream/bin/#$PREFIX/bin/#g" "$HERE/edgestream.service" > "$UNIT_DIR/edgestream.service"
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
fi
echo "edgestream installed in $PREFIX ($REQUIREMENT); next: settings, the node's certificates, systemctl enable --now edgestream"
"""


def unit(project_dir: Path) -> str:
    ours = project_dir / "deploy" / "systemd" / "edgestream.service"
    return ours.read_text() if ours.is_file() else FALLBACK_UNIT


def install_sh(requirement: str) -> str:
    return INSTALL_SH.replace("@REQUIREMENT@", requirement)
