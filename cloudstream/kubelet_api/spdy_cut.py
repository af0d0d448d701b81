"""Ending a SPDY exec/attach that its tunnel cut: a failure on the error stream, FINs, then a close.

The kubelet ends a failed exec by writing on the stream the client opened with ``streamtype:
error`` (v4/v5: a ``metav1.Status`` JSON; v1-v3: the message as text) and closing it; kubectl
(and kube-apiserver's StreamTranslator, which turns it into the WebSocket's channel-3 Status)
then reports that error instead of a bare close. ``cut_status`` does the same for WebSocket.

Sans-I/O, both directions of the raw relay:
- client -> edge (``observe``): the client's first frames, until the streams are set up. Their
  header blocks share one zlib context per direction, so every SYN_STREAM/HEADERS block is
  inflated in order (bounded) to learn which stream id is ``error``, ``stdout``, ``stderr``.
  Watching stops at the client's first DATA frame, after ``_MAX_OBSERVED`` bytes, or on
  anything it cannot parse (then nothing will be added at the cut).
- edge -> client (``feed``): the 101 (its ``X-Stream-Protocol-Version``) and each frame's
  boundaries: which streams the edge replied to, and which it already ended (FIN, RST_STREAM,
  GOAWAY). One 8-12 byte header per frame, nothing copied.
``ending(message)`` is empty unless the cut fell between two frames and the edge had replied to
the error stream without ending it: writing a DATA frame needs no compression context, but a
SYN_REPLY of our own would (the edge's), so an unreplied stream cannot be written to.
"""

from __future__ import annotations

from streamproto.kube_status import status_json
from streamproto.spdy.frames import DATA_FIN, FLAG_FIN, FrameType, HeaderDecompressor, data_header
from streamproto.tunnel.errors import FrameError, LimitExceeded

__all__ = ["SpdyCut", "is_spdy_upgrade"]

_MAX_HEAD = 16 * 1024
_MAX_OBSERVED = 64 * 1024
"""Client bytes watched at most: kubectl's SYN_STREAMs are a few hundred bytes."""
_MAX_CLIENT_FRAME = 16 * 1024
"""A client control frame larger than this while watching: stop watching (no ending then)."""
_STATUS_PROTOCOLS = frozenset({"v4.channel.k8s.io", "v5.channel.k8s.io"})
_HEAD, _FRAMES, _OFF = 0, 1, 2


def is_spdy_upgrade(upgrade: str | None) -> bool:
    return upgrade is not None and upgrade.strip().lower().startswith("spdy/")


