"""``streamcerts``: make, inspect and verify the certificates cloudstream and edgestream need.

On site: ``init`` (new CAs) or ``import`` (an existing /etc/kubeedge), ``issue``, ``inspect``,
``verify``. For labs: ``lab`` (everything at once), and the low-level ``ca``/``server``/``client``/``show``.

Exit status: 0 on success, 1 when ``verify``/``import`` found an error, 2 on a usage error or a
:class:`CertificateError` (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from streamops.cli import ENV_EPILOG, Parser
from streamproto.tunnel.errors import ConfigError

from . import inspect as inspect_mod
from .ca import create_ca
from .checks import Finding, exit_code, render_finding
from .errors import CertificateError
from .files import load_cert, load_certs, load_key, write_pem
from .issue import issue_client_cert, issue_server_cert
from .kubeedge_layout import KUBE_PKI, import_report, next_steps
from .lab import DEFAULT_SANS, init_lab, parse_node
from .site import KINDS, init_cas, issue
from .verify import KUBEEDGE_ROOT, run, target

DEFAULT_DIR = KUBEEDGE_ROOT


def _show(path: Path) -> str:
    cert = load_cert(path)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(getattr(n, "value", n)) for n in sans]
    except x509.ExtensionNotFound:
        names = []
    return (
        f"subject: {cert.subject.rfc4514_string()}\nissuer:  {cert.issuer.rfc4514_string()}\n"
        f"sans:    {', '.join(names) or '-'}\nexpires: {cert.not_valid_after_utc.isoformat()}"
    )


def _site_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def common(p: argparse.ArgumentParser, days: int) -> None:
        p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"KubeEdge's layout under it (default {DEFAULT_DIR})")
        p.add_argument("--key-type", default="ecdsa", metavar="TYPE",
                       help="ecdsa (P-256) or rsa[:2048|3072|4096] (default ecdsa)")
        p.add_argument("--days", type=float, default=days, help=f"validity in days (default {days})")
        p.add_argument("--force", action="store_true", help="replace existing files (default: refuse)")

    p = sub.add_parser("init", help="new tunnel CA (ca/rootCA.*) and stream CA (ca/streamCA.*) in KubeEdge's layout")
    common(p, 3650)
    p.add_argument("--only", choices=["tunnel", "stream"], help="make only one of the two CAs (default: both)")
    p = sub.add_parser("import", help="report what an existing KubeEdge layout holds and lacks (writes nothing)")
    p.add_argument("--from", dest="src", type=Path, default=DEFAULT_DIR, help=f"default {DEFAULT_DIR}")
    p.add_argument("--side", choices=["cloud", "edge"], default="cloud", help="a cloudcore or an edge node's layout (cloud)")
    p.add_argument("--kube-pki", type=Path, default=KUBE_PKI, help=f"the cluster's PKI directory (default {KUBE_PKI})")
    p.add_argument("--node", help="edge side: the node name (default: the hostname)")
    p.add_argument("--node-ip", help="edge side: the IP the node announces (default: none checked)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    p = sub.add_parser("issue", help="one certificate: server (10004), stream (10003), edge NODE, apiserver-client")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("node", nargs="?", help="edge: the node name (the certificate's CN)")
    common(p, 365)
    p.add_argument("--san", action="append", default=[], metavar="ADDR",
                   help="server/stream: an address clients dial (repeat; default: none; localhost and 127.0.0.1 are always in)")
    p.add_argument("--config", type=Path, help="server/stream: take the SANs from cloudcore.yaml's cloudHub.advertiseAddress (default: none)")
    p.add_argument("--ip", action="append", default=[], help="edge: the node's internal IP as an IP SAN (repeat; default: none)")
    p.add_argument("--cn", help="override the common name (default: per kind; edge: the node name)")
    p.add_argument("--ca-cert", type=Path, help="the signing CA (default: the kind's CA under --dir)")
    p.add_argument("--ca-key", type=Path, help="its key (default: the kind's CA key under --dir; e.g. /etc/kubernetes/pki/ca.key for stream)")
    p.add_argument("--out-cert", type=Path, help="where to write (default: the kind's path under --dir)")
    p.add_argument("--out-key", type=Path, help="where to write the key (default: beside --out-cert, .key)")
    p = sub.add_parser("inspect", help="subject, SANs, issuer, serial, validity, key, fingerprint, which CA")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"where to look for CAs (ca/*.crt; default {DEFAULT_DIR})")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text (default: text)")
    p = sub.add_parser("verify", help="check every certificate a config will load; exit 1 on an error")
    p.add_argument("--config", type=Path, help="cloudcore.yaml or edgecore.yaml: paths, node name/IP, advertised addresses "
                   "(default: none, KubeEdge's default paths under /etc/kubeedge)")
    p.add_argument("--dir", type=Path, help="a directory in KubeEdge's layout, as cloudstream/edgestream --pki-dir (default: none)")
    p.add_argument("--side", choices=["cloud", "edge"], help="default: from the config; with only --dir, both")
    p.add_argument("--node", help="edge: the node name (default: edgecore.yaml's, else the hostname)")
    p.add_argument("--node-ip", help="edge: the IP it announces (default: edgecore.yaml's modules.edged.nodeIP)")
    p.add_argument("--advertise", action="append", default=[], metavar="ADDR",
                   help="cloud: an address edges dial (default: cloudcore.yaml's cloudHub.advertiseAddress)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text (default: text)")


def _lowlevel_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("lab", help="a whole lab PKI: CAs, cloud certs, one cert per edge node, API-server client")
    p.add_argument("--dir", required=True, type=Path, help="where to write it, KubeEdge's layout under it (required)")
    p.add_argument(
        "--node", action="append", default=[], required=True, metavar="NAME[=IP[,IP]]",
        help="an edge node; with IPs its certificate carries them as IP SANs (its SessionInternalIP must be one; "
        "repeat; required, no default)",
    )
    p.add_argument("--san", action="append", default=[],
                   help=f"a SAN of the cloud's server certificates (repeat; default {', '.join(DEFAULT_SANS)})")
    p = sub.add_parser("ca", help="a new CA")
    p.add_argument("--cn", default="KubeEdge", help="the CA's common name")
    p.add_argument("--out-cert", required=True, type=Path, help="the certificate file to write (required)")
    p.add_argument("--out-key", required=True, type=Path, help="the private key file to write (required)")
    for kind in ("server", "client"):
        p = sub.add_parser(kind, help=f"a {kind} certificate signed by a CA")
        p.add_argument("--ca-cert", required=True, type=Path, help="the signing CA's certificate (required)")
        p.add_argument("--ca-key", required=True, type=Path, help="the signing CA's private key (required)")
        p.add_argument("--cn", required=True, help="the certificate's common name (required)")
        p.add_argument("--out-cert", required=True, type=Path, help="the certificate file to write (required)")
        p.add_argument("--out-key", required=True, type=Path, help="the private key file to write (required)")
        if kind == "server":
            p.add_argument("--san", action="append", default=[], help="a DNS name or IP SAN (repeat; default: none)")
        else:
            p.add_argument("--org", action="append", default=[],
                           help="an organization, i.e. a Kubernetes group (repeat; default: none)")
            p.add_argument(
                "--ip", action="append", default=[],
                help="an edge node's internal IP, as an IP SAN (repeat; cloudstream then refuses other IPs; "
                "default: none)",
            )
    p = sub.add_parser("show", help="print a certificate's subject, issuer, SANs and expiry")
    p.add_argument("file", type=Path)


def _inspect(ns: argparse.Namespace) -> int:
    cas = inspect_mod.ca_candidates(ns.dir)
    out = []
    for path in ns.files:
        try:
            bundle = load_certs(path)
        except CertificateError:
            key = inspect_mod.describe_key(path)
            if key is None:
                raise
            out.append(key)
            continue
        for i, cert in enumerate(bundle):
            out.append({"file": str(path), "index": i, **inspect_mod.describe(cert, cas)})
    print(json.dumps(out, indent=2) if ns.json else "\n".join(inspect_mod.render(i) for i in out))
    return 0


def _findings(found: list[Finding], as_json: bool, tail: Sequence[str] = ()) -> int:
    code = exit_code(found)
    if as_json:
        print(json.dumps({"ok": code == 0, "findings": [f.as_dict() for f in found]}, indent=2))
    else:
        for f in found:
            print(render_finding(f))
        for line in tail:
            print(line)
    return code


def _issue(ns: argparse.Namespace) -> int:
    sans = list(ns.san)
    if ns.config is not None:
        from streamops.kubeedge_config import cloudhub_advertised, load_yaml

        sans += cloudhub_advertised(load_yaml(ns.config))
    if ns.kind == "edge" and not ns.node:
        raise CertificateError("issue edge: name the node (streamcerts issue edge NODE --ip IP)")
    if ns.kind != "edge" and ns.node:
        raise CertificateError(f"issue {ns.kind} takes no node name ({ns.node!r})")
    done = issue(ns.kind, ns.dir, node=ns.node, sans=sans, ips=ns.ip, key_type=ns.key_type, days=ns.days,
                 force=ns.force, ca_cert=ns.ca_cert, ca_key=ns.ca_key, out_cert=ns.out_cert, out_key=ns.out_key,
                 common_name=ns.cn)
    print(f"{done.label:22} {done.cert}  (key {done.key})" + (f"; {done.note}" if done.note else ""))
    return 0


def _run(ns: argparse.Namespace) -> int:
    if ns.cmd == "init":
        for done in init_cas(ns.dir, ns.key_type, ns.days, ns.force, ns.only):
            print(f"{done.label:22} {done.cert}  (key {done.key})")
    elif ns.cmd == "import":
        found = import_report(ns.src, ns.side, ns.kube_pki, ns.node, ns.node_ip or "")
        return _findings(found, ns.json, ["next: " + s for s in next_steps(ns.src, ns.side)])
    elif ns.cmd == "issue":
        return _issue(ns)
    elif ns.cmd == "inspect":
        return _inspect(ns)
    elif ns.cmd == "verify":
        t = target(ns.config, ns.dir, ns.side, ns.node, ns.node_ip, tuple(ns.advertise))
        return _findings(run(t), ns.json)
    elif ns.cmd == "lab":
        parsed = [parse_node(n) for n in ns.node]
        nodes = [n for n, _ in parsed]
        layout = init_lab(ns.dir, nodes, ns.san or DEFAULT_SANS, {n: list(ips) for n, ips in parsed if ips})
        for label, path in [
            ("tunnel CA", layout.ca_cert), ("tunnel server", layout.server_cert), ("stream CA", layout.stream_ca),
            ("stream server", layout.stream_cert), ("API-server client", layout.apiserver_client_cert),
        ] + [(f"edge {n}", layout.edge_cert(n)) for n in nodes]:
            print(f"{label:18} {path}")
    elif ns.cmd == "ca":
        cert, key = create_ca(ns.cn)
        write_pem(ns.out_cert, cert, key, ns.out_key)
    elif ns.cmd in ("server", "client"):
        ca = load_cert(ns.ca_cert), load_key(ns.ca_key)
        if ns.cmd == "server":
            cert, key = issue_server_cert(*ca, ns.cn, ns.san)
        else:
            cert, key = issue_client_cert(*ca, ns.cn, ns.org, ips=ns.ip)
        write_pem(ns.out_cert, cert, key, ns.out_key)
    else:
        print(_show(ns.file))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="streamcerts", description="PKI for kubeedge-stream (KubeEdge's layout)", epilog=ENV_EPILOG)
    sub = parser.add_subparsers(dest="cmd", required=True)
    _site_arguments(sub)
    _lowlevel_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0): a return code, so main() is callable in-process
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return _run(ns)
    except (CertificateError, ConfigError) as exc:
        print(f"streamcerts: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
