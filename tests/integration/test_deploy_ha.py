"""deploy/kubernetes/ha/: the Kubernetes OpenAPI schemas (kubernetes-validate bundles the API
server's own), and what the manifests must agree on with the code: replicas, the budget, one
replica per host, the RBAC the client's requests need, flags cloudstream accepts, the probes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudstream.config import add_arguments
from cloudstream.kube.record import CONFIGMAP, NAMESPACE

HA = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "ha"
ADMIN_PORT = 10550
OTHER_BRANCH_FLAGS = ("--replica-id", "--replicas", "--admin-address", "--admin-port")
"""HA mode's and the admin server's flags: checked when this tree has them."""


def _docs() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(HA.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def _one(kind: str) -> dict[str, Any]:
    (doc,) = [d for _, d in _docs() if d["kind"] == kind]
    return doc


def test_manifests_pass_the_kubernetes_schemas_strictly() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="test-only dependency: pip install -e '.[test]'")
    docs = _docs()
    assert {d["kind"] for _, d in docs} >= {"Deployment", "Service", "PodDisruptionBudget", "Role", "ClusterRole"}
    for version in ("1.27.0", kv.latest_version()):
        for name, doc in docs:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"deploy/kubernetes/ha/{name} ({doc['kind']}) against Kubernetes {version}: {exc}")
    broken = _one("PodDisruptionBudget")
    broken = {**broken, "spec": {**broken["spec"], "minAvailabel": 2}}  # a typo strict validation must catch
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_replicas_budget_and_one_replica_per_host() -> None:
    deployment, pdb = _one("Deployment"), _one("PodDisruptionBudget")
    replicas = deployment["spec"]["replicas"]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert replicas >= 2 and pdb["spec"]["minAvailable"] == replicas - 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname" and term["labelSelector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["containers"]
    assert f"--replicas={replicas}" in container["args"]
    service = _one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["port"] for p in service["spec"]["ports"]} == {10003, 10004}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["admin"] == ADMIN_PORT
    assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is True


def test_args_are_cloudstream_flags_and_the_pod_identity_comes_from_the_downward_api() -> None:
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert env == {"POD_NAME": "metadata.name", "POD_IP": "status.podIP"}
    assert "--replica-id=$(POD_NAME)" in container["args"] and "--replica-ip=$(POD_IP)" in container["args"]
    parser = argparse.ArgumentParser(prog="cloudstream")
    add_arguments(parser)
    known = {opt for action in parser._actions for opt in action.option_strings}
    args = [a.replace("$(POD_NAME)", "cloudstream-ha-0").replace("$(POD_IP)", "10.1.2.3") for a in container["args"]]
    missing = [a for a in args if a.split("=")[0] not in known]
    assert all(a.split("=")[0] in OTHER_BRANCH_FLAGS for a in missing), missing
    ns = parser.parse_args([a for a in args if a not in missing])
    assert ns.kubeedge_tunnel_port == "on" and ns.replica_ip == "10.1.2.3"


def test_rbac_grants_what_the_client_asks_and_no_more() -> None:
    """The requests cloudstream/kube makes: configmap get/create/update (tunnelport.py), list+watch
    with a metadata.name selector (watch.py), PATCH nodes/<n>/status (node_port.py)."""
    role, cluster_role = _one("Role"), _one("ClusterRole")
    assert role["metadata"]["namespace"] == NAMESPACE
    granted = {(r, v, tuple(rule.get("resourceNames", ()))) for rule in role["rules"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {("configmaps", "get", (CONFIGMAP,)), ("configmaps", "update", (CONFIGMAP,)),
                       ("configmaps", "create", ()), ("configmaps", "list", ()), ("configmaps", "watch", ())}
    assert cluster_role["rules"] == [{"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]}]
    account = _one("ServiceAccount")["metadata"]["name"]
    assert _one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        assert [s["name"] for s in _one(kind)["subjects"]] == [account]
