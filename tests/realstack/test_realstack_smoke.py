"""Smoke test of the real containerd stack: a kubelet-style pod, its CRI log file and streaming URLs."""

from __future__ import annotations

import os
import time

import pytest

from streamproto.cri.v1 import api_pb2
from tests.realstack.cri import RealStack

pytestmark = pytest.mark.containerd

LOOP = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"


def _wait_for_text(path: str, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if needle in text:
                return text
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in {path} after {timeout}s; content: {text[:500]!r}")


def test_runtime_is_containerd_v1(realstack: RealStack) -> None:
    v = realstack.runtime.Version(api_pb2.VersionRequest(version="v1"), timeout=5)
    assert v.runtime_name == "containerd"
    assert v.runtime_api_version == "v1"
    tags = {t for img in realstack.images.ListImages(api_pb2.ListImagesRequest(), timeout=5).images for t in img.repo_tags}
    assert {"docker.io/library/busybox:latest", "registry.k8s.io/pause:3.6"} <= tags


def test_pod_container_log_and_exec(realstack: RealStack) -> None:
    pod = realstack.run_pod("smoke", namespace="default", uid="0000-smoke")
    try:
        cid = realstack.run_container(pod, "loop", ["sh", "-c", LOOP])
        status = realstack.wait_running(cid)
        assert realstack.container_status(cid).state == api_pb2.CONTAINER_RUNNING

        # kubelet's log layout: <log_dir>/<ns>_<name>_<uid>/<container>/<attempt>.log
        expected_log = os.path.join(realstack.log_dir, "default_smoke_0000-smoke", "loop", "0.log")
        assert status.log_path == expected_log
        text = _wait_for_text(status.log_path, "stdout F line 0")
        first = text.splitlines()[0].split(" ", 3)
        assert first[1:] == ["stdout", "F", "line 0"]

        labels = status.labels
        assert labels["io.kubernetes.container.name"] == "loop"
        assert labels["io.kubernetes.pod.name"] == "smoke"
        assert labels["io.kubernetes.pod.namespace"] == "default"
        assert labels["io.kubernetes.pod.uid"] == "0000-smoke"
        found = realstack.list_containers(**{"io.kubernetes.pod.uid": "0000-smoke", "io.kubernetes.container.name": "loop"})
        assert [c.id for c in found] == [cid]

        url = realstack.exec_url(cid, ["echo", "hi"])
        assert url.startswith("http://127.0.0.1:"), url
        assert "/exec/" in url

        res = realstack.exec_sync(cid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", 3)

        realstack.stop_container(cid)
        assert realstack.container_status(cid).state == api_pb2.CONTAINER_EXITED
    finally:
        realstack.remove_pod(pod)
    assert realstack.list_pods(**{"io.kubernetes.pod.uid": "0000-smoke"}) == []
