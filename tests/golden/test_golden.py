"""Byte-exact vectors from KubeEdge's own Go encoder and how Go peers react to bad input.

Source: ``../shared/spec/kubeedge-golden.json`` (KubeEdge commit 16cd8548).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from streamproto.tunnel import (
    ConnectRequest,
    FrameError,
    MessageIgnored,
    MessageType,
    Mux,
    ProtocolViolation,
    Role,
    StreamOpened,
    decode,
    encode,
)
from streamproto.tunnel.varint import encode_uvarint, read_uvarint
from tests.conftest import SHARED

GOLDEN_PATH = SHARED / "spec" / "kubeedge-golden.json"
if not GOLDEN_PATH.exists():
    pytest.skip(f"golden vectors not found at {GOLDEN_PATH}", allow_module_level=True)
GOLDEN = json.loads(GOLDEN_PATH.read_text())


@pytest.mark.parametrize("case", GOLDEN["uvarint"], ids=lambda c: c["value_str"])
def test_uvarint(case: dict) -> None:
    value = int(case["value_str"])
    assert encode_uvarint(value).hex() == case["hex"]
    assert read_uvarint(bytes.fromhex(case["hex"]), 0) == (value, case["len"])


def test_every_go_message_round_trips() -> None:
    for case in GOLDEN["messages"]:
        cid, kind, data = int(case["connect_id_str"]), case["type"], bytes.fromhex(case["data_hex"])
        assert encode(cid, kind, data).hex() == case["hex"]
        message = decode(bytes.fromhex(case["hex"]))
        assert (message.connect_id, int(message.kind), bytes(message.data)) == (cid, kind, data)


def test_fixed_messages() -> None:
    fixed = GOLDEN["fixed_messages"]
    assert encode(300, MessageType.DATA, b"hi\n").hex() == fixed["DATA_id300_hi_nl"]
    assert encode(1, MessageType.REMOVE_CONNECT).hex() == fixed["REMOVE_CONNECT_id1"]
    assert encode(0, MessageType.CLOSE_CONNECT, b"failed to Update KubeletEndpoint Port").hex() == fixed[
        "CLOSE_CONNECT_update_failed"
    ]


@pytest.mark.parametrize("case", GOLDEN["decode"], ids=lambda c: c["name"])
def test_decode_like_go(case: dict) -> None:
    if case["name"] == "data_over_1MiB_truncated":
        raw = b"\x01\x03" + b"A" * 1048586
    else:
        raw = bytes.fromhex(case["input_hex"])
    if case["result"] == "error":
        with pytest.raises(FrameError):
            decode(raw)
        return
    message = decode(raw)
    assert message.connect_id == case["connect_id"]
    assert int(message.kind) == case["type"]
    if "data_hex" in case:
        assert bytes(message.data).hex() == case["data_hex"]
    # Go cuts data past 1 MiB; we never send that much (max_payload < 1 MiB), and accept it.
    assert len(message.data) >= case["data_len"]


@pytest.mark.parametrize("case", GOLDEN["connect_messages"], ids=lambda c: c["name"])
def test_connect_json_is_byte_exact(case: dict) -> None:
    url = urlsplit(case["api_server_request_uri"])
    headers = tuple((k, v) for k, vs in (case["api_server_request_headers"] or {}).items() for v in vs)
    method = case["api_server_request_method"] if case["type"] in (1, 6) else None
    request = ConnectRequest(case["connect_id"], url.path, url.query, headers, method)
    assert request.to_json().decode() == case["json"]
    assert encode(case["connect_id"], case["type"], request.to_json()).hex() == case["message_hex"]
    parsed = ConnectRequest.from_json(case["connect_id"], case["json"].encode())
    assert parsed.target == request.target
    assert parsed.headers == headers
    assert parsed.method == method
    assert case["edge_target_url"] == f"http://{parsed.host}{parsed.target}"


@pytest.mark.parametrize("case", GOLDEN["edge_session"], ids=lambda c: c["name"])
def test_our_edge_survives_what_go_edges_receive(case: dict) -> None:
    """Where a Go edge ends its session on a malformed message, ours drops the message only."""
    mux = Mux(Role.EDGE)
    mux.receive_message(bytes.fromhex(case["payload_hex"]))
    events = mux.events_received()
    assert len(events) == 1
    if case["name"] in ("empty_text_message", "truncated_varint", "connectid_only", "overlong_varint"):
        assert isinstance(events[0], ProtocolViolation)
    elif case["name"] == "logs_connect_bad_json":
        assert isinstance(events[0], ProtocolViolation) and events[0].connect_id == 7
    elif case["name"] == "logs_connect_unreachable_edged":
        assert isinstance(events[0], StreamOpened) and events[0].request.path == "/containerLogs/a/b/c"
    elif case["name"].startswith("close_connect"):
        assert type(events[0]).__name__ == "CloseRequested"
    else:  # unknown ids and types: ignored, and never a crash (released Go edges panic on type 7)
        assert isinstance(events[0], MessageIgnored)


@pytest.mark.parametrize("case", GOLDEN["cloud_session"], ids=lambda c: c["name"])
def test_our_cloud_ignores_what_go_clouds_ignore(case: dict) -> None:
    mux = Mux(Role.CLOUD, next_id=iter(range(1, 100)).__next__)
    mux.receive_message(bytes.fromhex(case["payload_hex"]))
    (event,) = mux.events_received()
    if case["tunnel_closed_by_cloud"] and case["ws_frame"] == "text":
        assert isinstance(event, ProtocolViolation)  # reported, dropped; the tunnel lives on
    elif case["name"] == "close_connect_from_edge":
        assert type(event).__name__ == "CloseRequested"
    elif case["ws_frame"] == "text":
        assert isinstance(event, MessageIgnored)
