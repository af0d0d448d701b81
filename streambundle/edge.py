"""Edge host files: the systemd unit, its environment file and the install script (a venv from the
bundle's wheelhouse, no network)."""

from __future__ import annotations

UNIT = """[Unit]
Description=kubeedge-stream edgestream: kubectl logs/exec/attach/port-forward tunnel to cloudstream
Documentation=https://kubeedge.io
After=network-online.target containerd.service
Wants=network-online.target

[Service]
EnvironmentFile=/etc/kubeedge-stream/edgestream.env
ExecStart=/opt/kubeedge-stream/venv/bin/edgestream $EDGESTREAM_ARGS
Restart=always
RestartSec=5
# root for containerd's CRI socket; /etc stays writable: certificate renewal rewrites the PKI files
NoNewPrivileges=true
ProtectHome=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
"""

ENV = """# edgestream's flags (see `edgestream --help`); certificates: `streamcerts` on the cloud side, copied here.
EDGESTREAM_ARGS=--pki-dir /etc/kubeedge/pki --node-name NODE --server CLOUDSTREAM_HOST:10004 --backend cri --cri-endpoint unix:///run/containerd/containerd.sock
"""

INSTALL_SH = r"""#!/bin/sh
# Install edgestream from this bundle, with no network: a venv from ../wheelhouse plus the systemd unit.
#   sudo sh edge/install.sh            # then edit /etc/kubeedge-stream/edgestream.env and
#                                      # systemctl enable --now edgestream
# Environment: PYTHON (python3, >= 3.11, with its venv module), PREFIX (/opt/kubeedge-stream),
#   ETC (/etc/kubeedge-stream), UNIT_DIR (/etc/systemd/system; empty: no unit).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BUNDLE=$(dirname "$HERE")
PYTHON=${PYTHON:-python3}
PREFIX=${PREFIX:-/opt/kubeedge-stream}
ETC=${ETC:-/etc/kubeedge-stream}
UNIT_DIR=${UNIT_DIR-/etc/systemd/system}
PROJECT=@PROJECT@
VERSION=@VERSION@

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "install.sh: $PYTHON is $("$PYTHON" -V 2>&1); kubeedge-stream needs Python 3.11+ (set PYTHON=)" >&2; exit 1; }
"$PYTHON" -m venv "$PREFIX/venv" || {
  echo "install.sh: '$PYTHON -m venv' failed; on Debian/Ubuntu install python3-venv from your local mirror" >&2; exit 1; }
"$PREFIX/venv/bin/python" -m pip install -q --no-index --find-links "$BUNDLE/wheelhouse" "$PROJECT==$VERSION"
"$PREFIX/venv/bin/edgestream" --help >/dev/null
mkdir -p "$ETC"
[ -f "$ETC/edgestream.env" ] || install -m 0644 "$HERE/edgestream.env" "$ETC/edgestream.env"
if [ -n "$UNIT_DIR" ]; then
  sed "s#/opt/kubeedge-stream/venv#$PREFIX/venv#; s#/etc/kubeedge-stream/#$ETC/#" "$HERE/edgestream.service" \
    > "$UNIT_DIR/edgestream.service"
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
fi
echo "edgestream $VERSION installed in $PREFIX/venv; next: edit $ETC/edgestream.env, put the node's certificates in place, systemctl enable --now edgestream"
"""


def install_sh(project: str, version: str) -> str:
    return INSTALL_SH.replace("@PROJECT@", project).replace("@VERSION@", version)
