"""``streamcerts``: make the certificates cloudstream and edgestream need.

Exit status: 0 on success, 2 on a usage error or a :class:`CertificateError` (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography import x509

from proto.cli import ENV_EPILOG, Parser

from .ca import create_ca
from .errors import CertificateError
from .files import load_cert, load_key, write_pem
from .issue import issue_client_cert, issue_server_cert
from .lab import DEFAULT_SANS, init_lab, parse_node


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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="streamcerts", description="PKI for kubeedge-stream (KubeEdge's layout)", epilog=ENV_EPILOG)
    sub = parser.add_subparsers(dest="cmd", required=True)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0): a return code, so main() is callable in-process
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if ns.cmd == "lab":
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
    except CertificateError as exc:
        print(f"streamcerts: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
