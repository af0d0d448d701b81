"""``streamcerts verify``: the whole set of certificates a config will load, checked before the
process starts.

Which files: KubeEdge's defaults (/etc/kubeedge) < ``cloudcore.yaml``/``edgecore.yaml`` (read
by :mod:`streamops.kubeedge_config`, as cloudstream and edgestream read them) < ``--dir`` (as their
``--pki-dir``). certs never imports cloudstream/edgestream; a unit test pins these defaults to
``CloudConfig``'s and ``EdgeConfig``'s.
"""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamops.kubeedge_config import cloudhub_advertised, cloudstream_settings, edgestream_settings, load_yaml
from streamproto.tunnel.errors import ConfigError

from .checks import Expect, Finding, check
from .errors import CertificateError
from .files import Layout

__all__ = ["KUBEEDGE_ROOT", "Target", "cloud_expectations", "dir_expectations", "edge_expectations", "run", "target"]

KUBEEDGE_ROOT = Path("/etc/kubeedge")


@dataclass(frozen=True, slots=True)
class Target:
    """What ``verify`` was asked about, resolved: the side, the files' directory, the config's data."""

    side: str
    """``cloud``, ``edge`` or ``all`` (a whole ``--dir``: the cloud's files and every edge/NODE)."""
    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    pki_dir: Path | None = None
    node: str | None = None
    node_ip: str = ""
    advertise: tuple[str, ...] = ()


def _cmd(*words: str | Path) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def _out(path: Path, default: Path, flag: str) -> list[str | Path]:
    return [] if path == default else [flag, path]


def target(
    config: Path | None, pki_dir: Path | None, side: str | None = None, node: str | None = None,
    node_ip: str | None = None, advertise: tuple[str, ...] = (),
) -> Target:
    data: dict[str, Any] = load_yaml(config) if config is not None else {}
    raw = data.get("modules")
    modules: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if side is None:
        if "cloudStream" in modules or "cloudHub" in modules:
            side = "cloud"
        elif "edgeStream" in modules or "edgeHub" in modules:
            side = "edge"
        elif config is not None:
            raise ConfigError(f"{config}: neither modules.cloudStream nor modules.edgeStream; pass --side")
        else:
            side = "all" if pki_dir is not None else "cloud"
    root = Path(pki_dir) if pki_dir is not None else KUBEEDGE_ROOT
    return Target(side, root, data, pki_dir, node, node_ip or "", tuple(advertise))


def cloud_expectations(t: Target) -> list[Expect]:
    """cloudstream's four files (10004's CA/cert/key, 10003's CA/cert/key), as it resolves them."""
    d = Layout(KUBEEDGE_ROOT)
    files: dict[str, Path] = {
        "tls_tunnel_ca_file": d.ca_cert, "tls_tunnel_cert_file": d.server_cert,
        "tls_tunnel_private_key_file": d.server_key, "tls_stream_ca_file": d.stream_ca,
        "tls_stream_cert_file": d.stream_cert, "tls_stream_private_key_file": d.stream_key,
    }
    if t.config:
        files.update({k: v for k, v in cloudstream_settings(t.config)[1].items() if k in files})
    if t.pki_dir is not None:  # as cloudstream --pki-dir: overrides the file
        p = Layout(t.pki_dir)
        files.update(
            tls_tunnel_ca_file=p.ca_cert, tls_tunnel_cert_file=p.server_cert, tls_tunnel_private_key_file=p.server_key,
            tls_stream_ca_file=p.stream_ca, tls_stream_cert_file=p.stream_cert,
            tls_stream_private_key_file=p.stream_key,
        )
    advertised = t.advertise or tuple(cloudhub_advertised(t.config))
    lay = Layout(t.root)
    san_flags: list[str | Path] = [w for a in advertised for w in ("--san", a)]
    tunnel_ca, stream_ca = files["tls_tunnel_ca_file"], files["tls_stream_ca_file"]
    server = [*_out(files["tls_tunnel_cert_file"], lay.server_cert, "--out-cert"),
              *_out(files["tls_tunnel_private_key_file"], lay.server_key, "--out-key")]
    stream = [*_out(files["tls_stream_cert_file"], lay.stream_cert, "--out-cert"),
              *_out(files["tls_stream_private_key_file"], lay.stream_key, "--out-key")]
    return [
        Expect("tunnel CA", tunnel_ca, _cmd("streamcerts", "init", "--dir", t.root, "--only", "tunnel")
               + " (then reissue the server and every edge certificate)"),
        Expect("tunnel server (10004)", files["tls_tunnel_cert_file"],
               _cmd("streamcerts", "issue", "server", "--dir", t.root, *san_flags, *server, "--force"),
               key=files["tls_tunnel_private_key_file"], ca=tunnel_ca, names=advertised),
        Expect("stream CA", stream_ca,
               f"copy the cluster CA there (cp /etc/kubernetes/pki/ca.crt {shlex.quote(str(stream_ca))}, as KubeEdge's "
               f"certgen.sh does), or {_cmd('streamcerts', 'init', '--dir', t.root, '--only', 'stream')}"),
        Expect("stream server (10003)", files["tls_stream_cert_file"],
               _cmd("streamcerts", "issue", "stream", "--dir", t.root, *san_flags, *stream, "--force"),
               key=files["tls_stream_private_key_file"], ca=stream_ca),
    ]


