from __future__ import annotations

from pathlib import Path

import pytest

from certs import Layout, init_lab, issue_client_cert, create_ca, write_pem

NODES = ["edge-1", "edge-2"]


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """A streamcerts lab: tunnel CA, stream CA, server certs, edge certs, API-server client cert."""
    layout = init_lab(tmp_path_factory.mktemp("pki"), NODES)
    # Extra identities for the refusal tests.
    ca_cert, ca_key = create_ca("KubeEdge")
    stranger = layout.root / "stranger"
    cert, key = issue_client_cert(ca_cert, ca_key, "kube-apiserver-kubelet-client", ["system:masters"])
    write_pem(stranger / "client.crt", cert, key)
    write_pem(stranger / "client.pem", cert)
    write_pem_key(stranger / "client.key", key)
    return layout


def write_pem_key(path: Path, key: object) -> None:
    from cryptography.hazmat.primitives import serialization

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
