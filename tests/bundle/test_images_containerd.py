"""The bundle's OCI archives in the suite's real containerd: ``ctr -n k8s.io images import``, then pods
through CRI by the digest references the manifests pin.

* cloudstream: a host-network pod with the Deployment's security context (uid 65532, read-only root,
  no capabilities); an emulated edge dials its tunnel and the kubelet API's /healthz answers through it; the Deployment's probes (admin /healthz, /readyz) answer 200.
* iptables manager: a pod in its own network namespace (CNI ``host-device`` moving one end of a veth
  pair in; the host's end stays down) running the DaemonSet's own command with only NET_ADMIN; its DNAT rules
  appear in that namespace's nat table, not the host's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from streamcerts import Layout
from streamproto.cri.v1 import api_pb2
from tests.bundle.conftest import ROOT, Built
from tests.conftest import free_port
from tests.realstack.cri import RealStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500), pytest.mark.containerd]
NODE = "edge-1"  # a node of the lab_pki fixture
CNI_CONF = "05-kes-bundle.conflist"


def _env(rs: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (rs / "realstack.env").read_text().splitlines() if "=" in line)


@pytest.fixture(scope="module")
def imported(built_bundle: Built, realstack: RealStack) -> dict[str, dict]:
    """role -> the bundle.json image entry, each archive imported into containerd's k8s.io namespace."""
    if not built_bundle.images:
        pytest.skip(f"bundle built without images: {built_bundle.why_no_images}")
    assert realstack.rs_dir is not None
    env = _env(Path(realstack.rs_dir))
    info = json.loads((built_bundle.dir / "bundle.json").read_text())
    entries = {}
    for image in info["images"]:
        done = subprocess.run(["ctr", "--address", env["CRI_SOCK"], "-n", "k8s.io", "images", "import",
                               "--snapshotter", env["SNAPSHOTTER"], str(built_bundle.dir / image["file"])],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        entries[image["role"]] = image
    listed = subprocess.run(["ctr", "--address", env["CRI_SOCK"], "-n", "k8s.io", "images", "ls", "-q"],
                            capture_output=True, text=True, check=True, timeout=60).stdout.split()
    for image in entries.values():
        ref = f"{image['name'].rsplit(':', 1)[0]}@{image['digest']}"
        assert image["name"] in listed and ref in listed, (image, listed)
        # the CRI (what the kubelet asks) finds the digest reference locally: no pull needed
        status = realstack.images.ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=ref)), timeout=30)
        assert status.image.id, f"CRI does not know {ref}"
    return entries


def _manifest_container(bundle: Path, file: str, kind: str) -> dict:
    docs = [d for d in yaml.safe_load_all((bundle / "kubernetes" / file).read_text()) if d and d["kind"] == kind]
    return docs[0]["spec"]["template"]["spec"]["containers"][0]


def _run(realstack: RealStack, pod_config: api_pb2.PodSandboxConfig, image: str, *, name: str,
         args: list[str], command: list[str] | None = None, mounts: list[api_pb2.Mount] | None = None,
         envs: dict[str, str] | None = None, security: api_pb2.LinuxContainerSecurityContext) -> tuple[str, str]:
    os.makedirs(pod_config.log_directory, exist_ok=True)
    pod = realstack.runtime.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_config), timeout=120).pod_sandbox_id
    security.namespace_options.CopyFrom(pod_config.linux.security_context.namespace_options)
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name), image=api_pb2.ImageSpec(image=image),
        command=command or [], args=args, log_path=f"{name}/0.log", mounts=mounts or [],
        envs=[api_pb2.KeyValue(key=k, value=v) for k, v in (envs or {}).items()],
        labels={**pod_config.labels, "io.kubernetes.container.name": name},
        linux=api_pb2.LinuxContainerConfig(security_context=security))
    cid = realstack.runtime.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=config, sandbox_config=pod_config), timeout=120).container_id
    realstack.runtime.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
    return pod, cid


def _remove(realstack: RealStack, pod: str) -> None:
    realstack.runtime.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    realstack.runtime.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)


