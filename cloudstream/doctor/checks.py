"""``cloudstream doctor``'s checks: KubeEdge's troubleshooting chapter (spec §7-§9) as checks on
this host, each PASS/WARN/FAIL/SKIP with the fix. Every network step is bounded by ``timeout``.

Order: the config file, the two listeners, the address edges dial, the certificates (certs'
own checks), the DNAT rule per node (or the egress front), the tunnels (admin port), and one
request through the whole chain.
"""

from __future__ import annotations

import json
import shlex
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamcerts import client_context
from streamcerts.checks import Expect, Finding, check
from streamcerts.errors import CertificateError
from streamcerts.files import Layout, load_cert
from streamcerts.verify import KUBEEDGE_ROOT, Target, cloud_expectations
from cryptography.hazmat.primitives import serialization
from streamops.doctor.config_file import section
from streamops.doctor.probes import http_get, tcp_connect, tls_handshake, unix_connect
from streamops.doctor.report import FAIL, PASS, SKIP, WARN, Check
from streamops.kubeedge_config import cloudhub_advertised

from ..config import CloudConfig
from . import dnat

__all__ = ["CloudDoctor", "finding_check"]

KUBE_PKI = Path("/etc/kubernetes/pki")


def finding_check(f: Finding) -> Check:
    """A ``streamcerts verify`` finding as a doctor line."""
    status = {"error": FAIL, "warning": WARN, "ok": PASS}[f.level]
    return Check(f"cert {f.role}", status, f"{f.file}: {f.message}", f.fix)


def _dial_host(address: str) -> str:
    """Where to connect to reach a listener bound to ``address`` from this host."""
    if address in ("", "0.0.0.0"):
        return "127.0.0.1"
    if address == "::":
        return "::1"
    return address.strip("[]")


def _local(ip: str) -> bool:
    """Is ``ip`` an address of this host (the no-DNAT wiring)?"""
    try:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


