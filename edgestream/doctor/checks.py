"""``edgestream doctor``'s checks: edgeStream enabled, the tunnel server's address resolvable and
reachable, the mTLS handshake with the configured files (and when it fails, whose certificate is
the problem), the node's certificate (certs' own checks), the local backend, the tunnel (admin
port). Every network step is bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamcerts import client_context
from streamcerts._x509 import cert_ips
from streamcerts.checks import Finding, check
from streamcerts.errors import CertificateError
from streamcerts.files import load_cert
from streamcerts.verify import KUBEEDGE_ROOT, Target, edge_expectations
from streamops.doctor.config_file import section
from streamops.doctor.probes import TlsResult, http_get, resolve, tcp_connect, tls_handshake
from streamops.doctor.report import FAIL, PASS, SKIP, WARN, Check
from streamproto.tunnel.errors import TunnelError

from ..config import EdgeConfig

__all__ = ["EdgeDoctor"]

DEFAULT_SERVER = "127.0.0.1:10004"
EDGECORE_YAML = "/etc/kubeedge/config/edgecore.yaml"


def finding_check(f: Finding) -> Check:
    status = {"error": FAIL, "warning": WARN, "ok": PASS}[f.level]
    return Check(f"cert {f.role}", status, f"{f.file}: {f.message}", f.fix)


@dataclass(slots=True, kw_only=True)
class EdgeDoctor:
    config: EdgeConfig
    yaml_path: Path | None = None
    yaml: dict[str, Any] = field(default_factory=dict)
    pki_root: Path = KUBEEDGE_ROOT
    timeout: float = 3.0

    @property
    def _where(self) -> str:
        return str(self.yaml_path) if self.yaml_path else EDGECORE_YAML

    async def run(self) -> list[Check]:
        checks = self.config_checks()
        reachable = await self.network_checks(checks)
        if reachable:
            checks.append(await self.tls_check())
        checks += self.cert_checks()
        checks.append(await self.backend_check())
        checks.append(await self.tunnel_check())
        return checks

    # ------------------------------------------------------------------ edgecore.yaml

    def config_checks(self) -> list[Check]:
        out: list[Check] = []
        if self.yaml_path is None:
            out.append(Check("config", SKIP, "no edgecore.yaml given: checking the flags and KubeEdge's defaults",
                             f"pass --config {EDGECORE_YAML} when edgestream runs with it"))
        else:
            es = section(self.yaml, "modules", "edgeStream")
            if es.get("enable") is True:
                out.append(Check("config", PASS, f"modules.edgeStream.enable: true in {self.yaml_path}"))
            else:
                out.append(Check(
                    "config", FAIL,
                    f"modules.edgeStream.enable is {json.dumps(es.get('enable'))} in {self.yaml_path}: KubeEdge's "
                    "default is false and keadm join leaves it off (issue #5322), so kubectl logs/exec fail",
                    f"set `modules: edgeStream: enable: true` in {self.yaml_path} (and restart edgecore)",
                ))
        c = self.config
        if c.server == DEFAULT_SERVER and self.yaml_path is not None:
            out.append(Check("config server", WARN,
                             f"edgeStream.server is {DEFAULT_SERVER}, KubeEdge's default: right only when cloudstream "
                             "runs on this very host",
                             f"set `modules: edgeStream: server: <cloud address>:10004` in {self._where}"))
        else:
            out.append(Check("config server", PASS, f"tunnel server {c.server}, node {c.node_name}, "
                                                    f"IP {c.node_ip or '(the address the cloud sees)'}"))
        return out

    # ------------------------------------------------------------------ the tunnel server

    def _port(self) -> int:
        return int(self.config.server.rpartition(":")[2])

    async def network_checks(self, out: list[Check]) -> bool:
        c = self.config
        host, port = c.host, self._port()
        fix_server = f"set `modules: edgeStream: server: <cloud address>:{port}` in {self._where} (or --server)"
        addresses, why = await resolve(host, port, self.timeout)
        if why is not None:
            out.append(Check("resolve server", FAIL, f"{host} does not resolve: {why}", fix_server))
            return False
        out.append(Check("resolve server", PASS, f"{host} -> {', '.join(addresses)}"))
        why = await tcp_connect(host, port, self.timeout)
        if why is not None:
            out.append(Check("reach server", FAIL, f"{host}:{port}: {why}",
                             f"is this cloudstream's address and tunnel port (keadm: <cloud>:10004, Helm NodePort "
                             f"30004)? run `cloudstream doctor` on the cloud; otherwise {fix_server}"))
            return False
        out.append(Check("reach server", PASS, f"{host}:{port} accepts connections"))
        return True

    async def tls_check(self) -> Check:
        c = self.config
        try:
            ctx = client_context(c.tls_tunnel_ca_file, c.tls_tunnel_cert_file, c.tls_tunnel_private_key_file,
                                 verify=c.verify_server)
        except CertificateError as exc:
            return Check("tls", FAIL, f"cannot load this node's TLS files: {exc}", "see the cert lines below")
        name = c.server_name or c.host
        result = await tls_handshake(c.host, self._port(), ctx, name if c.verify_server else None, self.timeout)
        if result.ok:
            how = "the cloud's certificate verified" if c.verify_server else "cloud not verified (--insecure-skip-verify)"
            return Check("tls", PASS, f"mTLS handshake with {c.server} ok ({how}; ours accepted)")
        return self._tls_failure(result, name)

    def _tls_failure(self, r: TlsResult, name: str) -> Check:
        c = self.config
        node = c.node_name
        issue_edge = shlex.join(["streamcerts", "issue", "edge", node, "--dir", str(self.pki_root), "--force"]
                                + (["--ip", c.node_ip] if c.node_ip else []))
        issue_server = shlex.join(["streamcerts", "issue", "server", "--dir", "/etc/kubeedge", "--san", name, "--force"])
        if r.stage == "server certificate":
            finding, fix = {
                "expired": (f"the cloud's certificate (at {c.server}) has expired",
                            f"on the cloud: {issue_server}, then restart cloudstream"),
                "not yet valid": (f"the cloud's certificate (at {c.server}) is not valid yet: a clock is wrong",
                                  "check both hosts' clocks (timedatectl), or reissue on the cloud"),
                "unknown ca": (f"the cloud's certificate is not signed by this node's tunnel CA {c.tls_tunnel_ca_file}",
                               f"copy the cloud's tunnel CA (/etc/kubeedge/ca/rootCA.crt there) to {c.tls_tunnel_ca_file}"),
                "hostname": (f"the cloud's certificate does not name {name!r}, the address this node dials",
                             f"on the cloud: {issue_server} (or dial a name it carries: edgeStream.server)"),
            }.get(r.kind, (f"the cloud's certificate is refused: {r.detail}", f"on the cloud: {issue_server}"))
            return Check("tls", FAIL, f"{finding} ({r.detail})", fix)
        if r.stage == "client certificate":
            finding, fix = {
                "unknown ca": (f"the cloud does not trust this node's certificate {c.tls_tunnel_cert_file} (unknown ca): "
                               "it is not signed by the cloud's tunnel CA",
                               f"where the cloud's tunnel CA key is: {issue_edge}; copy the pair to this node"),
                "expired": (f"the cloud says this node's certificate {c.tls_tunnel_cert_file} has expired",
                            f"where the cloud's tunnel CA key is: {issue_edge}; copy the pair to this node"),
                "certificate required": ("the cloud got no client certificate from this node",
                                         f"set tlsTunnelCertFile/tlsTunnelPrivateKeyFile in {self._where}"),
            }.get(r.kind, (f"the cloud refused this node's certificate {c.tls_tunnel_cert_file} ({r.kind})",
                           f"where the cloud's tunnel CA key is: {issue_edge}"))
            return Check("tls", FAIL, f"{finding} ({r.detail})", fix)
        return Check("tls", FAIL, f"TLS with {c.server} failed: {r.detail}",
                     f"is {c.server} cloudstream's tunnel port (10004), not another service? run `cloudstream doctor` there")

    # ------------------------------------------------------------------ this node's certificate

    def cert_checks(self) -> list[Check]:
        c = self.config
        data = {"modules": {"edgeStream": {
            "tlsTunnelCAFile": str(c.tls_tunnel_ca_file), "tlsTunnelCertFile": str(c.tls_tunnel_cert_file),
            "tlsTunnelPrivateKeyFile": str(c.tls_tunnel_private_key_file), "server": c.server,
        }}}
        target = Target("edge", self.pki_root, data, None, c.node_name, c.node_ip)
        out = [finding_check(f) for e in edge_expectations(target) for f in check(e)]
        if not c.node_ip:
            try:
                ips = cert_ips(load_cert(c.tls_tunnel_cert_file))
            except CertificateError:
                ips = ()
            if ips:
                out.append(Check(f"cert edge {c.node_name}", FAIL,
                                 f"the certificate lists IPs {', '.join(ips)} but this node announces none: cloudstream "
                                 "refuses the tunnel",
                                 f"set `modules: edged: nodeIP: {ips[0]}` in {self._where} (or --node-ip {ips[0]})"))
        return out

    # ------------------------------------------------------------------ backend and tunnel

    async def backend_check(self) -> Check:
        c = self.config
        if c.backend == "emulator":
            return Check("backend", PASS, "the built-in emulator (a lab backend: no containers)")
        if c.backend == "kubelet":
            from ..node_endpoints import _kubelet_healthz

            try:
                async with asyncio.timeout(self.timeout):
                    why = await _kubelet_healthz(c.kubelet_address)
            except TimeoutError:
                why = f"the kubelet at {c.kubelet_address} did not answer within {self.timeout:g} s"
            if why is None:
                return Check("backend", PASS, f"edged/kubelet at {c.kubelet_address} answers /healthz 200")
            port = self._read_only_port()
            if port is not None and not c.kubelet_address.endswith(f":{port}"):
                return Check("backend", FAIL, f"{why}; edged's read-only port is {port} in {self._where}",
                             f"edgestream --kubelet-address 127.0.0.1:{port} (KubeEdge's Go cloud hard-codes 10350: "
                             "issue #4952)")
            return Check("backend", FAIL, why,
                         "is edgecore running (systemctl status edgecore)? edged's read-only port is "
                         "tailoredKubeletConfig.readOnlyPort (10350; KubeEdge issue #4952)")
        from ..backends.cri_client import CriClient

        client = CriClient(c.cri_endpoint, timeout=self.timeout)
        try:
            async with asyncio.timeout(self.timeout):
                v = await client.version()
        except TimeoutError:
            return Check("backend", FAIL, f"containerd at {c.cri_endpoint} did not answer within {self.timeout:g} s",
                         "systemctl status containerd")
        except TunnelError as exc:
            return Check("backend", FAIL, str(exc),
                         f"systemctl start containerd, or point edgestream at its socket: "
                         f"tailoredKubeletConfig.containerRuntimeEndpoint in {self._where} (or --cri-endpoint)")
        finally:
            await client.close()
        return Check("backend", PASS, f"{v.runtime_name} {v.runtime_version} at {c.cri_endpoint} (CRI {v.runtime_api_version})")

    def _read_only_port(self) -> int | None:
        """edged's ``tailoredKubeletConfig.readOnlyPort`` from edgecore.yaml, when set."""
        port = section(self.yaml, "modules", "edged", "tailoredKubeletConfig").get("readOnlyPort")
        return int(port) if isinstance(port, int) else None

    async def tunnel_check(self) -> Check:
        admin = getattr(self.config, "admin", None)
        port = getattr(admin, "port", None)
        if not port:
            how = ("run edgestream with --admin-port 10006 and give doctor the same flag"
                   if admin is not None else "this build has no admin port (needs the admin server)")
            return Check("tunnel", SKIP, "the admin port is off: cannot ask edgestream whether its tunnel is up", how)
        address = str(getattr(admin, "address", "127.0.0.1"))
        host = "127.0.0.1" if address in ("", "0.0.0.0") else address
        got = await http_get(host, int(port), "/readyz", self.timeout)
        text = " ".join(got.body.decode(errors="replace").split())[:200]
        if got.status == 200:
            return Check("tunnel", PASS, f"edgestream's /readyz at {host}:{port}: {text}")
        if got.status == 0:
            return Check("tunnel", FAIL, f"edgestream's admin port {host}:{port}: {got.error}",
                         "is edgestream running (systemctl status edgestream) with this --admin-port?")
        return Check("tunnel", FAIL, f"edgestream's /readyz at {host}:{port}: {got.status} {text}",
                     "the lines above say why; edgestream's log names the last failed dial")
