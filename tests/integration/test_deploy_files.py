"""deploy/: the systemd units pass systemd's own checker, the Kubernetes manifests pass the
Kubernetes OpenAPI schemas (kubernetes-validate bundles the API server's own), and the image
definition agrees with both."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudstream.__main__ import build_parser as cloudstream_parser
from edgestream.__main__ import build_parser as edgestream_parser
from streamops.cli import env_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = {"cloudstream": cloudstream_parser, "edgestream": edgestream_parser}
INSTALLED_BIN = "/opt/kubeedge-stream/bin/"
ADMIN_PORT = 10550  # the admin server's default (--admin-port): the probes' target


# ------------------------------------------------------------------------------ systemd units

def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=120)


def _unit_copy(name: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a launcher of this tree (systemd checks the binary exists)."""
    launcher = tmp_path / name
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m {name} \"$@\"\n")
    launcher.chmod(0o755)
    text = (DEPLOY / "systemd" / f"{name}.service").read_text()
    assert f"ExecStart={INSTALLED_BIN}{name} " in text
    unit = tmp_path / f"{name}.service"
    unit.write_text(text.replace(INSTALLED_BIN + name, str(launcher)))
    return unit


def _directives(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_passes_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    unit = _unit_copy(name, tmp_path)
    verify = _analyze("verify", str(unit))
    # verify exits 0 on unknown keys and bad values; any line it prints is a finding
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify.stdout + verify.stderr
    security = _analyze("security", "--offline=yes", "--threshold=25", str(unit))
    assert security.returncode == 0, security.stdout[-3000:]


def test_the_verify_check_can_fail(tmp_path: Path) -> None:
    unit = _unit_copy("cloudstream", tmp_path)
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=strickt\nRestartt=always"))
    verify = _analyze("verify", str(unit))
    assert "strickt" in verify.stderr and "Restartt" in verify.stderr


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_restarts_hardens_and_may_write_only_certificates(name: str, tmp_path: Path) -> None:
    unit = _directives(DEPLOY / "systemd" / f"{name}.service")
    assert "network-online.target" in unit["Unit"]["After"] and "network-online.target" in unit["Unit"]["Wants"]
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == "" and service["AmbientCapabilities"] == ""
    assert service["ReadWritePaths"] == "-/etc/kubeedge/certs"
    assert int(service["LimitNOFILE"]) >= 65536
    # The command line is one the program accepts: run it with --version appended.
    launcher = _unit_copy(name, tmp_path)
    exec_start = _directives(launcher)["Service"]["ExecStart"].split()
    run = subprocess.run([*exec_start, "--version"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith(f"{name} "), run.stderr


# ------------------------------------------------------------------------- Kubernetes manifests

def _manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for _, d in _manifests() if d["kind"] == kind]
    return doc


def test_manifests_pass_the_kubernetes_schemas_strictly() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="test-only dependency: pip install -e '.[test]'")
    docs = _manifests()
    assert {d["kind"] for _, d in docs} >= {"Namespace", "ServiceAccount", "Deployment", "Service"}
    for version in ("1.27.0", kv.latest_version()):  # the oldest kubectl we test, and the newest schema
        for name, doc in docs:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"deploy/kubernetes/{name} ({doc['kind']}) against Kubernetes {version}: {exc}")
    broken = dict(_kind("Deployment"))
    broken["spec"] = dict(broken["spec"], replica=1)  # a typo strict validation must catch
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_deployment_probes_ports_and_security() -> None:
    deployment, service = _kind("Deployment"), _kind("Service")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"stream": 10003, "tunnel": 10004, "admin": ADMIN_PORT}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"stream", "tunnel"}
    assert {p["port"] for p in service["spec"]["ports"]} == {10003, 10004}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    # No API access is granted: no token, no Role.
    assert pod["automountServiceAccountToken"] is False and _kind("ServiceAccount")["automountServiceAccountToken"] is False
    assert not [d for _, d in _manifests() if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]
    # Service links would inject CLOUDSTREAM_PORT=tcp://... and the like: cloudstream reads
    # CLOUDSTREAM_* variables as flags.
    assert pod["enableServiceLinks"] is False
    # The certificates land at KubeEdge's default paths, the ones cloudstream reads without flags.
    (volume,) = [v for v in pod["volumes"] if v["name"] == "kubeedge-certs"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "kubeedge-certs"]
    mounted = {f"{mount['mountPath']}/{item['path']}" for item in volume["secret"]["items"]}
    defaults = cloudstream_parser().parse_args([])
    from cloudstream.config import CloudConfig

    config = CloudConfig.from_args(defaults)
    expected = {str(getattr(config, f)) for f in CloudConfig.__dataclass_fields__ if f.startswith("tls_") and "file" in f}
    assert mounted == expected


def test_deployment_environment_names_real_flags() -> None:
    (container,) = _kind("Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    parser = cloudstream_parser()
    flags = {env_name("cloudstream", a): a for a in parser._actions if env_name("cloudstream", a)}
    if "CLOUDSTREAM_ADMIN_PORT" not in flags:
        pytest.skip("cloudstream has no --admin-port on this branch (the admin server is another branch)")
    assert set(env) <= set(flags), f"not flags of cloudstream: {sorted(set(env) - set(flags))}"
    parser.environ = env
    ns = parser.parse_args([])
    assert int(ns.admin_port) == ADMIN_PORT


# ------------------------------------------------------------------------------ the image

def _containerfile() -> str:
    return (DEPLOY / "image" / "Containerfile").read_text()


def build_stage_sources() -> list[str]:
    """What the image's build stage copies from the tree (the wheel test builds from exactly this)."""
    build = _containerfile().split("\nFROM ")[1]  # the first stage
    return [src.rstrip("/") for line in build.splitlines() if line.startswith("COPY ") for src in line.split()[1:-1]]


def test_image_copies_every_package_and_matches_the_manifest() -> None:
    sources = build_stage_sources()
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[(.*?)\]", pyproject)
    assert include is not None
    packages = [p.strip().strip('"').rstrip("*") for p in include.group(1).split(",")]
    assert set(packages) <= set(sources) and {"pyproject.toml", "README.md", "LICENSE"} <= set(sources)
    text = _containerfile()
    exposed = {int(p) for line in text.splitlines() if line.startswith("EXPOSE") for p in line.split()[1:]}
    pod = _kind("Deployment")["spec"]["template"]["spec"]
    assert exposed == {p["containerPort"] for p in pod["containers"][0]["ports"]}
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    assert user is not None and int(user.group(1)) == pod["securityContext"]["runAsUser"] != 0
    assert int(user.group(2)) == pod["securityContext"]["fsGroup"]
    assert '"$(ls /wheels/*.whl)[uvloop]"' in text