class SpdyCut:
    __slots__ = ("_state", "_head", "_protocol", "_partial", "_remaining", "_replied", "_ended", "_goaway",
                 "_client", "_observed", "_inflate", "_kinds")

    def __init__(self) -> None:
        self._state = _HEAD
        self._head = b""
        self._protocol = "channel.k8s.io"
        self._partial = b""  # an edge frame header (8 bytes, 12 for the control frames we read) split across chunks
        self._remaining = 0  # payload bytes of the current edge frame still to come
        self._replied: set[int] = set()
        self._ended: set[int] = set()
        self._goaway = False
        self._client: bytearray | None = bytearray()  # None: no longer watching the client
        self._observed = 0
        self._inflate = HeaderDecompressor(max_size=16 * 1024)
        self._kinds: dict[str, int] = {}
        """streamtype -> stream id, from the client's SYN_STREAMs."""

    # ------------------------------------------------------------------ client -> edge

    @property
    def watching(self) -> bool:
        return self._client is not None

    def observe(self, data: bytes | memoryview) -> bool:
        """Client bytes as relayed to the edge; False once nothing more needs to be seen."""
        buf = self._client
        if buf is None:
            return False
        self._observed += len(data)
        if self._observed > _MAX_OBSERVED:
            self._client = None
            return False
        buf += data
        pos = 0
        try:
            while len(buf) - pos >= 8:
                first = int.from_bytes(buf[pos : pos + 4], "big")
                flags_length = int.from_bytes(buf[pos + 4 : pos + 8], "big")
                length = flags_length & 0xFFFFFF
                if not first & 0x80000000:  # DATA: the streams are set up
                    self._client = None
                    return False
                if length > _MAX_CLIENT_FRAME:
                    raise LimitExceeded("client control frame too large to watch")
                if len(buf) - pos < 8 + length:
                    break
                kind = first & 0xFFFF
                payload = bytes(buf[pos + 8 : pos + 8 + length])
                pos += 8 + length
                if kind == FrameType.SYN_STREAM and length >= 10:
                    sid = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                    headers = self._inflate.decompress(payload[10:])
                    kind_name = next((v for k, v in headers if k == "streamtype"), None)
                    if kind_name is not None and kind_name not in self._kinds:
                        self._kinds[kind_name] = sid
                elif kind == FrameType.HEADERS and length >= 4:
                    self._inflate.decompress(payload[4:])  # keeps the shared zlib context in step
        except (FrameError, LimitExceeded):
            self._kinds.clear()
            self._client = None
            return False
        del buf[:pos]
        return True

    # ------------------------------------------------------------------ edge -> client

    def feed(self, data: bytes | memoryview) -> None:
        if self._state == _OFF:
            return
        if self._state == _HEAD:
            self._head += bytes(data)
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD:
                    self._state = _OFF
                return
            head, rest = self._head[:end], self._head[end + 4 :]
            self._head = b""
            if not self._parse_head(head):
                self._state = _OFF
                return
            self._state = _FRAMES
            data = rest
        self._frames(data)

    def _parse_head(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        parts = lines[0].split()
        if len(parts) < 2 or parts[1] != b"101":
            return False
        upgrade = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"upgrade":
                upgrade = value.strip().decode("latin-1")
            elif key == b"x-stream-protocol-version":
                self._protocol = value.strip().decode("latin-1")
        return is_spdy_upgrade(upgrade)

    def _frames(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self._remaining >= n and not self._partial:
            self._remaining -= n
            return
        view = memoryview(self._partial + bytes(data) if self._partial else data)[self._remaining :]
        self._partial = b""
        self._remaining = 0
        i, n = 0, len(view)
        while i < n:
            if n - i < 8:
                self._partial = bytes(view[i:])
                return
            first = int.from_bytes(view[i : i + 4], "big")
            flags = view[i + 4]
            length = int.from_bytes(view[i + 5 : i + 8], "big")
            if first & 0x80000000:
                kind = first & 0xFFFF
                if kind in (FrameType.SYN_REPLY, FrameType.RST_STREAM) and length >= 4:
                    if n - i < 12:
                        self._partial = bytes(view[i:])
                        return
                    sid = int.from_bytes(view[i + 8 : i + 12], "big") & 0x7FFFFFFF
                    if kind == FrameType.SYN_REPLY:
                        self._replied.add(sid)
                        if flags & FLAG_FIN:
                            self._ended.add(sid)
                    else:
                        self._ended.add(sid)
                elif kind == FrameType.GOAWAY:
                    self._goaway = True
            elif flags & DATA_FIN:
                self._ended.add(first & 0x7FFFFFFF)
            i += 8 + length
        self._remaining = i - n

    # ------------------------------------------------------------------ the cut

    def ending(self, message: str) -> bytes:
        """The frames to write after a cut: the failure on the error stream with FIN, then an empty
        FIN on stdout/stderr so the client's copy loops end and it reads the error."""
        if self._state != _FRAMES or self._remaining or self._partial or self._goaway:
            return b""
        error = self._kinds.get("error")
        if error is None or error not in self._replied or error in self._ended:
            return b""
        if self._protocol in _STATUS_PROTOCOLS:
            payload = status_json(500, message).rstrip(b"\n")
        else:
            payload = message.encode()
        out = [data_header(error, DATA_FIN, len(payload)), payload]
        for kind in ("stdout", "stderr"):
            sid = self._kinds.get(kind)
            if sid is not None and sid in self._replied and sid not in self._ended:
                out.append(data_header(sid, DATA_FIN, 0))
        return b"".join(out)
