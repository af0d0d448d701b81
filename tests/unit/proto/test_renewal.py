"""The renewal messages (``renew`` feature): codec examples and the mux's handling of them."""

from __future__ import annotations

import pytest

from streamproto.tunnel import (
    Feature,
    FrameError,
    MessageIgnored,
    MessageType,
    Mux,
    ProtocolError,
    ProtocolViolation,
    RenewalAnswer,
    RenewalAnswered,
    RenewalRequested,
    RenewalStatus,
    Role,
    encode,
)
from streamproto.tunnel.renewal import (
    MAX_CHAIN,
    MAX_CSR,
    MAX_REASON,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
)

RENEW = frozenset({Feature.RENEW})


def test_request_bytes() -> None:
    assert encode_request(b"\x30\x82") == b"\x01\x30\x82"
    assert decode_request(b"\x01\x30\x82") == b"\x30\x82"


def test_answer_bytes() -> None:
    ok = RenewalAnswer(RenewalStatus.OK, chain_pem=b"-----BEGIN CERTIFICATE-----\n")
    assert encode_answer(ok) == b"\x01\x00\x00-----BEGIN CERTIFICATE-----\n"
    limited = RenewalAnswer(RenewalStatus.RATE_LIMITED, reason="later", retry_after=300)
    assert encode_answer(limited) == b"\x01\x04\xac\x02later"
    assert decode_answer(encode_answer(limited)) == limited


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "without a CSR"),
        (b"\x01", "without a CSR"),
        (b"\x02\x30", "version 2"),
        (b"\x01" + b"x" * (MAX_CSR + 1), "exceeds"),
    ],
)
def test_bad_requests(payload: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_request(payload)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x01\x00", "shorter"),
        (b"\x02\x00\x00x", "version 2"),
        (b"\x01\x09\x00x", "unknown status 9"),
        (b"\x01\x00\x00", "chain of 0 bytes"),
        (b"\x01\x00\x00" + b"x" * (MAX_CHAIN + 1), "chain of"),
        (b"\x01\x01\x00" + b"x" * (MAX_REASON + 1), "reason of"),
        (b"\x01\x01\x80", "EOF"),
    ],
)
def test_bad_answers(payload: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_answer(payload)


def test_encoder_bounds() -> None:
    with pytest.raises(ValueError):
        encode_request(b"")
    with pytest.raises(ValueError):
        encode_request(b"x" * (MAX_CSR + 1))
    with pytest.raises(ValueError):
        RenewalAnswer(RenewalStatus.OK)  # an OK answer needs a chain
    with pytest.raises(ValueError):
        RenewalAnswer(RenewalStatus.REFUSED, chain_pem=b"x")
    long = RenewalAnswer(RenewalStatus.REFUSED, reason="é" * MAX_REASON, retry_after=10**9)
    got = decode_answer(encode_answer(long))
    assert len(got.reason.encode()) <= MAX_REASON + 3 and got.retry_after == 7 * 24 * 3600


def test_mux_carries_a_renewal_both_ways() -> None:
    cloud = Mux(Role.CLOUD, features=RENEW, next_id=iter(range(1, 100)).__next__)
    edge = Mux(Role.EDGE, features=RENEW)
    cloud.receive_message(edge.renewal_request(3, b"csr-der"))
    assert cloud.events_received() == [RenewalRequested(3, b"csr-der")]
    answer = RenewalAnswer(RenewalStatus.REFUSED, reason="no")
    edge.receive_message(cloud.renewal_answer(3, answer))
    assert edge.events_received() == [RenewalAnswered(3, answer)]
    assert not cloud.streams and not edge.streams  # not a stream: nothing to close


def test_mux_ignores_renewal_unless_negotiated() -> None:
    """A peer without ``renew`` (a Go one, or ours without a CA key) never gets a renewal
    message from us, and one from it is ignored as an unknown type."""
    cloud = Mux(Role.CLOUD, features=frozenset({Feature.FLOW}), next_id=iter(range(1, 100)).__next__)
    edge = Mux(Role.EDGE, features=frozenset())
    with pytest.raises(ProtocolError):
        edge.renewal_request(1, b"csr")
    with pytest.raises(ProtocolError):
        cloud.renewal_answer(1, RenewalAnswer(RenewalStatus.REFUSED))
    cloud.receive_message(encode(1, MessageType.RENEW_REQUEST, encode_request(b"csr")))
    [event] = cloud.events_received()
    assert isinstance(event, MessageIgnored) and event.kind == MessageType.RENEW_REQUEST


def test_mux_ignores_the_wrong_direction_and_reports_garbage() -> None:
    cloud = Mux(Role.CLOUD, features=RENEW, next_id=iter(range(1, 100)).__next__)
    edge = Mux(Role.EDGE, features=RENEW)
    cloud.receive_message(encode(1, MessageType.RENEW_ANSWER, b"\x01\x01\x00no"))
    edge.receive_message(encode(1, MessageType.RENEW_REQUEST, b"\x01csr"))
    for mux in (cloud, edge):
        [event] = mux.events_received()
        assert isinstance(event, MessageIgnored), event
    cloud.receive_message(encode(1, MessageType.RENEW_REQUEST, b"\x07csr"))
    [event] = cloud.events_received()
    assert isinstance(event, ProtocolViolation) and "version 7" in str(event.error)


def test_renewal_types_are_extensions() -> None:
    assert MessageType.RENEW_REQUEST.is_extension and MessageType.RENEW_ANSWER.is_extension
    assert not MessageType.RENEW_REQUEST.is_connect
