"""An existing KubeEdge installation's certificates, as keadm/cloudcore and certgen.sh leave them.

The layout under /etc/kubeedge (cloudcore's and edgecore's defaults; ``build/tools/certgen.sh``):

- ``ca/rootCA.crt`` (+ ``ca/rootCA.key``): the tunnel CA. cloudcore >= 1.3 keeps its key in the
  Secret ``kubeedge/casecret`` (``cadata``/``cakeydata``, DER) and may not write the key file.
- ``certs/server.crt|key``: cloudcore's server certificate (10000/10004); on an edge node the
  node's own certificate under the same names.
- ``ca/streamCA.crt``: a copy of the cluster CA (``/etc/kubernetes/pki/ca.crt``); its key stays
  in ``/etc/kubernetes/pki/ca.key``. ``certs/stream.crt|key``: 10003's certificate, signed by it.
- the API server's kubelet client: ``/etc/kubernetes/pki/apiserver-kubelet-client.crt|key`` (kubeadm).

``import_report`` says what is there and usable, and what is missing, without writing anything:
cloudstream and edgestream then run on those very files (``--pki-dir``/``--config``).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .checks import Expect, Finding, check, key_matches
from .errors import CertificateError
from .files import Layout, load_cert
from .verify import Target, cloud_expectations, edge_expectations

__all__ = ["KUBE_PKI", "import_report", "next_steps"]

KUBE_PKI = Path("/etc/kubernetes/pki")

_CASECRET = (
    "kubectl -n kubeedge get secret casecret -o jsonpath='{{.data.{field}}}' | base64 -d | {conv} -out {path}"
)


def _key_present(role: str, path: Path, ca: Path, fix: str, purpose: str) -> Finding:
    """A CA's key: optional (only ``issue`` needs it), but when present it must be the CA's."""
    if not path.exists():
        return Finding("warning", role, str(path), f"missing: needed only to {purpose}", fix)
    try:
        cert = load_cert(ca)
    except CertificateError:
        return Finding("warning", role, str(path), f"present, but its CA {ca} is unreadable", fix)
    mismatch = key_matches(Expect(role, ca, fix, key=path), cert)
    return mismatch[0] if mismatch else Finding("ok", role, str(path), f"present, belongs to {ca}: lets you {purpose}")


def import_report(src: Path, side: str = "cloud", kube_pki: Path = KUBE_PKI, node: str | None = None,
                  node_ip: str = "") -> list[Finding]:
    """Every file of a KubeEdge layout under ``src``: found and usable, or missing and how to get it."""
    src = Path(src)
    lay = Layout(src)
    if side == "edge":
        # An edge node: ca/rootCA.crt + certs/server.crt|key, as edgecore's edgeStream reads them.
        t = Target("edge", src, {"modules": {"edgeStream": {
            "tlsTunnelCAFile": str(lay.ca_cert), "tlsTunnelCertFile": str(lay.server_cert),
            "tlsTunnelPrivateKeyFile": str(lay.server_key)}}}, None, node, node_ip)
        return [f for e in edge_expectations(t) for f in check(e)]
    found = [f for e in cloud_expectations(Target("cloud", src, {}, src)) for f in check(e)]
    found.append(_key_present(
        "tunnel CA key", lay.ca_key, lay.ca_cert,
        _CASECRET.format(field="cakeydata", conv="openssl pkey -inform DER", path=shlex.quote(str(lay.ca_key)))
        + " (cloudcore keeps it in that Secret)",
        "issue edge and server certificates (streamcerts issue server|edge)",
    ))
    stream_key = lay.stream_ca_key if lay.stream_ca_key.exists() else kube_pki / "ca.key"
    found.append(_key_present(
        "stream CA key", stream_key, lay.stream_ca,
        f"on the control-plane host it is {kube_pki / 'ca.key'}: pass --ca-key to streamcerts issue stream",
        f"issue the 10003 certificate (streamcerts issue stream --ca-key {stream_key})",
    ))
    client = lay.apiserver_client_cert if lay.apiserver_client_cert.exists() else kube_pki / "apiserver-kubelet-client.crt"
    client_key = client.with_suffix(".key")
    found += check(Expect(
        "API-server client", client,
        f"the API server's --kubelet-client-certificate must be signed by {lay.stream_ca}; "
        + shlex.join(["streamcerts", "issue", "apiserver-client", "--dir", str(src)]),
        key=client_key if client_key.exists() else None, ca=lay.stream_ca, api_client=True, optional=True,
    ))
    return found


def next_steps(src: Path, side: str = "cloud") -> list[str]:
    """How to run on these files (the layout is KubeEdge's, so ``--pki-dir`` or the config finds them)."""
    q = shlex.quote(str(src))
    if side == "edge":
        return [
            "edgestream --config /etc/kubeedge/config/edgecore.yaml   # reads edgeStream's tlsTunnel* paths",
            f"edgestream --tls-tunnel-ca-file {q}/ca/rootCA.crt --tls-tunnel-cert-file {q}/certs/server.crt "
            f"--tls-tunnel-private-key-file {q}/certs/server.key --node-name NODE --server CLOUD:10004",
        ]
    return [
        f"cloudstream --pki-dir {q}   # or: cloudstream --config /etc/kubeedge/config/cloudcore.yaml",
        f"streamcerts verify --dir {q} --side cloud   # again before each start",
    ]
