"""One SPDY/3.1 session, sans I/O: bytes in -> events, commands -> bytes out.

Theory of operation
-------------------
``receive_data`` parses frames incrementally: a control frame is buffered whole (bounded by
``max_control_frame``), a DATA frame's payload is passed on as it arrives (never buffered
here). Every command (``open_stream``, ``reply``, ``send_data`` ...) appends its frames to
``data_to_send`` at once, so header blocks leave in the order they were deflated (the zlib
context is shared by every stream in one direction).

Stream table (per stream, both roles)::

    open --we FIN--> local_closed --peer FIN--> (forgotten)
    open --peer FIN--> remote_closed --we FIN--> (forgotten)
    any --RST either way--> (forgotten)

Errors: a frame that breaks one stream gets RST_STREAM (``StreamReset(remote=False)``);
anything that desynchronises the session (bad header block, oversized control frame, data
on stream 0, a frame with the wrong version) queues GOAWAY and ends it
(``SessionTerminated``). Late frames for forgotten streams are ignored, as Go's spdystream
does; more than ``max_ignored`` of them in a row ends the session.

Flow control (3.1): every stream and the session start with a 64 KiB window per direction.
We always hand credit back with WINDOW_UPDATE as ``consumed`` is called. The peers we
serve (Go's moby/spdystream: kubectl, the API server, the kubelet, containerd) ignore
windows entirely and never send WINDOW_UPDATE, so with ``send_flow=AUTO`` our send windows
bind only once the peer showed it does flow control (a WINDOW_UPDATE or an
INITIAL_WINDOW_SIZE setting); ``STRICT`` binds from the start, ``OFF`` never.
``enforce_receive_window`` resets a stream that overruns our window (off by default for the
same reason: a Go peer would be reset on its first large write).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from streamproto.tunnel.errors import FrameError, LimitExceeded, ProtocolError, StreamClosed

from .events import (
    DataReceived,
    Event,
    FrameIgnored,
    GoAwayReceived,
    HeadersReceived,
    PingAcknowledged,
    PingReceived,
    SessionTerminated,
    SettingsReceived,
    StreamEnded,
    StreamOpened,
    StreamReplied,
    StreamReset,
    WindowUpdated,
)
from .frames import (
    CONTROL_TYPES,
    DATA_FIN,
    FLAG_FIN,
    FLAG_UNIDIRECTIONAL,
    MAX_STREAM_ID,
    VERSION,
    FrameType,
    GoAwayStatus,
    HeaderCompressor,
    HeaderDecompressor,
    Headers,
    RstStatus,
    Setting,
    control_header,
    data_header,
)

__all__ = ["DEFAULT_WINDOW", "Role", "SendFlow", "Session", "SessionConfig", "Stream"]

DEFAULT_WINDOW = 64 * 1024
_MAX_WINDOW = (1 << 31) - 1


class Role(enum.Enum):
    CLIENT = "client"
    """Opens odd stream ids (kubectl, the API server toward a kubelet)."""
    SERVER = "server"
    """Opens even ids (the kubelet / emulator side)."""


class SendFlow(enum.Enum):
    AUTO = "auto"
    STRICT = "strict"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class SessionConfig:
    max_streams: int = 1000
    """Concurrent streams the peer may open; more are refused (RST REFUSED_STREAM)."""
    max_control_frame: int = 256 * 1024
    """Longest control frame accepted (compressed header blocks included)."""
    max_header_block: int = 64 * 1024
    """Longest inflated header block."""
    max_data_frame: int = 64 * 1024
    """Our DATA frames are cut to this size."""
    initial_window: int = DEFAULT_WINDOW
    send_flow: SendFlow = SendFlow.AUTO
    enforce_receive_window: bool = False
    max_ignored: int = 10_000
    """Ignored frames in a row before the session is ended (a peer spraying junk)."""


@dataclass(slots=True)
class Stream:
    stream_id: int
    local: bool
    """We opened it."""
    headers: Headers
    replied: bool = False
    local_closed: bool = False
    remote_closed: bool = False
    send_window: int = DEFAULT_WINDOW
    recv_window: int = DEFAULT_WINDOW
    unacked: int = 0


@dataclass(slots=True)
class Session:
    role: Role
    config: SessionConfig = SessionConfig()
    streams: dict[int, Stream] = field(default_factory=dict)
    closed: bool = False
    goaway_sent: bool = False
    goaway_received: bool = False
    last_peer_stream: int = 0
    flow_enforced: bool = False
    session_send_window: int = DEFAULT_WINDOW
    session_recv_window: int = DEFAULT_WINDOW
    _session_unacked: int = 0
    _peer_initial_window: int = DEFAULT_WINDOW
    _next_stream: int = 0
    _next_ping: int = 0
    _pings: set[int] = field(default_factory=set)
    _ignored: int = 0
    _out: list[bytes] = field(default_factory=list)
    _events: list[Event] = field(default_factory=list)
    _buf: bytearray = field(default_factory=bytearray)
    _ctl: tuple[int, int, int, int] | None = None
    """(version, type, flags, length) of the control frame being buffered."""
    _data: tuple[int, int] | None = None
    """(stream id, flags) of the DATA frame whose payload is arriving."""
    _left: int = 0
    _skip: int = 0
    _deflate: HeaderCompressor = field(default_factory=HeaderCompressor)
    _inflate: HeaderDecompressor = field(default_factory=HeaderDecompressor)

    def __post_init__(self) -> None:
        client = self.role is Role.CLIENT
        self._next_stream = 1 if client else 2
        self._next_ping = 1 if client else 2
        self._inflate = HeaderDecompressor(self.config.max_header_block)
        self.flow_enforced = self.config.send_flow is SendFlow.STRICT
        self.session_recv_window = self.config.initial_window

    # ------------------------------------------------------------------ outputs

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    # ------------------------------------------------------------------ input

    @property
    def at_frame_boundary(self) -> bool:
        """No frame half-read: the next byte fed starts a frame."""
        return self._data is None and self._ctl is None and not self._skip and not self._buf

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the peer; never raises for anything the peer sent."""
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        while pos < end and not self.closed:
            if self._data is not None:
                n = min(self._left, end - pos)
                self._data_piece(bytes(view[pos : pos + n]))
                pos += n
                self._left -= n
                if self._left == 0 and self._data is not None:
                    self._data_done()
                continue
            if self._skip:
                n = min(self._skip, end - pos)
                pos += n
                self._skip -= n
                continue
            need = 8 + (self._ctl[3] if self._ctl is not None else 0)
            n = min(need - len(self._buf), end - pos)
            self._buf += view[pos : pos + n]
            pos += n
            if len(self._buf) < need:
                continue
            if self._ctl is None:
                self._frame_header()
            if self._ctl is not None and len(self._buf) == 8 + self._ctl[3]:
                version, kind, flags, length = self._ctl
                payload = bytes(self._buf[8:])
                self._buf.clear()
                self._ctl = None
                self._control(version, kind, flags, payload)

    def receive_eof(self) -> None:
        if not self.closed:
            self.closed = True
            self._events.append(SessionTerminated(GoAwayStatus.OK, "the peer closed the connection", remote=True))

    def _frame_header(self) -> None:
        word, rest = int.from_bytes(self._buf[:4], "big"), int.from_bytes(self._buf[4:8], "big")
        flags, length = rest >> 24, rest & 0xFFFFFF
        if not word & 0x80000000:
            self._buf.clear()
            sid = word & MAX_STREAM_ID
            if sid == 0:
                self._terminate(GoAwayStatus.PROTOCOL_ERROR, "DATA frame on stream 0")
                return
            self._data, self._left = (sid, flags), length
            if length == 0:
                self._data_done()
            return
        version, kind = (word >> 16) & 0x7FFF, word & 0xFFFF
        if version != VERSION:
            self._terminate(GoAwayStatus.PROTOCOL_ERROR, f"control frame of SPDY version {version}, not 3")
        elif kind not in CONTROL_TYPES:
            self._buf.clear()
            self._skip = length  # unknown control types are ignored (spec 2.2.1)
            self._ignore(0, f"unknown control frame type {kind}")
        elif length > self.config.max_control_frame:
            self._terminate(GoAwayStatus.PROTOCOL_ERROR, f"{FrameType(kind).name} of {length} bytes exceeds "
                            f"the {self.config.max_control_frame} byte limit")
        else:
            self._ctl = (version, kind, flags, length)

    # ------------------------------------------------------------------ data frames

    def _data_piece(self, piece: bytes) -> None:
        assert self._data is not None
        sid = self._data[0]
        stream = self.streams.get(sid)
        if stream is None or stream.remote_closed:
            if piece:
                self._ignore(sid, "data for a closed or unknown stream")
            return
        self._ignored = 0
        stream.recv_window -= len(piece)
        self.session_recv_window -= len(piece)
        if self.config.enforce_receive_window and (stream.recv_window < 0 or self.session_recv_window < 0):
            self._reset(sid, RstStatus.FLOW_CONTROL_ERROR, "the peer overran its flow-control window")
            return
        if piece:
            self._events.append(DataReceived(sid, piece))

    def _data_done(self) -> None:
        assert self._data is not None
        sid, flags = self._data
        self._data = None
        stream = self.streams.get(sid)
        if flags & DATA_FIN and stream is not None and not stream.remote_closed:
            self._remote_fin(stream)

    # ------------------------------------------------------------------ control frames

    def _control(self, version: int, kind: int, flags: int, payload: bytes) -> None:
        try:
            if kind == FrameType.SYN_STREAM:
                self._syn_stream(flags, payload)
            elif kind in (FrameType.SYN_REPLY, FrameType.HEADERS):
                self._reply_or_headers(kind, flags, payload)
            elif kind == FrameType.RST_STREAM:
                self._rst(payload)
            elif kind == FrameType.SETTINGS:
                self._settings(payload)
            elif kind == FrameType.PING:
                self._ping(payload)
            elif kind == FrameType.GOAWAY:
                self._goaway(payload)
            elif kind == FrameType.WINDOW_UPDATE:
                self._window_update(payload)
        except (FrameError, LimitExceeded) as exc:
            self._terminate(GoAwayStatus.PROTOCOL_ERROR, f"{FrameType(kind).name}: {exc}")

    @staticmethod
    def _expect(payload: bytes, size: int, what: str) -> None:
        if len(payload) < size:
            raise FrameError(f"{what} frame of {len(payload)} bytes, needs {size}")

    def _syn_stream(self, flags: int, payload: bytes) -> None:
        self._expect(payload, 10, "SYN_STREAM")
        sid = int.from_bytes(payload[0:4], "big") & MAX_STREAM_ID
        assoc = int.from_bytes(payload[4:8], "big") & MAX_STREAM_ID
        priority = payload[8] >> 5
        headers = self._inflate.decompress(payload[10:])  # always: keeps the zlib context in step
        peer_parity = 1 if self.role is Role.SERVER else 0
        if sid == 0:
            raise FrameError("SYN_STREAM for stream 0")
        if self.goaway_sent:
            self._ignore(sid, "SYN_STREAM after our GOAWAY")
            return
        if sid % 2 != peer_parity or sid <= self.last_peer_stream:
            self._reset(sid, RstStatus.PROTOCOL_ERROR, f"stream id {sid} is not a new id of the peer's parity")
            return
        self.last_peer_stream = sid
        peer_streams = sum(1 for s in self.streams.values() if not s.local)
        if peer_streams >= self.config.max_streams:
            self._reset(sid, RstStatus.REFUSED_STREAM, f"more than {self.config.max_streams} concurrent streams")
            return
        self._ignored = 0
        fin, uni = bool(flags & FLAG_FIN), bool(flags & FLAG_UNIDIRECTIONAL)
        stream = Stream(sid, False, headers, send_window=self._peer_initial_window,
                        recv_window=self.config.initial_window, remote_closed=fin, local_closed=uni)
        self.streams[sid] = stream
        self._events.append(StreamOpened(sid, headers, fin, assoc, priority, uni))
        if fin and uni:
            del self.streams[sid]

    def _reply_or_headers(self, kind: int, flags: int, payload: bytes) -> None:
        self._expect(payload, 4, FrameType(kind).name)
        sid = int.from_bytes(payload[0:4], "big") & MAX_STREAM_ID
        headers = self._inflate.decompress(payload[4:])
        stream = self.streams.get(sid)
        if sid == 0:
            raise FrameError(f"{FrameType(kind).name} for stream 0")
        if stream is None or stream.remote_closed:
            self._ignore(sid, f"{FrameType(kind).name} for a closed or unknown stream")
            return
        fin = bool(flags & FLAG_FIN)
        if kind == FrameType.SYN_REPLY:
            if not stream.local or stream.replied:
                self._ignore(sid, "SYN_REPLY for a stream we did not open, or a second one")
                return
            stream.replied = True
            self._events.append(StreamReplied(sid, headers, fin))
        else:
            self._events.append(HeadersReceived(sid, headers, fin))
        self._ignored = 0
        if fin:
            self._remote_fin(stream)

    def _rst(self, payload: bytes) -> None:
        self._expect(payload, 8, "RST_STREAM")
        sid = int.from_bytes(payload[0:4], "big") & MAX_STREAM_ID
        status = int.from_bytes(payload[4:8], "big")
        if self.streams.pop(sid, None) is None:
            self._ignore(sid, "RST_STREAM for a closed or unknown stream")
            return
        self._ignored = 0
        self._events.append(StreamReset(sid, status, remote=True))

    def _settings(self, payload: bytes) -> None:
        self._expect(payload, 4, "SETTINGS")
        count = int.from_bytes(payload[0:4], "big")
        if len(payload) != 4 + 8 * count:
            raise FrameError(f"SETTINGS with {count} entries in {len(payload)} bytes")
        settings = {}
        for i in range(count):
            entry = payload[4 + 8 * i : 12 + 8 * i]
            settings[int.from_bytes(entry[1:4], "big")] = int.from_bytes(entry[4:8], "big")
        window = settings.get(Setting.INITIAL_WINDOW_SIZE)
        if window is not None:
            if window > _MAX_WINDOW:
                raise FrameError(f"INITIAL_WINDOW_SIZE {window} exceeds 2^31-1")
            delta, self._peer_initial_window = window - self._peer_initial_window, window
            for stream in self.streams.values():
                stream.send_window += delta
            if self.config.send_flow is SendFlow.AUTO:
                self.flow_enforced = True
        self._ignored = 0
        self._events.append(SettingsReceived(settings))

    def _ping(self, payload: bytes) -> None:
        if len(payload) != 4:
            raise FrameError(f"PING of {len(payload)} bytes, needs 4")
        ping_id = int.from_bytes(payload, "big")
        ours = ping_id % 2 == (1 if self.role is Role.CLIENT else 0)
        if not ours:
            self._out.append(control_header(FrameType.PING, 0, 4) + payload)
            self._events.append(PingReceived(ping_id))
        elif ping_id in self._pings:
            self._pings.discard(ping_id)
            self._events.append(PingAcknowledged(ping_id))
        else:
            self._ignore(0, f"PING echo {ping_id} we never sent")
            return
        self._ignored = 0

    def _goaway(self, payload: bytes) -> None:
        self._expect(payload, 8, "GOAWAY")
        last = int.from_bytes(payload[0:4], "big") & MAX_STREAM_ID
        status = int.from_bytes(payload[4:8], "big")
        self.goaway_received = True
        self._events.append(GoAwayReceived(last, status))
        for sid in [s for s, st in self.streams.items() if st.local and s > last]:
            del self.streams[sid]  # never seen by the peer: safe to retry elsewhere
            self._events.append(StreamReset(sid, RstStatus.REFUSED_STREAM, remote=True, reason="GOAWAY"))

    def _window_update(self, payload: bytes) -> None:
        if len(payload) != 8:
            raise FrameError(f"WINDOW_UPDATE of {len(payload)} bytes, needs 8")
        sid = int.from_bytes(payload[0:4], "big") & MAX_STREAM_ID
        delta = int.from_bytes(payload[4:8], "big") & _MAX_WINDOW
        if self.config.send_flow is SendFlow.AUTO:
            self.flow_enforced = True
        if sid == 0:
            if delta == 0 or self.session_send_window + delta > _MAX_WINDOW:
                raise FrameError(f"session WINDOW_UPDATE of {delta} is out of range")
            self.session_send_window += delta
        else:
            stream = self.streams.get(sid)
            if stream is None:
                self._ignore(sid, "WINDOW_UPDATE for a closed or unknown stream")
                return
            if delta == 0 or stream.send_window + delta > _MAX_WINDOW:
                self._reset(sid, RstStatus.FLOW_CONTROL_ERROR, f"WINDOW_UPDATE of {delta} is out of range")
                return
            stream.send_window += delta
        self._ignored = 0
        self._events.append(WindowUpdated(sid, delta))

    # ------------------------------------------------------------------ helpers

    def _remote_fin(self, stream: Stream) -> None:
        stream.remote_closed = True
        self._events.append(StreamEnded(stream.stream_id))
        if stream.local_closed:
            del self.streams[stream.stream_id]

    def _ignore(self, sid: int, reason: str) -> None:
        self._ignored += 1
        self._events.append(FrameIgnored(sid, reason))
        if self._ignored > self.config.max_ignored:
            self._terminate(GoAwayStatus.PROTOCOL_ERROR, f"more than {self.config.max_ignored} useless frames in a row")

    def _reset(self, sid: int, status: RstStatus, reason: str) -> None:
        self.streams.pop(sid, None)
        self._out.append(control_header(FrameType.RST_STREAM, 0, 8) + sid.to_bytes(4, "big") + int(status).to_bytes(4, "big"))
        self._events.append(StreamReset(sid, int(status), remote=False, reason=reason))

    def _terminate(self, status: GoAwayStatus, reason: str) -> None:
        if self.closed:
            return
        self._send_goaway(status)
        self.closed = True
        self._data, self._ctl, self._skip = None, None, 0
        self._buf.clear()
        self._events.append(SessionTerminated(int(status), reason))

    def _send_goaway(self, status: GoAwayStatus) -> None:
        if not self.goaway_sent:
            self.goaway_sent = True
            self._out.append(control_header(FrameType.GOAWAY, 0, 8) + self.last_peer_stream.to_bytes(4, "big")
                             + int(status).to_bytes(4, "big"))

    def _live(self, sid: int) -> Stream:
        if self.closed:
            raise StreamClosed(sid, "the SPDY session is closed")
        stream = self.streams.get(sid)
        if stream is None:
            raise StreamClosed(sid, "no such SPDY stream (reset or finished)")
        return stream

    # ------------------------------------------------------------------ commands

    def open_stream(self, headers: Headers | list[tuple[str, str]], *, fin: bool = False, priority: int = 0,
                    associated_to: int = 0) -> int:
        """SYN_STREAM; returns the new stream id."""
        if self.closed or self.goaway_received or self.goaway_sent:
            raise ProtocolError("the SPDY session is going away: no new streams", remote=False)
        sid = self._next_stream
        if sid > MAX_STREAM_ID:
            raise LimitExceeded("stream ids exhausted on this SPDY session", remote=False)
        self._next_stream += 2
        block = self._deflate.compress(headers)
        body = (sid.to_bytes(4, "big") + associated_to.to_bytes(4, "big")
                + bytes(((priority & 7) << 5, 0)) + block)
        self._out.append(control_header(FrameType.SYN_STREAM, FLAG_FIN if fin else 0, len(body)) + body)
        self.streams[sid] = Stream(sid, True, tuple(headers), local_closed=fin,
                                   send_window=self._peer_initial_window, recv_window=self.config.initial_window)
        return sid

    def reply(self, sid: int, headers: Headers | list[tuple[str, str]] = (), *, fin: bool = False) -> None:
        """SYN_REPLY to a stream the peer opened."""
        stream = self._live(sid)
        if stream.local or stream.replied:
            raise ProtocolError(f"stream {sid}: SYN_REPLY only once, to a peer's stream", remote=False)
        stream.replied = True
        self._header_frame(FrameType.SYN_REPLY, stream, headers, fin)

    def send_headers(self, sid: int, headers: Headers | list[tuple[str, str]], *, fin: bool = False) -> None:
        self._header_frame(FrameType.HEADERS, self._live(sid), headers, fin)

    def _header_frame(self, kind: FrameType, stream: Stream, headers: Headers | list[tuple[str, str]],
                      fin: bool) -> None:
        if stream.local_closed:
            raise StreamClosed(stream.stream_id, "we already ended this stream")
        body = stream.stream_id.to_bytes(4, "big") + self._deflate.compress(headers)
        self._out.append(control_header(kind, FLAG_FIN if fin else 0, len(body)) + body)
        if fin:
            self._local_fin(stream)

    def send_window(self, sid: int) -> int:
        """Bytes ``send_data`` may take now on ``sid`` (huge while windows do not bind)."""
        stream = self.streams.get(sid)
        if stream is None or stream.local_closed or self.closed:
            return 0
        if not self.flow_enforced:
            return 1 << 62
        return max(0, min(stream.send_window, self.session_send_window))

    def send_data(self, sid: int, data: bytes | memoryview, *, fin: bool = False) -> None:
        """DATA frames (cut to ``max_data_frame``); raises ``LimitExceeded`` past the window."""
        stream = self._live(sid)
        if stream.local_closed:
            raise StreamClosed(sid, "we already ended this stream")
        size = len(data)
        if self.flow_enforced and size and size > min(stream.send_window, self.session_send_window):
            raise LimitExceeded(f"stream {sid}: {size} bytes exceed its send window", remote=False)
        stream.send_window -= size
        self.session_send_window -= size
        step = self.config.max_data_frame
        view = memoryview(data).cast("B") if size else memoryview(b"")
        for start in range(0, max(size, 1), step):
            piece = view[start : start + step]
            last = start + step >= size
            self._out.append(data_header(sid, DATA_FIN if fin and last else 0, len(piece)))
            if piece:
                self._out.append(bytes(piece))
        if fin:
            self._local_fin(stream)

    def end_stream(self, sid: int) -> None:
        """Half-close our side (an empty DATA frame with FIN), as Go's ``Stream.Close``."""
        stream = self.streams.get(sid)
        if stream is not None and not stream.local_closed and not self.closed:
            self.send_data(sid, b"", fin=True)

    def _local_fin(self, stream: Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            del self.streams[stream.stream_id]

    def reset(self, sid: int, status: RstStatus = RstStatus.CANCEL) -> None:
        """RST_STREAM (no event: the caller knows)."""
        if self.closed:
            return
        self.streams.pop(sid, None)
        self._out.append(control_header(FrameType.RST_STREAM, 0, 8) + sid.to_bytes(4, "big") + int(status).to_bytes(4, "big"))

    def consumed(self, sid: int, length: int) -> None:
        """The application took ``length`` bytes of ``sid``: WINDOW_UPDATEs once half a window gathered."""
        if self.closed or length <= 0:
            return
        half = self.config.initial_window // 2
        self._session_unacked += length
        if self._session_unacked >= half:
            self._window_frame(0, self._session_unacked)
            self.session_recv_window += self._session_unacked
            self._session_unacked = 0
        stream = self.streams.get(sid)
        if stream is None or stream.remote_closed:
            return
        stream.unacked += length
        if stream.unacked >= half:
            self._window_frame(sid, stream.unacked)
            stream.recv_window += stream.unacked
            stream.unacked = 0

    def _window_frame(self, sid: int, delta: int) -> None:
        self._out.append(control_header(FrameType.WINDOW_UPDATE, 0, 8) + sid.to_bytes(4, "big") + delta.to_bytes(4, "big"))

    def ping(self) -> int:
        """PING with a fresh id of our parity; ``PingAcknowledged`` when it comes back."""
        if self.closed:
            raise ProtocolError("the SPDY session is closed", remote=False)
        ping_id = self._next_ping
        self._next_ping = self._next_ping + 2 if self._next_ping < (1 << 32) - 2 else self._next_ping % 2 or 2
        if len(self._pings) < 64:
            self._pings.add(ping_id)
        self._out.append(control_header(FrameType.PING, 0, 4) + ping_id.to_bytes(4, "big"))
        return ping_id

    def send_settings(self, settings: dict[int, int]) -> None:
        body = len(settings).to_bytes(4, "big") + b"".join(
            int(k).to_bytes(4, "big") + int(v).to_bytes(4, "big") for k, v in settings.items())
        self._out.append(control_header(FrameType.SETTINGS, 0, len(body)) + body)

    def goaway(self, status: GoAwayStatus = GoAwayStatus.OK) -> None:
        """GOAWAY: no new streams either way; running ones may finish."""
        if not self.closed:
            self._send_goaway(status)