def edge_expectations(t: Target) -> list[Expect]:
    """edgestream's three files, its node name and announced IP, and (when the tunnel server's
    certificate is at hand, as in a whole ``--dir``) the address it dials."""
    settings = edgestream_settings(t.config)[1] if t.config else {}
    node = t.node or str(settings.get("node_name") or socket.gethostname())
    node_ip = t.node_ip or str(settings.get("node_ip") or "")
    d = Layout(KUBEEDGE_ROOT)
    ca, cert, key = d.ca_cert, d.server_cert, d.server_key
    ca = settings.get("tls_tunnel_ca_file", ca)
    cert = settings.get("tls_tunnel_cert_file", cert)
    key = settings.get("tls_tunnel_private_key_file", key)
    if t.pki_dir is not None:  # as edgestream --pki-dir
        p = Layout(t.pki_dir)
        ca, cert, key = p.ca_cert, p.edge_cert(node), p.edge_key(node)
    lay = Layout(t.root)
    ip_flags: list[str | Path] = ["--ip", node_ip] if node_ip else []
    fix = _cmd("streamcerts", "issue", "edge", node, "--dir", t.root, *ip_flags,
               *_out(cert, lay.edge_cert(node), "--out-cert"), *_out(key, lay.edge_key(node), "--out-key"), "--force")
    found = [
        Expect("tunnel CA", ca, f"copy the cloud's tunnel CA ({Layout(t.root).ca_cert}) to {ca}"),
        Expect(f"edge {node}", cert, fix + " (where the tunnel CA key is; copy the pair to the node)",
               key=key, ca=ca, common_name=node, node_ip=node_ip),
    ]
    server = settings.get("server")
    server_cert = Layout(t.root).server_cert
    if server and t.pki_dir is not None and server_cert.exists():
        host = str(server).rpartition(":")[0].strip("[]")
        found.append(Expect("tunnel server (as this edge dials it)", server_cert,
                            _cmd("streamcerts", "issue", "server", "--dir", t.root, "--san", host, "--force"),
                            key=None, ca=ca, names=(host,)))
    return found


def dir_expectations(t: Target) -> list[Expect]:
    """A whole directory: the cloud's files, the API server's client pair, every edge/NODE."""
    lay = Layout(t.root)
    out = cloud_expectations(t)
    out.append(Expect("API-server client", lay.apiserver_client_cert,
                      _cmd("streamcerts", "issue", "apiserver-client", "--dir", t.root, "--force"),
                      key=lay.apiserver_client_key, ca=lay.stream_ca, api_client=True, optional=True))
    edges = sorted(p.parent.name for p in (t.root / "edge").glob("*/server.crt"))
    for node in edges:
        ip = t.node_ip if node == t.node else ""
        out += edge_expectations(Target("edge", t.root, {}, t.pki_dir, node, ip))[1:]
    return out


def run(t: Target) -> list[Finding]:
    if t.side == "cloud":
        expectations = cloud_expectations(t)
    elif t.side == "edge":
        expectations = edge_expectations(t)
    elif t.side == "all":
        expectations = dir_expectations(t)
    else:
        raise CertificateError(f"--side {t.side!r}: use cloud or edge")
    findings: list[Finding] = []
    seen: set[tuple[str, Path]] = set()
    for e in expectations:
        if (e.role, e.cert) in seen:
            continue
        seen.add((e.role, e.cert))
        findings += check(e)
    return findings