def _wait_log(realstack: RealStack, cid: str, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        status = realstack.container_status(cid)
        if os.path.exists(status.log_path):
            text = Path(status.log_path).read_text(errors="replace")
            if needle in text:
                return text
        if status.state == api_pb2.CONTAINER_EXITED:
            break
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not in the container's log:\n{text[-3000:]}")


def _http_get(host: str, port: int, path: str) -> str:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.decode(errors="replace").split("\r\n")[0]


def _healthz(layout: Layout, port: int) -> tuple[str, bytes]:
    async def go() -> tuple[str, bytes]:
        ctx = ssl.create_default_context(cafile=str(layout.stream_ca))
        ctx.load_cert_chain(str(layout.apiserver_client_cert), str(layout.apiserver_client_key))
        ctx.check_hostname = False
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
        try:
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {NODE}:10250\r\nConnection: close\r\n\r\n".encode())
            data = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return head.split(b"\r\n")[0].decode(), body
    return asyncio.run(go())


def test_cloudstream_image_serves_healthz_as_a_pod(built_bundle: Built, imported: dict[str, dict],
                                                   realstack: RealStack, lab_pki: Layout, tmp_path: Path) -> None:
    image = imported["cloudstream"]
    ref = f"{image['name'].rsplit(':', 1)[0]}@{image['digest']}"
    spec = _manifest_container(built_bundle.dir, "cloudstream.yaml", "Deployment")
    assert spec["image"] == ref
    pki = tmp_path / "pki"
    shutil.copytree(lab_pki.root, pki)
    for path in [pki, *pki.rglob("*")]:
        os.chown(path, 65532, 65532)  # the Secret volume's fsGroup, as the kubelet would set it
    ports = {"--stream-port": free_port(), "--tunnel-port": free_port(), "--admin-port": free_port()}
    args = list(spec["args"])  # the Deployment's own flags, on free ports (host network, shared machine)
    for flag, port in ports.items():
        args[args.index(flag) + 1] = str(port)
    args += ["--stream-address", "127.0.0.1", "--tunnel-address", "127.0.0.1"]
    stream_port, tunnel_port, admin_port = ports.values()
    sc = spec["securityContext"]
    security = api_pb2.LinuxContainerSecurityContext(
        run_as_user=api_pb2.Int64Value(value=65532), run_as_group=api_pb2.Int64Value(value=65532),
        readonly_rootfs=sc["readOnlyRootFilesystem"], no_new_privs=not sc["allowPrivilegeEscalation"],
        capabilities=api_pb2.Capability(drop_capabilities=sc["capabilities"]["drop"]))
    name = "cs-" + uuid.uuid4().hex[:6]
    mount = spec["volumeMounts"][0]["mountPath"]
    pod, cid = _run(realstack, realstack.pod_config(name, namespace="kes-bundle"), ref, name="cloudstream",
                    args=args, security=security,
                    mounts=[api_pb2.Mount(container_path=mount, host_path=str(pki), readonly=True)])
    edge = None
    try:
        _wait_log(realstack, cid, f"tunnel on 127.0.0.1:{tunnel_port}")
        uid = realstack.exec_sync(cid, ["id", "-u"])
        assert uid.stdout.strip() == b"65532", uid
        # HA mode's Kubernetes client (the [kube] extra) is in the image
        kube = realstack.exec_sync(cid, ["python3", "-c", "import kubernetes_asyncio"], timeout=30)
        assert kube.exit_code == 0, kube.stderr
        # the probes the Deployment declares, on the admin port
        for probe in ("livenessProbe", "readinessProbe"):
            get = spec[probe]["httpGet"]
            assert get["port"] == 10550
            deadline = time.monotonic() + 15
            while not (status := _http_get(get["host"], admin_port, get["path"])).startswith("HTTP/1.1 200") \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
            assert status.startswith("HTTP/1.1 200"), (probe, status)
        edge = subprocess.Popen(
            [sys.executable, "-m", "edgestream", "--pki-dir", str(lab_pki.root), "--node-name", NODE,
             "--server", f"localhost:{tunnel_port}", "--node-ip", "127.0.0.1", "--backend", "emulator"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        answer: tuple[str, bytes] = ("", b"")
        while time.monotonic() < deadline:
            answer = _healthz(lab_pki, stream_port)
            if answer[0].startswith("HTTP/1.1 200"):
                break
            time.sleep(0.3)  # 503/404 until the edge's tunnel is up
        assert answer[0].startswith("HTTP/1.1 200"), answer
        assert b"ok" in answer[1], answer
    finally:
        if edge is not None:
            edge.terminate()
            edge.wait(10)
        _remove(realstack, pod)


@pytest.fixture
def pod_network(realstack: RealStack) -> Iterator[str]:
    """CNI for pods with their own network namespace: one end of a veth pair moved into the pod as eth0
    (192.0.2.2, TEST-NET-1); the host's end stays down with no address, so no packet goes anywhere."""
    if not os.path.isfile("/usr/lib/cni/host-device") or not os.path.isfile("/usr/lib/cni/static"):
        if not (os.environ.get("CI") or os.environ.get("KES_INSTALL") == "1"):
            pytest.skip("containernetworking-plugins not installed (`make test` as root installs it: KES_INSTALL=1)")
        subprocess.run(["apt-get", "install", "-y", "-qq", "containernetworking-plugins"], check=True, timeout=600,
                       stdin=subprocess.DEVNULL, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    assert realstack.rs_dir is not None
    link = "kesb" + uuid.uuid4().hex[:6]
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", link + "h"], check=True, timeout=30)
    conf = Path(realstack.rs_dir) / "ctd" / "cni-conf" / CNI_CONF
    conf.write_text(json.dumps({"cniVersion": "0.4.0", "name": "kes-bundle", "plugins": [
        {"type": "host-device", "device": link, "ipam": {"type": "static", "addresses": [{"address": "192.0.2.2/24"}]}},
    ]}))
    try:
        yield "192.0.2.2"
    finally:
        conf.unlink()
        subprocess.run(["ip", "link", "del", link + "h"], timeout=30)  # the pair goes with it


def test_iptables_manager_image_writes_rules_in_its_pod(built_bundle: Built, imported: dict[str, dict],
                                                       realstack: RealStack, pod_network: str,
                                                       tmp_path: Path) -> None:
    image = imported["iptables-manager"]
    ref = f"{image['name'].rsplit(':', 1)[0]}@{image['digest']}"
    spec = _manifest_container(built_bundle.dir, "iptables-manager.yaml", "DaemonSet")
    assert spec["image"] == ref
    assert spec["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    (nodes / "nodes").write_text("edge-a=192.0.2.10\nedge-b=192.0.2.11\n")
    (tmp_path / "xtables.lock").touch()
    mounts = {m["name"]: m["mountPath"] for m in spec["volumeMounts"]}
    name = "ipt-" + uuid.uuid4().hex[:6]
    config = realstack.pod_config(name, namespace="kes-bundle")
    config.linux.security_context.namespace_options.network = api_pb2.POD  # its own network namespace
    security = api_pb2.LinuxContainerSecurityContext(
        run_as_user=api_pb2.Int64Value(value=spec["securityContext"]["runAsUser"]), no_new_privs=True,
        capabilities=api_pb2.Capability(add_capabilities=spec["securityContext"]["capabilities"]["add"],
                                        drop_capabilities=spec["securityContext"]["capabilities"]["drop"]))
    pod, cid = _run(realstack, config, ref, name="iptables-manager", command=spec["command"], args=spec["args"],
                    envs={"HOST_IP": pod_network}, security=security, mounts=[
                        api_pb2.Mount(container_path=mounts["nodes"], host_path=str(nodes), readonly=True),
                        api_pb2.Mount(container_path=mounts["xtables-lock"], host_path=str(tmp_path / "xtables.lock"))])
    try:
        assert realstack.exec_sync(cid, ["readlink", "/proc/self/ns/net"]).stdout.strip().decode() != \
            os.readlink("/proc/self/ns/net"), "the pod shares the host's network namespace"
        deadline = time.monotonic() + 60
        rules = ""
        while time.monotonic() < deadline:
            rules = realstack.exec_sync(cid, ["iptables-save", "-t", "nat"]).stdout.decode()
            if "192.0.2.11" in rules:
                break
            time.sleep(0.5)
        for ip in ("192.0.2.10", "192.0.2.11"):
            assert any(ip in line and f"--to-destination {pod_network}:10003" in line
                       for line in rules.splitlines()), rules
        host_rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, timeout=30).stdout
        assert "192.0.2.10" not in host_rules, "the manager wrote into the host's nat table"
        status = realstack.container_status(cid)
        assert status.state == api_pb2.CONTAINER_RUNNING, Path(status.log_path).read_text()[-2000:]
    finally:
        _remove(realstack, pod)
