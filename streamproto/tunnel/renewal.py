"""Edge certificate renewal over the tunnel (the ``renew`` feature), sans I/O.

Only after both sides announced ``renew`` at dial time (a Go peer never does: a released Go
edge exits on any type >= 7, a Go cloud would log and drop it). The connect ID carries a
request number the edge picks (not a stream: no stream state, no REMOVE_CONNECT); the cloud
echoes it, so the edge never takes a late answer for a newer request.

::

    RENEW_REQUEST (66)  edge -> cloud   version(1) ‖ CSR (PKCS#10, DER)
    RENEW_ANSWER  (67)  cloud -> edge   version(1) ‖ status(1) ‖ uvarint(retry after, s) ‖ body

    body: OK -> the certificate chain, PEM, leaf first; otherwise a UTF-8 reason that says
    what is wrong and how to fix it.

Sizes are bounded on both sides: a CSR for one node (an ECDSA key, a few IP SANs) is about
400 bytes, an RSA-4096 one under 2 KiB; a chain of a few certificates is a few KiB.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import FrameError
from .varint import encode_uvarint, read_uvarint

__all__ = [
    "MAX_CHAIN",
    "MAX_CSR",
    "MAX_REASON",
    "RENEWAL_VERSION",
    "RenewalAnswer",
    "RenewalStatus",
    "decode_answer",
    "decode_request",
    "encode_answer",
    "encode_request",
]

RENEWAL_VERSION = 1
MAX_CSR = 8 * 1024
"""Largest CSR either side handles, bytes of DER."""
MAX_CHAIN = 32 * 1024
"""Largest answer chain, bytes of PEM."""
MAX_REASON = 1024
"""Longest refusal reason, bytes of UTF-8 (longer ones are cut by the encoder)."""
MAX_RETRY_AFTER = 7 * 24 * 3600
"""Seconds: a larger retry-after is clamped (a peer cannot park an edge for years)."""


class RenewalStatus(enum.IntEnum):
    OK = 0
    REFUSED = 1
    """The policy said no: CN, IP SANs, subject or key do not fit the tunnel's identity."""
    BAD_REQUEST = 2
    """Not a usable CSR: unparsable, bad signature, unsupported key, too big."""
    UNAVAILABLE = 3
    """The cloud cannot sign now (its CA key failed, or no certificate for the tunnel)."""
    RATE_LIMITED = 4
    """Too many requests for this node; ``retry_after`` says when to ask again."""


@dataclass(frozen=True, slots=True)
class RenewalAnswer:
    status: RenewalStatus
    chain_pem: bytes = b""
    """OK: the new certificate, then the CA(s) that signed it, PEM."""
    reason: str = ""
    """Not OK: what went wrong and how to fix it."""
    retry_after: int = 0
    """Seconds before asking again (RATE_LIMITED; 0 elsewhere)."""

    def __post_init__(self) -> None:
        if (self.status is RenewalStatus.OK) != bool(self.chain_pem):
            raise ValueError("an OK answer carries a chain and only an OK answer does")


def encode_request(csr_der: bytes) -> bytes:
    if not 0 < len(csr_der) <= MAX_CSR:
        raise ValueError(f"a CSR must be 1..{MAX_CSR} bytes, not {len(csr_der)}")
    return bytes((RENEWAL_VERSION,)) + csr_der


def decode_request(payload: bytes | memoryview) -> bytes:
    """The CSR's DER (not parsed here: that is the signer's job)."""
    if len(payload) < 2:
        raise FrameError("RENEW_REQUEST without a CSR")
    if payload[0] != RENEWAL_VERSION:
        raise FrameError(f"RENEW_REQUEST version {payload[0]}, this side speaks {RENEWAL_VERSION}")
    if len(payload) - 1 > MAX_CSR:
        raise FrameError(f"RENEW_REQUEST of {len(payload) - 1} bytes exceeds {MAX_CSR}")
    return bytes(payload[1:])


def encode_answer(answer: RenewalAnswer) -> bytes:
    if answer.status is RenewalStatus.OK:
        if len(answer.chain_pem) > MAX_CHAIN:
            raise ValueError(f"a chain of {len(answer.chain_pem)} bytes exceeds {MAX_CHAIN}")
        body = answer.chain_pem
    else:
        body = answer.reason.encode("utf-8")[:MAX_REASON]
    retry = min(max(0, int(answer.retry_after)), MAX_RETRY_AFTER)
    return bytes((RENEWAL_VERSION, int(answer.status))) + encode_uvarint(retry) + body


def decode_answer(payload: bytes | memoryview) -> RenewalAnswer:
    if len(payload) < 3:
        raise FrameError("RENEW_ANSWER shorter than its header")
    if payload[0] != RENEWAL_VERSION:
        raise FrameError(f"RENEW_ANSWER version {payload[0]}, this side speaks {RENEWAL_VERSION}")
    try:
        status = RenewalStatus(payload[1])
    except ValueError:
        raise FrameError(f"RENEW_ANSWER with unknown status {payload[1]}") from None
    retry, pos = read_uvarint(payload, 2)
    body = bytes(payload[pos:])
    if status is RenewalStatus.OK:
        if not body or len(body) > MAX_CHAIN:
            raise FrameError(f"RENEW_ANSWER OK with a chain of {len(body)} bytes (1..{MAX_CHAIN})")
        return RenewalAnswer(status, chain_pem=body)
    if len(body) > MAX_REASON:
        raise FrameError(f"RENEW_ANSWER reason of {len(body)} bytes exceeds {MAX_REASON}")
    # A reason cut inside a UTF-8 sequence by the encoder's limit still decodes.
    return RenewalAnswer(status, reason=body.decode("utf-8", "replace"), retry_after=min(retry, MAX_RETRY_AFTER))