@dataclass(slots=True, kw_only=True)
class CloudDoctor:
    config: CloudConfig
    yaml_path: Path | None = None
    yaml: dict[str, Any] = field(default_factory=dict)
    pki_root: Path = KUBEEDGE_ROOT
    timeout: float = 3.0
    node: str | None = None
    node_ip: str = ""
    pod: str | None = None
    """``NS/POD/CONTAINER``: also ask for one log line through the chain."""
    advertise: tuple[str, ...] = ()
    apiserver_cert: Path | None = None
    apiserver_key: Path | None = None
    kubelet_port: int = 10250
    cloud_flags: str = ""
    """The cloudstream flags doctor was given, for fix lines that restart it."""
    nodes_seen: list[dict[str, Any]] | None = None
    """The admin port's /debug/nodes, once read."""

    # ------------------------------------------------------------------ the run

    async def run(self) -> list[Check]:
        checks = self.config_checks()
        checks += await self.listener_checks()
        checks += await self.advertise_checks()
        checks += self.cert_checks()
        checks += await self.tunnel_checks()   # before DNAT: it learns the nodes and their IPs
        checks += await self.dnat_checks()
        checks += await self.chain_checks()
        return checks

    # ------------------------------------------------------------------ cloudcore.yaml

    def config_checks(self) -> list[Check]:
        if self.yaml_path is None:
            return [Check("config", SKIP, "no cloudcore.yaml given: checking the flags and KubeEdge's defaults",
                          "pass --config /etc/kubeedge/config/cloudcore.yaml when cloudstream runs with it")]
        cs = section(self.yaml, "modules", "cloudStream")
        out: list[Check] = []
        if cs.get("enable") is True:
            out.append(Check("config", PASS, f"modules.cloudStream.enable: true in {self.yaml_path}"))
        else:
            out.append(Check(
                "config", FAIL,
                f"modules.cloudStream.enable is {json.dumps(cs.get('enable'))} in {self.yaml_path} (KubeEdge's "
                "default is false): kubectl logs/exec for edge nodes stay off",
                f"set `modules: cloudStream: enable: true` in {self.yaml_path}",
            ))
        out += self._cloudhub_fallback()
        advertised = cloudhub_advertised(self.yaml)
        if advertised:
            out.append(Check("config cloudHub", PASS, f"modules.cloudHub.advertiseAddress/dnsNames: {', '.join(advertised)}"))
        else:
            out.append(Check(
                "config cloudHub", WARN,
                "modules.cloudHub.advertiseAddress is empty: KubeEdge puts it in the server certificate's SANs, and "
                "the address edges dial (edgeStream.server) must be among them",
                f"set `modules: cloudHub: advertiseAddress: [<this host's IP>]` in {self.yaml_path}",
            ))
        return out

    def _cloudhub_fallback(self) -> list[Check]:
        """cloudcore falls back to cloudHub's CA and certificate when cloudStream's tunnel files are
        missing (spec §7.1); cloudstream does not: name the flags that point it at them."""
        hub = section(self.yaml, "modules", "cloudHub")
        c = self.config
        pairs = [("tlsCAFile", c.tls_tunnel_ca_file, "--tls-tunnel-ca-file"),
                 ("tlsCertFile", c.tls_tunnel_cert_file, "--tls-tunnel-cert-file"),
                 ("tlsPrivateKeyFile", c.tls_tunnel_private_key_file, "--tls-tunnel-private-key-file")]
        flags = [f"{flag} {shlex.quote(str(hub[key]))}" for key, mine, flag in pairs
                 if not mine.exists() and hub.get(key) and Path(str(hub[key])).exists()]
        if not flags:
            return []
        return [Check("config cloudHub tls", WARN,
                      "cloudStream's tunnel files are missing but cloudHub's exist: cloudcore falls back to them, "
                      "cloudstream does not", "run cloudstream (and doctor) with " + " ".join(flags))]

    # ------------------------------------------------------------------ 10003 / 10004

    async def listener_checks(self) -> list[Check]:
        c = self.config
        return [
            await self._listener("port kubelet API", c.stream_address, c.stream_port, c.tls_stream_cert_file, "--stream-port"),
            await self._listener("port tunnel", c.tunnel_address, c.tunnel_port, c.tls_tunnel_cert_file, "--tunnel-port"),
        ]

    async def _listener(self, name: str, address: str, port: int, cert_file: Path, flag: str) -> Check:
        host = _dial_host(address)
        name = f"{name} {port}"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # only to see who answers; the certificates are checked below
        cert, key = self._apiserver_pair()
        if port == self.config.stream_port and cert is not None and key is not None:
            try:  # as the API server comes: no 401 in cloudstream's log for the probe
                ctx.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError):
                pass  # the cert lines below say why
        result = await tls_handshake(host, port, ctx, None, self.timeout, linger=0)
        if result.stage == "tcp":
            return Check(name, FAIL, f"{host}:{port}: {result.detail}",
                         f"start cloudstream ({shlex.join(['cloudstream', *shlex.split(self.cloud_flags)])}), or give "
                         f"doctor the flags it runs with ({flag}, --config)")
        if not result.ok and result.stage == "tls" and result.peer_der is None:
            return Check(name, FAIL, f"{host}:{port} accepts TCP but no TLS handshake ({result.detail}): not cloudstream",
                         f"`ss -ltnp 'sport = :{port}'` names the process that holds the port; stop it or move "
                         f"cloudstream ({flag})")
        try:
            mine = load_cert(cert_file).public_bytes(serialization.Encoding.DER)
        except CertificateError:
            mine = None  # the certificate checks below say what is wrong with the file
        if mine is not None and result.peer_der is not None and result.peer_der != mine:
            return Check(name, FAIL,
                         f"{host}:{port} answers with another certificate than {cert_file}: another process holds the "
                         "port (cloudcore's own cloudStream?), or cloudstream runs with other files than doctor reads",
                         f"`ss -ltnp 'sport = :{port}'` names the process; give doctor cloudstream's flags (--config, --pki-dir)")
        note = " (cloudstream logs this probe as refused: no client certificate)" if port == self.config.tunnel_port else ""
        return Check(name, PASS, f"{host}:{port} listens, TLS with {cert_file}{note}")

    async def advertise_checks(self) -> list[Check]:
        advertised = self.advertise or tuple(cloudhub_advertised(self.yaml))
        port = self.config.tunnel_port
        if not advertised:
            return [Check("reach tunnel", SKIP, "no address edges dial is known",
                          "pass --advertise ADDR (the host of edgeStream.server) or set modules.cloudHub.advertiseAddress")]
        out = []
        for address in advertised:
            why = await tcp_connect(address.strip("[]"), port, self.timeout)
            if why is None:
                out.append(Check(f"reach tunnel {address}", PASS, f"{address}:{port} accepts connections"))
            else:
                out.append(Check(f"reach tunnel {address}", FAIL, f"{address}:{port}: {why}",
                                 f"cloudstream listens on {self.config.tunnel_address}: run it with --tunnel-address "
                                 f"0.0.0.0 (or {address}), and open TCP {port} to the edges in the firewall"))
        return out

    # ------------------------------------------------------------------ certificates (certs' checks)

    def cert_checks(self) -> list[Check]:
        c = self.config
        advertised = self.advertise or tuple(cloudhub_advertised(self.yaml))
        data = {"modules": {"cloudStream": {
            "tlsTunnelCAFile": str(c.tls_tunnel_ca_file), "tlsTunnelCertFile": str(c.tls_tunnel_cert_file),
            "tlsTunnelPrivateKeyFile": str(c.tls_tunnel_private_key_file), "tlsStreamCAFile": str(c.tls_stream_ca_file),
            "tlsStreamCertFile": str(c.tls_stream_cert_file), "tlsStreamPrivateKeyFile": str(c.tls_stream_private_key_file),
        }}}
        target = Target("cloud", self.pki_root, data, None, advertise=advertised)
        expectations = cloud_expectations(target)
        cert, key = self._apiserver_pair()
        if cert is not None:
            expectations.append(Expect(
                "API-server client", cert, shlex.join(["streamcerts", "issue", "apiserver-client", "--dir", str(self.pki_root)]),
                key=key, ca=c.tls_stream_ca_file, api_client=True))
        return [finding_check(f) for e in expectations for f in check(e)]

    def _apiserver_pair(self) -> tuple[Path | None, Path | None]:
        if self.apiserver_cert is not None:
            return self.apiserver_cert, self.apiserver_key or self.apiserver_cert.with_suffix(".key")
        for cert in (Layout(self.pki_root).apiserver_client_cert, KUBE_PKI / "apiserver-kubelet-client.crt"):
            if cert.exists():
                return cert, cert.with_suffix(".key")
        return None, None

    # ------------------------------------------------------------------ tunnels (admin port)

    def _admin(self) -> tuple[str, int] | None:
        admin = getattr(self.config, "admin", None)
        port = getattr(admin, "port", None)
        if not port:
            return None
        return _dial_host(str(getattr(admin, "address", "127.0.0.1"))), int(port)

    async def tunnel_checks(self) -> list[Check]:
        admin = self._admin()
        if admin is None and getattr(getattr(self.config, "admin", None), "port", None) == 0:
            return [Check("tunnels", SKIP, "--admin-port 0: the admin port is a free one, logged at start",
                          "give doctor the port cloudstream logged (`cloudstream admin on http://...`)")]
        if admin is None:
            how = ("run cloudstream with --admin-port 10005 and give doctor the same flag"
                   if hasattr(self.config, "admin") else "this build has no admin port (needs the admin server)")
            return [Check("tunnels", SKIP, "the admin port is off: the connected nodes cannot be listed", how)]
        host, port = admin
        got = await http_get(host, port, "/debug/nodes?limit=1000", self.timeout)
        if got.status != 200:
            return [Check("tunnels", FAIL, f"admin http://{host}:{port}/debug/nodes: {got.error or got.status}",
                          "is cloudstream running with this --admin-port/--admin-address?")]
        try:
            nodes = json.loads(got.body)["nodes"]
        except (ValueError, KeyError, TypeError):
            return [Check("tunnels", FAIL, f"admin http://{host}:{port}/debug/nodes: not the listing", "")]
        self.nodes_seen = nodes
        names = [str(n.get("node")) for n in nodes]
        if self.node is not None:
            if self.node in names:
                entry = nodes[names.index(self.node)]
                return [Check("tunnels", PASS, f"node {self.node} has a tunnel ({entry.get('ip')}, up "
                                               f"{entry.get('tunnel_age_seconds')} s, {entry.get('peer')}); {len(names)} nodes connected")]
            return [Check("tunnels", FAIL,
                          f"node {self.node} has no tunnel; connected: {', '.join(names[:20]) or 'none'}",
                          f"on {self.node}: `edgestream doctor --config /etc/kubeedge/config/edgecore.yaml` "
                          "(edgeStream enabled, server address, certificates)")]
        if not names:
            return [Check("tunnels", WARN, "no edge node is connected",
                          "on each edge: `edgestream doctor --config /etc/kubeedge/config/edgecore.yaml`")]
        return [Check("tunnels", PASS, f"{len(names)} nodes connected: {', '.join(names[:20])}")]

    # ------------------------------------------------------------------ DNAT (or the egress front)

    def _nodes_with_ip(self) -> list[tuple[str, str]]:
        out: dict[str, str] = {}
        for n in self.nodes_seen or []:
            if n.get("ip"):
                out[str(n["node"])] = str(n["ip"])
        if self.node and self.node_ip:
            out[self.node] = self.node_ip
        return sorted(out.items())

    async def dnat_checks(self) -> list[Check]:
        egress = getattr(self.config, "egress", None)
        if egress is not None and getattr(egress, "enabled", False):
            return [await self._egress_check(egress)]
        nodes = self._nodes_with_ip()
        if not nodes:
            return [Check("dnat", SKIP, "no node IP known to compare with the nat table",
                          "pass --node NAME --node-ip IP, or enable the admin port (--admin-port) to list nodes")]
        remote = [(n, ip) for n, ip in nodes if not _local(ip)]
        out = [Check(f"dnat {n}", PASS, f"{ip} is an address of this host: no DNAT needed (the node-IP wiring)")
               for n, ip in nodes if (n, ip) not in remote]
        if not remote:
            return out
        texts, why = await dnat.read_nat(self.timeout)
        if texts is None:
            return out + [Check("dnat", SKIP, f"cannot read the nat table: {why}",
                                "run doctor as root (iptables-save -t nat needs CAP_NET_ADMIN)")]
        parsed = {name: dnat.parse_nat(text) for name, text in texts.items()}
        port = self.config.stream_port
        managed = getattr(self.config, "iptables", None)
        target = managed.rules.to_address if managed is not None else _dial_host(self.config.stream_address)
        kubelet_port = managed.rules.kubelet_port if managed is not None else self.kubelet_port
        for node, ip in remote:
            live, dead = [], []
            for name, (rules, jumps) in parsed.items():
                found = dnat.rules_for(ip, port, rules, jumps)
                live += [(name, r) for r in found[0]]
                dead += [(name, r) for r in found[1]]
            if live:
                name, r = live[0]
                out.append(Check(f"dnat {node}", PASS,
                                 f"{ip}:{r.dport or 'any'} -> {r.to_address}:{r.to_port} (iptables-{name}, chain {r.chain})"))
            elif dead:
                name, r = dead[0]
                out.append(Check(f"dnat {node}", FAIL,
                                 f"a DNAT rule for {ip} sits in chain {r.chain} (iptables-{name}), which OUTPUT/PREROUTING "
                                 "never jump to", f"iptables-{name} -t nat -A OUTPUT -j {r.chain}"))
            elif managed is not None:
                out.append(Check(f"dnat {node}", FAIL,
                                 f"cloudstream manages the nat rules (--manage-iptables) but holds none for {ip}: the node "
                                 "is not connected, its IP is outside --iptables-allow-cidr, or not in its certificate "
                                 "(--iptables-verified-only)",
                                 f"`cloudstream iptables show` lists the rules; connect {node} (edgestream doctor there) "
                                 "or widen --iptables-allow-cidr"))
            else:
                out.append(Check(f"dnat {node}", FAIL,
                                 f"no nat rule sends {ip}:{kubelet_port} to cloudstream's :{port}: the API server "
                                 "dials the node itself and times out (KubeEdge issue #5784)",
                                 f"iptables -t nat -A OUTPUT -d {ip}/32 -p tcp --dport {kubelet_port} -j DNAT "
                                 f"--to-destination {target}:{port} (or run cloudstream with --manage-iptables)"
                                 + ("; with KubeEdge's tunnel-port scheme (--kubeconfig) --dport is this replica's port "
                                    "in the kubeedge/tunnelport ConfigMap, the nodes' kubeletEndpoint.Port"
                                    if getattr(self.config, "kube", None) is not None else "")))
        return out

    async def _egress_check(self, egress: Any) -> Check:
        """The egress-selector front instead of DNAT: is it there to take the API server's CONNECTs?"""
        where: list[str] = []
        if egress.port:
            host = _dial_host(egress.address)
            why = await tcp_connect(host, egress.port, self.timeout)
            if why is not None:
                return Check("egress front", FAIL, f"configured on {host}:{egress.port}, but: {why}",
                             "start cloudstream with its --egress-* flags (and give doctor the same flags)")
            where.append(f"{host}:{egress.port}")
        if egress.uds is not None:
            why = await unix_connect(str(egress.uds), self.timeout)
            if why is not None:
                return Check("egress front", FAIL, f"configured on the socket {egress.uds}, but: {why}",
                             "start cloudstream with its --egress-uds flag (and give doctor the same flags)")
            where.append(str(egress.uds))
        return Check("egress front", PASS, f"the egress-selector front listens on {' and '.join(where) or 'a free port'}: "
                                           "the API server reaches nodes through it, no DNAT rule needed (its "
                                           "--egress-selector-config-file: `cloudstream egress-config`)")

    # ------------------------------------------------------------------ the whole chain

    async def chain_checks(self) -> list[Check]:
        if self.node is None:
            return [Check("chain", SKIP, "no node named for a request through the whole chain",
                          "pass --node NAME (and --pod NS/POD/CONTAINER for a log line)")]
        cert, key = self._apiserver_pair()
        if cert is None or key is None or not cert.exists() or not key.exists():
            return [Check("chain", SKIP, "no API-server kubelet-client certificate to call 10003 with",
                          "pass --apiserver-cert/--apiserver-key (kubeadm: /etc/kubernetes/pki/apiserver-kubelet-client.crt)")]
        try:
            ctx = client_context(self.config.tls_stream_ca_file, cert, key)
        except CertificateError as exc:
            return [Check("chain", FAIL, str(exc), "see the cert lines above")]
        ctx.check_hostname = False  # the API server does not check kubelet names either (no --kubelet-certificate-authority)
        paths = [("healthz", "/healthz")]
        if self.pod:
            paths.append(("logs", "/containerLogs/" + self.pod.strip("/") + "?tailLines=1"))
        return [await self._request(ctx, label, path) for label, path in paths]

    async def _request(self, ctx: ssl.SSLContext, label: str, path: str) -> Check:
        c, node = self.config, str(self.node)
        host = _dial_host(c.stream_address)
        proxy = "/api/v1/nodes/" + node + "/proxy" + path.split("?", 1)[0]
        began = time.monotonic()
        got = await http_get(host, c.stream_port, path, self.timeout, context=ctx, host_header=node,
                             headers={"X-Forwarded-Uri": proxy})
        ms = (time.monotonic() - began) * 1000
        name = f"chain {label}"
        what = f"GET {path} via {host}:{c.stream_port} -> tunnel -> {node}"
        body = got.body[:300].decode(errors="replace").strip()
        if got.status == 200:
            shown = body.splitlines()[0][:80] if body else ""
            return Check(name, PASS, f"{what}: 200 {shown!r} in {ms:.0f} ms")
        if got.status == 0 and got.tls is not None and got.tls.stage == "client certificate":
            return Check(name, FAIL, f"{what}: cloudstream refused the API-server client certificate "
                                     f"({got.tls.kind}: {got.tls.detail}); it must be signed by {c.tls_stream_ca_file}",
                         shlex.join(["streamcerts", "issue", "apiserver-client", "--dir", str(self.pki_root)])
                         + " (or point --apiserver-cert at the API server's --kubelet-client-certificate)")
        if got.status == 0:
            return Check(name, FAIL, f"{what}: {got.error}", "see the port and cert lines above")
        fixes = {
            401: "the API-server client certificate must be signed by the stream CA: "
                 + shlex.join(["streamcerts", "issue", "apiserver-client", "--dir", str(self.pki_root)]),
            403: "let the client in: cloudstream --allow cn:<its CN>",
            503: f"node {node}'s tunnel is down: on {node} run `edgestream doctor --config /etc/kubeedge/config/edgecore.yaml`",
            504: f"the edge {node} did not answer: on {node} run `edgestream doctor` (backend)",
            500: f"the edge {node} answered an error: on {node} run `edgestream doctor` (backend)",
            404: "the pod or container is not on that node (check --pod)",
        }
        return Check(name, FAIL, f"{what}: {got.status} {' '.join(body.split())[:200]}",
                     fixes.get(got.status, "see cloudstream's log for this request"))
