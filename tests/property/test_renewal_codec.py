"""Hypothesis: the renewal codec round-trips every valid message and rejects anything else
with FrameError only (never another exception, never a value outside its bounds)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamproto.tunnel import FrameError, RenewalAnswer, RenewalStatus
from streamproto.tunnel.renewal import (
    MAX_CHAIN,
    MAX_CSR,
    MAX_REASON,
    MAX_RETRY_AFTER,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
)

errors = st.sampled_from([s for s in RenewalStatus if s is not RenewalStatus.OK])
answers = st.one_of(
    st.builds(lambda chain: RenewalAnswer(RenewalStatus.OK, chain_pem=chain), st.binary(min_size=1, max_size=2048)),
    st.builds(
        lambda status, reason, retry: RenewalAnswer(status, reason=reason, retry_after=retry),
        errors, st.text(max_size=200), st.integers(0, MAX_RETRY_AFTER),
    ),
)


@given(st.binary(min_size=1, max_size=MAX_CSR))
def test_request_round_trip(csr: bytes) -> None:
    assert decode_request(encode_request(csr)) == csr


@given(answers)
def test_answer_round_trip(answer: RenewalAnswer) -> None:
    assert decode_answer(encode_answer(answer)) == answer


@given(st.binary(max_size=MAX_CSR + 16))
def test_any_request_bytes(data: bytes) -> None:
    try:
        csr = decode_request(data)
    except FrameError:
        return
    assert 0 < len(csr) <= MAX_CSR and data[0] == 1


@given(st.binary(max_size=MAX_CHAIN + 16) | st.builds(lambda b: b"\x01" + b, st.binary(max_size=64)))
def test_any_answer_bytes(data: bytes) -> None:
    try:
        answer = decode_answer(data)
    except FrameError:
        return
    assert 0 <= answer.retry_after <= MAX_RETRY_AFTER
    if answer.status is RenewalStatus.OK:
        assert 0 < len(answer.chain_pem) <= MAX_CHAIN and not answer.reason
    else:
        assert not answer.chain_pem and len(answer.reason) <= MAX_REASON
