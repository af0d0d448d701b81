"""The CRI schema in streamproto/cri/v1/api.proto: generated code is current, and the hand-written
subset agrees with the upstream runtime.v1 schema that the installed containerd actually serves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
CONTAINERD = Path("/usr/bin/containerd")

RUNTIME_RPCS = {
    "Version", "Status", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus",
    "ListPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer",
    "ListContainers", "ContainerStatus", "ReopenContainerLog", "ExecSync", "Exec", "Attach",
    "PortForward", "ContainerStats", "ListContainerStats", "PodSandboxStats", "ListPodSandboxStats",
}
IMAGE_RPCS = {"ListImages", "ImageStatus", "ImageFsInfo"}


def test_generated_modules_are_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.cri_gen", "--check"],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"run `python -m scripts.cri_gen`:\n{proc.stdout}\n{proc.stderr}"


def test_generated_modules_import_as_package() -> None:
    from streamproto.cri.v1 import api_pb2, api_pb2_grpc

    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    assert api_pb2.PodSandboxConfig.__module__ == "streamproto.cri.v1.api_pb2"
    assert api_pb2_grpc.v1_dot_api__pb2 is api_pb2  # the package-relative import, not a second copy
    assert hasattr(api_pb2_grpc, "RuntimeServiceStub") and hasattr(api_pb2_grpc, "ImageServiceStub")


def test_declares_exactly_the_agreed_rpcs() -> None:
    from scripts.cri_gen import our_descriptor

    services = {s.name: {m.name for m in s.method} for s in our_descriptor().service}
    assert services == {"RuntimeService": RUNTIME_RPCS, "ImageService": IMAGE_RPCS}


def test_proto_has_no_go_options_or_imports() -> None:
    from scripts.cri_gen import our_descriptor

    fd = our_descriptor()
    assert list(fd.dependency) == []
    assert not fd.options.go_package
    text = (REPO_ROOT / "streamproto" / "cri" / "v1" / "api.proto").read_text()
    assert "gogoproto" not in text and "go_package" not in text


def test_compare_detects_mismatches() -> None:
    """The comparison used below must notice a renumbered field, a retyped field and a bad RPC."""
    from google.protobuf import descriptor_pb2

    from scripts.cri_gen import compare, our_descriptor

    reference = our_descriptor()
    assert compare(reference, reference) == []

    broken = descriptor_pb2.FileDescriptorProto()
    broken.CopyFrom(reference)
    msgs = {m.name: m for m in broken.message_type}
    msgs["ExecRequest"].field[1].number = 99  # cmd
    msgs["ExecResponse"].field[0].type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES  # url
    msgs["PodSandboxStatus"].field[2].type_name = ".runtime.v1.ContainerState"  # state
    broken.service[0].method[0].output_type = ".runtime.v1.StatusResponse"
    problems = compare(broken, reference)
    assert any("ExecRequest.cmd: number 99" in p for p in problems), problems
    assert any("ExecResponse.url: type TYPE_BYTES" in p for p in problems), problems
    assert any("PodSandboxStatus.state: type name" in p for p in problems), problems
    assert any("rpc RuntimeService.Version" in p for p in problems), problems


@pytest.fixture(scope="module")
def upstream():
    if not CONTAINERD.exists():
        pytest.skip(f"{CONTAINERD} not installed: cannot compare with the runtime.v1 schema it embeds "
                    "(apt-get install containerd, or run tests/realstack/setup.sh)")
    from scripts.cri_gen import upstream_descriptor

    return upstream_descriptor(CONTAINERD)


def test_matches_containerd_runtime_v1(upstream) -> None:
    from scripts.cri_gen import compare, our_descriptor

    problems = compare(our_descriptor(), upstream)
    assert problems == [], "streamproto/cri/v1/api.proto disagrees with containerd's runtime.v1:\n" + "\n".join(problems)


def test_every_declared_field_checked_against_upstream(upstream) -> None:
    """Spell out the per-field rule on its own (number, type, label, type name) as a cross-check."""
    from scripts.cri_gen import _messages, our_descriptor

    up_msgs = _messages(upstream)
    checked = 0
    for fq, msg in _messages(our_descriptor()).items():
        assert fq in up_msgs, f"{fq} not upstream"
        up_fields = {f.name: f for f in up_msgs[fq].field}
        for f in msg.field:
            uf = up_fields[f.name]
            assert (f.number, f.type, f.label, f.type_name) == (uf.number, uf.type, uf.label, uf.type_name), (
                f"{fq}.{f.name}"
            )
            checked += 1
    assert checked > 200
