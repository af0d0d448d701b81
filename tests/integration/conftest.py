from __future__ import annotations

import pytest

from certs import Layout, create_ca, init_lab, issue_client_cert, write_pem

NODES = ["edge-1", "edge-2", "edge-3"]


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """A streamcerts lab, plus identities the refusal tests need."""
    layout = init_lab(tmp_path_factory.mktemp("pki"), NODES)
    root = layout.root
    # An API-server-looking client cert from a CA cloudstream does not trust.
    other_ca = create_ca("kubernetes")
    write_pem(root / "stranger/client.crt", *issue_client_cert(*other_ca, "kube-apiserver-kubelet-client", ["system:masters"]))
    # A trusted CA but an identity that may not use the kubelet API.
    from certs import load_cert, load_key

    stream_ca = load_cert(layout.stream_ca), load_key(layout.stream_ca_key)
    write_pem(root / "nobody/client.crt", *issue_client_cert(*stream_ca, "system:anonymous-user", ["developers"]))
    # An edge certificate for edge-1 used to claim edge-2.
    return layout
