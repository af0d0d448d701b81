"""``cloudstream egress-config``: the kube-apiserver EgressSelectorConfiguration for our front.

Prints YAML (stdout, so it can go straight into the file) whose comments carry the
kube-apiserver flag and the K3S flags. K3S writes its own file (egress ``cluster`` ->
HTTPConnect to its supervisor port, 6443) and sets ``--egress-selector-config-file`` to it
unless ``--egress-selector-mode=disabled``; its ``--kube-apiserver-arg`` values override the
defaults it sets, so ``disabled`` plus our file hands the API server's kubelet traffic to
cloudstream (K3S's agent tunnel no longer carries it; ``--egress-direct`` serves the rest).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from cryptography import x509

from streamops.cli import ENV_EPILOG, Parser

__all__ = ["main", "render"]

DEFAULT_FILE = "/etc/kubernetes/egress-selector-configuration.yaml"


def render(*, url: str | None, ca: str | None, cert: str | None, key: str | None, uds: str | None,
           file: str = DEFAULT_FILE) -> str:
    """The YAML document, with the flags that use it as comments on top."""
    if (url is None) == (uds is None):
        raise ValueError("give either --url (TCP, mutual TLS) or --uds (unix socket)")
    if uds is not None:
        transport: dict[str, object] = {"uds": {"udsName": uds}}
    else:
        assert url is not None
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or parts.port is None or parts.path not in ("", "/"):
            raise ValueError(f"--url {url!r}: expected https://HOST:PORT (the front serves mutual TLS only)")
        if not cert or not key:
            raise ValueError("--url needs --cert and --key: the API server's client certificate for the front "
                             "(kube-apiserver requires clientCert and clientKey with an https URL)")
        tls = {"caBundle": ca, "clientCert": cert, "clientKey": key} if ca else {"clientCert": cert, "clientKey": key}
        transport = {"tcp": {"url": url, "tlsConfig": tls}}
    document = {
        "apiVersion": "apiserver.k8s.io/v1beta1",
        "kind": "EgressSelectorConfiguration",
        "egressSelections": [{"name": "cluster", "connection": {"proxyProtocol": "HTTPConnect", "transport": transport}}],
    }
    where = f"unix socket {uds}" if uds else url
    comments = [
        f"kube-apiserver's kubelet traffic (egress selection 'cluster') through cloudstream's egress front at {where}.",
        "",
        f"kube-apiserver: --egress-selector-config-file={file}",
        f"K3S:  k3s server --egress-selector-mode=disabled --kube-apiserver-arg=egress-selector-config-file={file}",
        "      ('disabled' stops K3S pointing the API server at its own CONNECT proxy on the supervisor port; its",
        "      agent tunnel then no longer carries kubelet traffic: let cloudstream dial cloud nodes directly with",
        "      cloudstream --egress-direct <node CIDR>)",
    ]
    if uds is None:
        comments.append("The front's server certificate must name the URL's host (IP or DNS SAN): Go verifies it.")
    head = "".join(f"# {line}".rstrip() + "\n" for line in comments)
    return head + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def _check_server_cert(path: str, url: str) -> str | None:
    """A warning when the front's certificate does not name the URL's host."""
    host = urlsplit(url).hostname or ""
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        return f"cannot read --server-cert {path}: {exc}"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return f"{path} has no subjectAltName: the API server will refuse it for {host}"
    try:
        ok = ipaddress.ip_address(host) in sans.get_values_for_type(x509.IPAddress)
    except ValueError:
        ok = host.lower() in (n.lower() for n in sans.get_values_for_type(x509.DNSName))
    return None if ok else f"{path} does not name {host} among its SANs: the API server will refuse the front"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cloudstream egress-config", epilog=ENV_EPILOG,
        description="print kube-apiserver's EgressSelectorConfiguration for cloudstream's egress front "
        "(and the kube-apiserver/K3S flags, as comments)",
    )
    parser.add_argument("--url", help="the TCP front as the API server reaches it: https://HOST:PORT (--egress-port; no default)")
    parser.add_argument("--ca", help="caBundle: the CA that signed the front's server certificate (default: none, "
                        "the host's roots)")
    parser.add_argument("--cert", help="clientCert: the API server's client certificate for the front (no default)")
    parser.add_argument("--key", help="clientKey: its key (no default)")
    parser.add_argument("--uds", help="the unix-socket front instead (--egress-uds PATH; default: none)")
    parser.add_argument("--file", default=DEFAULT_FILE, help=f"where the file will live, for the flags (default: {DEFAULT_FILE})")
    parser.add_argument("--server-cert", help="check that this front certificate names the URL's host (default: no check)")
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        text = render(url=ns.url, ca=ns.ca, cert=ns.cert, key=ns.key, uds=ns.uds, file=ns.file)
    except ValueError as exc:
        print(f"cloudstream egress-config: {exc}", file=sys.stderr)
        return 2
    if ns.server_cert and ns.url:
        warning = _check_server_cert(ns.server_cert, ns.url)
        if warning:
            print(f"cloudstream egress-config: warning: {warning}", file=sys.stderr)
    sys.stdout.write(text)
    return 0
