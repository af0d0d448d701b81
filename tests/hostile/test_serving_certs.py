"""Per-node serving certificates on 10003 (issue 19), against a real cloudstream process.

A client that verifies as kube-apiserver does with ``--kubelet-certificate-authority`` (the
serving CA pinned, the dialled node IP checked, no SNI since it dials an IP, its kubelet-client
certificate) must succeed against a node that joined after cloudstream started, and fail the
same verification when cloudstream runs without the feature (so the test can fail). The node IP
reaches cloudstream as the local address (no DNAT, 127.0.1.x on loopback, as the other hostile
tests). An address that is no node's gets the default stream certificate, never a leaf; a
request for a node IP nobody holds must not mint anything."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from streamcerts import Layout, create_ca, init_lab, load_cert, write_pem
from tests.conftest import MS

from .conftest import NODE_IPS, NODES, Fleet

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

VICTIM_IP = NODE_IPS["victim"]
NOBODY_IP = "127.0.1.9"


@pytest.fixture
def hostile_pki(tmp_path, request: pytest.FixtureRequest) -> Layout:
    """A fresh lab plus a serving CA; with ``request.param`` True cloudstream signs per-node
    leaves with it (the fleet fixture reads the ``cloud_args`` marker added here)."""
    layout = init_lab(tmp_path / "pki", NODES)
    ca_cert, ca_key = create_ca("kubelet-serving-ca")
    write_pem(layout.root / "serving/ca.crt", ca_cert, ca_key, layout.root / "serving/ca.key")
    args = ["--stream-address", "0.0.0.0"]
    if request.param:
        args += ["--serving-ca-cert-file", str(layout.root / "serving/ca.crt"),
                 "--serving-ca-key-file", str(layout.root / "serving/ca.key")]
    request.node.add_marker(pytest.mark.cloud_args(*args))
    return layout


def as_apiserver(layout: Layout, ca: str = "serving/ca.crt") -> ssl.SSLContext:
    """kube-apiserver's kubelet client with --kubelet-certificate-authority: CA pinned, hostname checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED on
    ctx.load_verify_locations(cafile=str(layout.root / ca))
    ctx.load_cert_chain(str(layout.apiserver_client_cert), str(layout.apiserver_client_key))
    return ctx


async def get(ip: str, port: int, tls: ssl.SSLContext, path: str = "/containerLogs/default/demo/app?tailLines=3"
              ) -> tuple[int, bytes, x509.Certificate]:
    """One request to ``ip``:port as the API server sends it (by IP, so no SNI)."""
    reader, writer = await asyncio.open_connection(ip, port, ssl=tls, server_hostname=ip)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {ip}:10250\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(10 * MS):
            data = await reader.read(-1)
        return int(data.split(b" ", 2)[1]), data, x509.load_der_x509_certificate(der)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


@pytest.mark.parametrize("hostile_pki", [True], indirect=True, ids=["serving-ca"])
async def test_a_node_that_joined_later_is_verified_by_its_ip(fleet: Fleet) -> None:
    await fleet.edge("victim")  # after cloudstream started: no SAN list anywhere named it
    status, body, cert = await get(VICTIM_IP, fleet.stream_port, as_apiserver(fleet.layout))
    assert status == 200, body[:300]
    assert b"default/demo/app line" in body
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:victim"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == [VICTIM_IP]
    # a second connection gets the cached leaf: one issue, same serial
    _, _, again = await get(VICTIM_IP, fleet.stream_port, as_apiserver(fleet.layout))
    assert again.serial_number == cert.serial_number
    assert len(fleet.log_lines(r"serving certificate for node victim \(127\.0\.1\.1\) issued")) == 1
    # an address no node holds: the stream certificate, which the serving CA does not vouch for
    with pytest.raises(ssl.SSLCertVerificationError):
        await get(NOBODY_IP, fleet.stream_port, as_apiserver(fleet.layout))
    stream = as_apiserver(fleet.layout, "ca/streamCA.crt")
    stream.check_hostname = False
    _, _, default = await get(NOBODY_IP, fleet.stream_port, stream)
    assert default.serial_number == load_cert(fleet.layout.stream_cert).serial_number
    assert not fleet.log_lines(r"serving certificate for node \S+ \(127\.0\.1\.9\)")


@pytest.mark.parametrize("hostile_pki", [False], indirect=True, ids=["no-serving-ca"])
async def test_without_the_feature_the_same_client_fails(fleet: Fleet) -> None:
    await fleet.edge("victim")
    with pytest.raises(ssl.SSLCertVerificationError):
        await get(VICTIM_IP, fleet.stream_port, as_apiserver(fleet.layout))
