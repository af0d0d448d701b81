"""Small synchronous CRI client for tests that run against the real containerd of setup.sh.

It creates pods and containers the way kubelet does for a host-network pod, so that code under
test (the edge agent) sees the same labels, log layout and streaming URLs it meets in production:

* pod sandbox labels ``io.kubernetes.pod.name`` / ``.namespace`` / ``.uid``;
* pod ``log_directory`` ``<log_dir>/<namespace>_<name>_<uid>`` and container ``log_path``
  ``<container name>/<attempt>.log``, so the CRI log file is
  ``<log_dir>/<ns>_<name>_<uid>/<container>/<attempt>.log``;
* container labels ``io.kubernetes.container.name`` plus the three pod labels;
* host network, no hostname (runc cannot set one without a private UTS namespace).

Example::

    stack = RealStack("/tmp/kes-realstack/ctd/containerd.sock", "/tmp/kes-realstack/podlogs")
    pod = stack.run_pod("web")
    cid = stack.run_container(pod, "main", ["sh", "-c", "echo hi; sleep 3600"])
    stack.wait_running(cid)
    url = stack.exec_url(cid, ["echo", "hi"])      # http://127.0.0.1:PORT/exec/TOKEN
    stack.remove_pod(pod)
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import grpc

from streamproto.cri.v1 import api_pb2, api_pb2_grpc

BUSYBOX_IMAGE = "docker.io/library/busybox:latest"
PAUSE_IMAGE = "registry.k8s.io/pause:3.6"

LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"

DEFAULT_TIMEOUT = 30.0  # seconds, per CRI call


class RealStack:
    """Handle on a running containerd CRI endpoint (see ``tests/realstack/setup.sh``).

    ``socket_path``: containerd's gRPC socket (``$RS/ctd/containerd.sock``).
    ``log_dir``: root under which pod log directories are created (``$RS/podlogs``).
    ``rs_dir``: optional ``$RS`` directory of setup.sh, for tests that want its other files.
    """

    def __init__(self, socket_path: str | os.PathLike[str], log_dir: str | os.PathLike[str],
                 rs_dir: str | os.PathLike[str] | None = None) -> None:
        self.socket_path = str(socket_path)
        self.log_dir = str(log_dir)
        self.rs_dir = str(rs_dir) if rs_dir is not None else None
        self.endpoint = "unix://" + self.socket_path
        self.channel = grpc.insecure_channel(self.endpoint)
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.images = api_pb2_grpc.ImageServiceStub(self.channel)
        # pod id -> the PodSandboxConfig it was created with (CreateContainer wants it again).
        self._pod_configs: dict[str, api_pb2.PodSandboxConfig] = {}

    @classmethod
    def from_rs(cls, rs_dir: str | os.PathLike[str]) -> RealStack:
        """Handle for the layout setup.sh creates under ``RS=rs_dir``."""
        rs = Path(rs_dir)
        return cls(rs / "ctd" / "containerd.sock", rs / "podlogs", rs_dir=rs)

    # -------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RealStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- pods
    def pod_log_directory(self, name: str, namespace: str, uid: str) -> str:
        """Kubelet's per-pod log directory: ``<log_dir>/<namespace>_<name>_<uid>``."""
        return os.path.join(self.log_dir, f"{namespace}_{name}_{uid}")

    def pod_config(self, name: str, namespace: str = "default", uid: str | None = None,
                   attempt: int = 0) -> api_pb2.PodSandboxConfig:
        """The PodSandboxConfig kubelet would send for a host-network pod."""
        uid = uid or str(uuid.uuid4())
        labels = {LABEL_POD_NAME: name, LABEL_POD_NAMESPACE: namespace, LABEL_POD_UID: uid}
        host_ns = api_pb2.NamespaceOption(network=api_pb2.NODE, pid=api_pb2.CONTAINER, ipc=api_pb2.POD)
        return api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=attempt),
            hostname="",  # must stay empty for host-network pods
            log_directory=self.pod_log_directory(name, namespace, uid),
            labels=labels,
            annotations={"kubernetes.io/config.source": "api"},
            linux=api_pb2.LinuxPodSandboxConfig(
                security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=host_ns),
            ),
        )

    def run_pod(self, name: str, namespace: str = "default", uid: str | None = None) -> str:
        """Start a host-network pod sandbox; returns its pod sandbox ID."""
        config = self.pod_config(name, namespace, uid)
        os.makedirs(config.log_directory, exist_ok=True)  # kubelet creates it before RunPodSandbox
        resp = self.runtime.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=60)
        self._pod_configs[resp.pod_sandbox_id] = config
        return resp.pod_sandbox_id

    def pod_status(self, pod_id: str) -> api_pb2.PodSandboxStatus:
        req = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id)
        return self.runtime.PodSandboxStatus(req, timeout=DEFAULT_TIMEOUT).status

    def list_pods(self, **label_selector: str) -> list[api_pb2.PodSandbox]:
        """Pod sandboxes, optionally filtered by labels (keyword arguments cannot hold dots:
        pass ``**{"io.kubernetes.pod.name": "x"}``)."""
        flt = api_pb2.PodSandboxFilter(label_selector=label_selector)
        return list(self.runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest(filter=flt), timeout=DEFAULT_TIMEOUT).items)

    def remove_pod(self, pod_id: str) -> None:
        """StopPodSandbox (kills its containers) then RemovePodSandbox. Log files are kept."""
        self.runtime.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        self.runtime.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        self._pod_configs.pop(pod_id, None)

    def remove_all_pods(self) -> int:
        """Remove every pod sandbox known to the runtime; returns how many there were."""
        pods = self.runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=DEFAULT_TIMEOUT).items
        for pod in pods:
            self.remove_pod(pod.id)
        return len(pods)

    # ------------------------------------------------------------------------- containers
    def run_container(self, pod_id: str, name: str, command: list[str], attempt: int = 0,
                      tty: bool = False, stdin: bool = False) -> str:
        """Create and start a busybox container in ``pod_id``; returns its container ID.

        The CRI log goes to ``<pod log_directory>/<name>/<attempt>.log``.
        """
        pod_config = self._pod_configs.get(pod_id)
        if pod_config is None:
            raise KeyError(f"pod {pod_id} was not created by this RealStack")
        labels = dict(pod_config.labels)
        labels[LABEL_CONTAINER_NAME] = name
        config = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name, attempt=attempt),
            image=api_pb2.ImageSpec(image=BUSYBOX_IMAGE),
            command=list(command),
            labels=labels,
            annotations={"io.kubernetes.container.restartCount": str(attempt)},
            log_path=f"{name}/{attempt}.log",
            stdin=stdin,
            tty=tty,
            # kubelet gives every container the pod's namespace options (host network, own PID ns).
            linux=api_pb2.LinuxContainerConfig(
                security_context=api_pb2.LinuxContainerSecurityContext(
                    namespace_options=pod_config.linux.security_context.namespace_options,
                ),
            ),
        )
        req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config)
        cid = self.runtime.CreateContainer(req, timeout=DEFAULT_TIMEOUT).container_id
        self.runtime.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=DEFAULT_TIMEOUT)
        return cid

    def container_status(self, cid: str) -> api_pb2.ContainerStatus:
        req = api_pb2.ContainerStatusRequest(container_id=cid)
        return self.runtime.ContainerStatus(req, timeout=DEFAULT_TIMEOUT).status

    def wait_running(self, cid: str, timeout: float = 10.0) -> api_pb2.ContainerStatus:
        """Poll ContainerStatus until the container is RUNNING; returns that status.

        Raises ``RuntimeError`` if it exits first, ``TimeoutError`` after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.container_status(cid)
            if status.state == api_pb2.CONTAINER_RUNNING:
                return status
            if status.state in (api_pb2.CONTAINER_EXITED, api_pb2.CONTAINER_UNKNOWN):
                raise RuntimeError(
                    f"container {cid} is {api_pb2.ContainerState.Name(status.state)} "
                    f"(exit {status.exit_code}, reason {status.reason!r}, message {status.message!r})"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(f"container {cid} not running after {timeout}s "
                                   f"(state {api_pb2.ContainerState.Name(status.state)})")
            time.sleep(0.05)

    def list_containers(self, pod_id: str = "", **label_selector: str) -> list[api_pb2.Container]:
        flt = api_pb2.ContainerFilter(pod_sandbox_id=pod_id, label_selector=label_selector)
        return list(self.runtime.ListContainers(api_pb2.ListContainersRequest(filter=flt), timeout=DEFAULT_TIMEOUT).containers)

    def stop_container(self, cid: str, timeout: int = 0) -> None:
        """StopContainer with a grace period of ``timeout`` seconds (0: kill at once)."""
        req = api_pb2.StopContainerRequest(container_id=cid, timeout=timeout)
        self.runtime.StopContainer(req, timeout=DEFAULT_TIMEOUT + timeout)

    def remove_container(self, cid: str) -> None:
        self.runtime.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=DEFAULT_TIMEOUT)

    # -------------------------------------------------------------------------- streaming
    def exec_sync(self, cid: str, cmd: list[str], timeout: int = 10) -> api_pb2.ExecSyncResponse:
        req = api_pb2.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=timeout)
        return self.runtime.ExecSync(req, timeout=timeout + DEFAULT_TIMEOUT)

    def exec_url(self, cid: str, cmd: list[str], tty: bool = False, stdin: bool = False,
                 stdout: bool = True, stderr: bool = True) -> str:
        """Single-use streaming URL (valid about a minute). With a tty, stderr is merged into stdout."""
        req = api_pb2.ExecRequest(container_id=cid, cmd=list(cmd), tty=tty, stdin=stdin,
                                  stdout=stdout, stderr=stderr and not tty)
        return self.runtime.Exec(req, timeout=DEFAULT_TIMEOUT).url

    def attach_url(self, cid: str, tty: bool = False, stdin: bool = False,
                   stdout: bool = True, stderr: bool = True) -> str:
        req = api_pb2.AttachRequest(container_id=cid, tty=tty, stdin=stdin,
                                    stdout=stdout, stderr=stderr and not tty)
        return self.runtime.Attach(req, timeout=DEFAULT_TIMEOUT).url

    def port_forward_url(self, pod_id: str, ports: list[int] | None = None) -> str:
        req = api_pb2.PortForwardRequest(pod_sandbox_id=pod_id, port=list(ports or []))
        return self.runtime.PortForward(req, timeout=DEFAULT_TIMEOUT).url
