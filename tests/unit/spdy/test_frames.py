"""SPDY/3.1 frames: golden bytes from the draft's layouts, header blocks, the zlib dictionary."""

from __future__ import annotations

import zlib

import pytest

from streamproto.spdy import (
    DICTIONARY,
    DICTIONARY_ID,
    HeaderCompressor,
    HeaderDecompressor,
    RstStatus,
    Role,
    Session,
    decode_header_block,
    encode_header_block,
)
from streamproto.tunnel.errors import FrameError, LimitExceeded


def test_dictionary_is_the_drafts() -> None:
    # zlib's FDICT id is the dictionary's Adler-32: every SPDY/3 first header block carries it
    assert zlib.adler32(DICTIONARY) == DICTIONARY_ID
    assert len(DICTIONARY) == 1423
    assert DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


def test_first_header_block_names_the_dictionary() -> None:
    block = HeaderCompressor().compress([("streamtype", "error")])
    # CMF 0x78, FLG with FDICT and level 9 (as Go's zlib.BestCompression), then the dict id
    assert block[:2] == b"\x78\xf9" and block[2:6] == DICTIONARY_ID.to_bytes(4, "big")
    assert block.endswith(b"\x00\x00\xff\xff")  # sync flush: the peer can inflate it at once


def test_header_block_layout() -> None:
    raw = encode_header_block([("Port", "80"), ("streamtype", "data"), ("port", "81")])
    assert raw == (b"\x00\x00\x00\x02" b"\x00\x00\x00\x04port" b"\x00\x00\x00\x0580\x0081"
                   b"\x00\x00\x00\x0astreamtype" b"\x00\x00\x00\x04data")
    assert decode_header_block(raw) == (("port", "80"), ("port", "81"), ("streamtype", "data"))


@pytest.mark.parametrize("raw, why", [
    (b"\x00\x00\x00", "shorter"),
    (b"\x00\x00\x00\x01\x00\x00\x00\x01A\x00\x00\x00\x00", "lower case"),
    (b"\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x00\x00", "twice"),
    (b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00", "empty"),
    (b"\x00\x00\x00\x01\x00\x00\x00\x09a\x00\x00\x00\x00", "overruns"),
    (b"\xff\xff\xff\xff", "claims"),
    (b"\x00\x00\x00\x00junk", "after the last"),
])
def test_malformed_header_blocks(raw: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        decode_header_block(raw)


def test_contexts_are_shared_across_blocks() -> None:
    out, inp = HeaderCompressor(), HeaderDecompressor()
    first = out.compress([("streamtype", "stdout"), ("port", "8080")])
    second = out.compress([("streamtype", "stdout"), ("port", "8080")])
    assert len(second) < len(first)  # the second refers back into the first
    assert inp.decompress(first) == inp.decompress(second) == (("streamtype", "stdout"), ("port", "8080"))
    with pytest.raises(FrameError):
        HeaderDecompressor().decompress(second)  # alone it does not inflate


def test_zlib_bomb_stops_at_the_limit() -> None:
    bomb = HeaderCompressor().compress([("x", "a" * 1_000_000)])
    assert len(bomb) < 4000
    with pytest.raises(LimitExceeded):
        HeaderDecompressor(max_size=64 * 1024).decompress(bomb)


def _frames(session: Session) -> bytes:
    return session.data_to_send()


def test_golden_control_frames() -> None:
    s = Session(Role.CLIENT)
    assert s.ping() == 1
    assert _frames(s) == bytes.fromhex("80030006 00000004 00000001")
    s2 = Session(Role.SERVER)
    assert s2.ping() == 2
    assert _frames(s2) == bytes.fromhex("80030006 00000004 00000002")
    sid = s.open_stream([("streamtype", "error")])
    frame = _frames(s)
    assert frame[:4] == bytes.fromhex("80030001") and frame[4] == 0 and int.from_bytes(frame[5:8], "big") == len(frame) - 8
    assert frame[8:18] == bytes.fromhex("00000001 00000000 0000")  # id 1, no association, priority 0, slot 0
    s.reset(sid, RstStatus.CANCEL)
    assert _frames(s) == bytes.fromhex("80030003 00000008 00000001 00000005")
    s.send_settings({7: 65536})
    assert _frames(s) == bytes.fromhex("80030004 0000000c 00000001 00000007 00010000")
    s.goaway()
    assert _frames(s) == bytes.fromhex("80030007 00000008 00000000 00000000")


def test_golden_data_frames() -> None:
    c, s = Session(Role.CLIENT), Session(Role.SERVER)
    sid = c.open_stream([("streamtype", "stdin")])
    s.receive_data(c.data_to_send())
    c.send_data(sid, b"hi")
    assert c.data_to_send() == bytes.fromhex("00000001 00000002") + b"hi"
    c.end_stream(sid)  # Go's Stream.Close: an empty DATA frame with FIN
    assert c.data_to_send() == bytes.fromhex("00000001 01000000")
    s.reply(sid)
    s.consumed(sid, 40000)  # half the 64 KiB window: credit goes back, session first
    out = s.data_to_send()
    assert out.endswith(bytes.fromhex("80030009 00000008 00000000 00009c40 80030009 00000008 00000001 00009c40"))


def test_spdy_core_imports_without_io_modules() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys\n"
            "for name in ('asyncio', 'socket', 'ssl', 'grpc', 'selectors'):\n"
            "    sys.modules[name] = None\n"
            "from streamproto.spdy import Session, Role\n"
            "print('ok')\n")
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
