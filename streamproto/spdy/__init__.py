"""SPDY/3.1, sans I/O, for both roles: what Kubernetes' exec/attach/port-forward speak.

Why our own: PyPI's ``spdy-py`` 0.2.0 (2021, LGPL, unmaintained) is a 250-line frame
*reader* only: no writer, no deflate side, no streams, windows or limits, and it reads the
flags from the wrong byte. Nothing else on PyPI is alive (``python-spdylay`` is from 2012).

Usage (the shape of websockets' and h11's protocol objects)::

    from streamproto.spdy import Role, Session, StreamOpened, DataReceived, StreamEnded

    session = Session(Role.SERVER)             # or Role.CLIENT; Session(role, SessionConfig(...))
    session.receive_data(bytes_from_socket)    # never raises for what the peer sent
    for event in session.events_received():
        match event:
            case StreamOpened(stream_id=sid):  # event.header("streamtype")
                session.reply(sid)             # SYN_REPLY (empty headers, as the kubelet)
            case DataReceived(stream_id=sid, data=data):
                ...; session.consumed(sid, len(data))   # hands credit back (WINDOW_UPDATE)
            case StreamEnded(stream_id=sid):   # the peer's FIN
                session.end_stream(sid)        # ours (empty DATA + FIN, as Go's Stream.Close)
    socket.write(session.data_to_send())       # after every input and command

Commands: ``open_stream(headers, fin=, priority=)`` -> id, ``reply``, ``send_headers``,
``send_data(sid, data, fin=)`` (cut into ``max_data_frame`` frames; check ``send_window``
first), ``end_stream``, ``reset(sid, RstStatus.CANCEL)``, ``consumed``, ``ping`` -> id,
``send_settings``, ``goaway``. Commands queue bytes at once, in order: header blocks share
one zlib context per direction, so frames must leave in the order they were made.

Events (``events``): ``StreamOpened``, ``StreamReplied``, ``HeadersReceived``, ``DataReceived``,
``StreamEnded``, ``StreamReset`` (``remote`` False when we reset a peer's bad stream),
``SettingsReceived``, ``PingReceived`` (the echo is queued already), ``PingAcknowledged``,
``WindowUpdated``, ``GoAwayReceived``, ``FrameIgnored``, ``SessionTerminated`` (flush, then
close the connection).

Bounds (``SessionConfig``): concurrent peer streams (``max_streams``, REFUSED_STREAM past
it), control-frame size, inflated header-block size (a zlib bomb stops at the limit), DATA
payloads are never buffered here (delivered as they arrive), ignored frames in a row.
Flow control and Go peers: see ``session``'s docstring (``SendFlow``).

Headers are ``tuple[tuple[str, str], ...]`` in wire order, names lower case; a name sent
with several values (NUL-joined on the wire) comes back as several pairs.
"""

from __future__ import annotations

from .dictionary import DICTIONARY, DICTIONARY_ID
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
    FrameType,
    GoAwayStatus,
    HeaderCompressor,
    HeaderDecompressor,
    Headers,
    RstStatus,
    Setting,
    decode_header_block,
    encode_header_block,
)
from .session import DEFAULT_WINDOW, Role, SendFlow, Session, SessionConfig, Stream

__all__ = [
    "DEFAULT_WINDOW",
    "DICTIONARY",
    "DICTIONARY_ID",
    "DataReceived",
    "Event",
    "FrameIgnored",
    "FrameType",
    "GoAwayReceived",
    "GoAwayStatus",
    "HeaderCompressor",
    "HeaderDecompressor",
    "Headers",
    "HeadersReceived",
    "PingAcknowledged",
    "PingReceived",
    "Role",
    "RstStatus",
    "SendFlow",
    "Session",
    "SessionConfig",
    "SessionTerminated",
    "SettingsReceived",
    "Setting",
    "Stream",
    "StreamEnded",
    "StreamOpened",
    "StreamReplied",
    "StreamReset",
    "WindowUpdated",
    "decode_header_block",
    "encode_header_block",
]
