"""Sans-I/O stream multiplexer for one tunnel: the state of every stream, no I/O.

Theory of operation
-------------------
The cloud opens a stream by sending a *_CONNECT message under a connect ID it allocates;
both sides then exchange DATA under that ID, and either side ends it with REMOVE_CONNECT.
KubeEdge has no acknowledgement, no window and no error message, so the table is small::

    OPEN --local close--> LOCAL_CLOSED --peer REMOVE--> (forgotten)
    OPEN --peer REMOVE--> REMOTE_CLOSED --local close--> (forgotten)

Robustness rules learnt from Go peers (``spec/kubeedge-tunnel.md``):

* REMOVE_CONNECT is sent at most once per stream (a Go edge may panic on repeats).
* DATA or REMOVE for an unknown ID is ignored (Go clouds repeat REMOVE in a loop).
* An undecodable message is reported as a ``ProtocolViolation`` event and dropped: the
  WebSocket keeps message boundaries, so one bad message cannot desynchronise the rest,
  and it never takes the tunnel (or another stream) down.
* Extension types (>= 7) are sent only when the peer announced the feature at dial time.

Flow (negotiated ``flow`` feature): each stream starts with ``FLOW_WINDOW`` bytes of credit per
direction; ``data_header`` spends it, the receiver's ``consumed`` hands back WINDOW messages as
its consumer drains. A Go peer never negotiates it: its streams have unlimited credit.

Adaptive windows (receiver side only, nothing new on the wire): ``window_target`` (set from
the tunnel's BDP estimate, ``bdp.py``) moves a stream's receive window above ``FLOW_WINDOW``
as its consumer takes bytes, by granting the difference in the usual WINDOWs, at most as many
bytes more as were consumed each time (a lump of growth is a burst that queues on a long link),
and lowers it again, never below FLOW_WINDOW, by keeping consumed bytes back. Grants gather to
a quarter window, or to ``grant_step`` when that is less (the estimator's: about a
millisecond of the delivery rate, so that a long link is not fed in bursts). A
stream grows only while somebody reads it, up to ``stream_window_max``, and all growth of a
tunnel together stays within ``window_budget``: N stalled streams pin at most
N x FLOW_WINDOW + window_budget. A closed stream gives its growth back. The budget is shared
evenly: a stream grows to at most its share (budget / streams that have grown or were refused
growth for want of budget, itself counted),
and one above a newcomer's share shrinks back to it as it is read; first come no longer takes
all (64 bulk streams had windows of 256 KiB beside 1 MiB: Jain 0.79).

Certificate renewal (negotiated ``renew``): RENEW_REQUEST/RENEW_ANSWER carry no stream state;
they become ``RenewalRequested`` / ``RenewalAnswered`` events on the side they go to.

Inputs: ``receive_message``. Commands: ``open_stream``, ``data_header``, ``consumed``,
``close_stream``, ``status``, ``renewal_request``, ``renewal_answer``. Output: ``events_received`` (drained on each call); commands
return the bytes to send, so the caller keeps the order of control and data messages.
Per-stream state (``Stream``) is where credits and priorities live.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .connect import ConnectRequest
from .errors import FrameError, LimitExceeded, ProtocolError, StreamClosed
from .events import (
    CloseRequested,
    DataReceived,
    Event,
    MessageIgnored,
    ProtocolViolation,
    RenewalAnswered,
    RenewalRequested,
    StatusReceived,
    StreamOpened,
    StreamRemoved,
    WindowUpdate,
)
from .features import FLOW_WINDOW, Feature
from .messages import GO_MAX_DATA, MessageType, decode, encode, encode_header
from .renewal import RenewalAnswer, decode_answer, decode_request, encode_answer, encode_request
from .varint import encode_uvarint, read_uvarint

__all__ = ["Mux", "Role", "Stream", "StreamState"]


class Role(enum.Enum):
    CLOUD = "cloud"
    EDGE = "edge"


_RENEWAL_KINDS = {MessageType.RENEW_REQUEST: Role.CLOUD, MessageType.RENEW_ANSWER: Role.EDGE}
"""Renewal messages (``renew`` feature, ``renewal.py``) and the side that receives each."""


class StreamState(enum.Enum):
    OPEN = "open"
    LOCAL_CLOSED = "local-closed"
    """We sent REMOVE_CONNECT; waiting for the peer's (Go edges echo it)."""
    REMOTE_CLOSED = "remote-closed"
    """The peer sent REMOVE_CONNECT; we still have to close our side."""


@dataclass(slots=True)
class Stream:
    connect_id: int
    kind: MessageType
    state: StreamState = StreamState.OPEN
    bytes_in: int = 0
    bytes_out: int = 0
    status_sent: bool = False
    send_credit: int = 1 << 62
    """Bytes we may still send (flow feature; unlimited without it, as with a Go peer)."""
    unacked: int = 0
    """Bytes our side consumed and has not granted back yet."""
    consumed: int = 0
    """Bytes our consumer took (flow feature): ``bytes_in - consumed`` wait in our buffer."""
    recv_window: int = FLOW_WINDOW
    """What the peer may have outstanding towards us (flow feature); grows, see the module doc."""
    wants_growth: bool = False
    """At FLOW_WINDOW and refused growth for want of budget: it counts for a share."""


@dataclass(slots=True)
class Mux:
    """One tunnel's streams. ``next_id`` allocates connect IDs (cloud side only)."""

    role: Role
    features: frozenset[Feature] = frozenset()
    """Extensions both sides announced at dial time."""
    max_streams: int = 10_000
    max_payload: int = 64 * 1024
    next_id: Callable[[], int] | None = None
    streams: dict[int, Stream] = field(default_factory=dict)
    stream_window_max: int = 8 << 20
    """Largest receive window of one stream (flow feature)."""
    window_budget: int = 16 << 20
    """Growth above FLOW_WINDOW all streams of the tunnel may hold together."""
    window_target: int = FLOW_WINDOW
    """Receive window a reading stream grows to (the BDP estimate)."""
    window_extra: int = 0
    """Growth currently held: sum of (recv_window - FLOW_WINDOW) over the streams."""
    growing: int = 0
    """Streams whose receive window is above FLOW_WINDOW; they and ``wanting`` split the budget."""
    wanting: int = 0
    """Streams with ``wants_growth``."""
    grant_step: int | None = None
    """Largest grant (the BDP estimator's, from the delivery rate): a quarter window at once is
    a burst that queues on a long link. None: a quarter window."""
    _events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.max_payload < GO_MAX_DATA:
            raise ValueError("max_payload must stay below Go's 1 MiB read limit")

    # ------------------------------------------------------------------ outputs

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------------ inputs

    def receive_message(self, data: bytes | memoryview) -> None:
        """Feed one WebSocket message. Never raises: problems become events."""
        if not data:
            self._events.append(ProtocolViolation(FrameError("EOF: empty tunnel message")))
            return
        try:
            message = decode(data)
        except FrameError as exc:
            self._events.append(ProtocolViolation(exc))
            return
        kind, cid, payload = message.kind, message.connect_id, message.data
        if kind == MessageType.DATA:
            stream = self.streams.get(cid)
            if stream is None or stream.state is not StreamState.OPEN:
                # In flight when one side closed: KubeEdge has no half-close, so it is late.
                self._events.append(MessageIgnored(cid, kind, "unknown or closed stream"))
                return
            stream.bytes_in += len(payload)
            self._events.append(DataReceived(cid, payload))
        elif kind == MessageType.REMOVE_CONNECT:
            self._peer_removed(cid)
        elif kind == MessageType.CLOSE_CONNECT:
            # The Go cloud sends it (id 0) when it could not register the tunnel.
            self._events.append(CloseRequested(bytes(payload).decode("utf-8", "replace")))
        elif kind == MessageType.STATUS and Feature.STATUS in self.features:
            self._status(cid, payload)
        elif kind == MessageType.WINDOW and Feature.FLOW in self.features:
            self._window(cid, payload)
        elif kind in _RENEWAL_KINDS and Feature.RENEW in self.features:
            self._renewal(cid, MessageType(kind), payload)
        elif isinstance(kind, MessageType) and kind.is_connect:
            self._peer_connect(cid, kind, payload)
        else:
            self._events.append(MessageIgnored(cid, kind, "unknown message type"))

    def open_data_stream(self, data: bytes | bytearray | memoryview) -> Stream | None:
        """The fast path's test, without side effects: the stream a well-formed DATA message
        with a one-byte header goes to when that stream is open, else None (then feed the
        message to ``receive_message``). The caller takes ``data[2:]`` and adds its length
        to ``bytes_in`` once the payload has been delivered."""
        if len(data) >= 2 and data[1] == 3 and data[0] < 0x80:  # 3: MessageType.DATA
            stream = self.streams.get(data[0])
            if stream is not None and stream.state is StreamState.OPEN:
                return stream
        return None

    def _peer_removed(self, cid: int) -> None:
        stream = self.streams.get(cid)
        if stream is None or stream.state is StreamState.REMOTE_CLOSED:
            self._events.append(MessageIgnored(cid, MessageType.REMOVE_CONNECT, "unknown or closed stream"))
            return
        if stream.state is StreamState.LOCAL_CLOSED:
            self._drop(cid)  # the peer's echo: both sides are done
        else:
            stream.state = StreamState.REMOTE_CLOSED
        self._events.append(StreamRemoved(cid))

    def _peer_connect(self, cid: int, kind: MessageType, payload: memoryview | bytes) -> None:
        if self.role is Role.CLOUD:
            self._events.append(MessageIgnored(cid, kind, "connect messages go cloud -> edge only"))
            return
        if kind.is_extension and Feature.PORTFORWARD not in self.features:
            self._events.append(MessageIgnored(cid, kind, "port-forward was not negotiated"))
            return
        if cid in self.streams:
            self._events.append(ProtocolViolation(ProtocolError(f"stream {cid} opened twice"), cid))
            return
        if len(self.streams) >= self.max_streams:
            self._events.append(ProtocolViolation(LimitExceeded(f"more than {self.max_streams} streams"), cid))
            return
        try:
            request = ConnectRequest.from_json(cid, payload)
        except FrameError as exc:
            self._events.append(ProtocolViolation(exc, cid))
            return
        self._new_stream(cid, kind)
        self._events.append(StreamOpened(cid, kind, request))

    def _window(self, cid: int, payload: memoryview | bytes) -> None:
        stream = self.streams.get(cid)
        try:
            increment, end = read_uvarint(payload, 0)
        except FrameError as exc:
            self._events.append(ProtocolViolation(exc, cid))
            return
        if stream is None or end != len(payload):
            self._events.append(MessageIgnored(cid, MessageType.WINDOW, "unknown stream or trailing bytes"))
            return
        stream.send_credit += increment
        self._events.append(WindowUpdate(cid, increment))

    def _renewal(self, cid: int, kind: MessageType, payload: memoryview | bytes) -> None:
        """RENEW_REQUEST (cloud side) or RENEW_ANSWER (edge side); the other direction is ignored."""
        if _RENEWAL_KINDS[kind] is not self.role:
            self._events.append(MessageIgnored(cid, kind, f"{kind.name} goes to the {_RENEWAL_KINDS[kind].value} only"))
            return
        try:
            if kind == MessageType.RENEW_REQUEST:
                self._events.append(RenewalRequested(cid, decode_request(payload)))
            else:
                self._events.append(RenewalAnswered(cid, decode_answer(payload)))
        except FrameError as exc:
            self._events.append(ProtocolViolation(exc))

    def _new_stream(self, cid: int, kind: MessageType) -> Stream:
        stream = Stream(cid, kind)
        if Feature.FLOW in self.features:
            stream.send_credit = FLOW_WINDOW
        self.streams[cid] = stream
        return stream

    def _status(self, cid: int, payload: memoryview | bytes) -> None:
        if cid not in self.streams:
            self._events.append(MessageIgnored(cid, MessageType.STATUS, "unknown stream"))
            return
        try:
            obj = json.loads(bytes(payload))
            code, text = int(obj["code"]), str(obj.get("message", ""))
        except (ValueError, KeyError, TypeError):
            self._events.append(ProtocolViolation(FrameError(f"bad STATUS payload on stream {cid}"), cid))
            return
        self._events.append(StatusReceived(cid, code, text))

    # ------------------------------------------------------------------ commands

    def open_stream(self, kind: MessageType, request: ConnectRequest) -> tuple[int, bytes]:
        """Cloud: allocate an ID and return it with the *_CONNECT message to send."""
        if self.role is not Role.CLOUD or self.next_id is None:
            raise ProtocolError("only the cloud opens streams", remote=False)
        if not kind.is_connect:
            raise ValueError(f"{kind.name} does not open a stream")
        if kind.is_extension and Feature.PORTFORWARD not in self.features:
            raise ProtocolError("the edge did not announce port-forward support", remote=False)
        if len(self.streams) >= self.max_streams:
            raise LimitExceeded(f"more than {self.max_streams} streams on one tunnel", remote=False)
        cid = self.next_id()
        self._new_stream(cid, kind)
        payload = ConnectRequest(
            connect_id=cid,
            path=request.path,
            raw_query=request.raw_query,
            headers=request.headers,
            method=request.method,
        ).to_json()
        return cid, encode(cid, kind, payload)

    def data_header(self, cid: int, length: int) -> bytes:
        """Check that ``length`` bytes may go out on stream ``cid``; return the header.

        The caller joins header and payload (or seals a ``FrameBuffer``) itself.
        """
        stream = self.streams.get(cid)
        if stream is None or stream.state is not StreamState.OPEN:
            raise StreamClosed(cid, "closed" if stream is None else f"closed ({stream.state.value})")
        if length > self.max_payload:
            raise LimitExceeded(f"{length} bytes exceed the {self.max_payload} byte payload limit", remote=False)
        if length > stream.send_credit:
            raise LimitExceeded(f"stream {cid}: {length} bytes exceed its credit {stream.send_credit}", remote=False)
        stream.send_credit -= length
        stream.bytes_out += length
        return encode_header(cid, MessageType.DATA)

    def credit(self, cid: int) -> int:
        """Bytes stream ``cid`` may send now (0 when it is closed)."""
        stream = self.streams.get(cid)
        return stream.send_credit if stream is not None and stream.state is StreamState.OPEN else 0

    def consumed(self, cid: int, length: int) -> bytes | None:
        """Our consumer took ``length`` bytes of ``cid``: the WINDOW message to grant them
        back, once a quarter window has gathered (or None)."""
        stream = self.streams.get(cid)
        if Feature.FLOW not in self.features or stream is None or stream.state is not StreamState.OPEN:
            return None
        stream.unacked += length
        stream.consumed += length
        if stream.recv_window != self.window_target or self.growing + self.wanting > 1:
            self._resize(stream, length)
        step = self.grant_step
        if stream.unacked < (stream.recv_window // 4 if step is None else min(step, stream.recv_window // 4)):
            return None
        grant, stream.unacked = stream.unacked, 0
        return encode(cid, MessageType.WINDOW, encode_uvarint(grant))

    def waiting(self, among: Iterable[int] | None = None) -> int:
        """Bytes received that their consumers have not taken yet: on every open stream, or on
        those of ``among``."""
        streams = self.streams
        chosen = streams.values() if among is None else (streams[c] for c in among if c in streams)
        return sum(s.bytes_in - s.consumed for s in chosen if s.state is StreamState.OPEN)

    def _resize(self, stream: Stream, length: int) -> None:
        was_grown = stream.recv_window > FLOW_WINDOW
        sharers = self.growing + self.wanting + (0 if was_grown or stream.wants_growth else 1)
        share = FLOW_WINDOW + self.window_budget // sharers
        want = max(min(self.window_target, self.stream_window_max, share), FLOW_WINDOW) - stream.recv_window
        if want > 0:  # grow: grant the difference with the next WINDOWs, as if consumed,
            # at most what was just consumed: the sender's burst stays within twice its
            # delivery rate (slow start), not a lump that queues at a long link's bottleneck
            delta = min(want, self.window_budget - self.window_extra, length)
        else:  # shrink: keep back consumed bytes instead of granting them
            delta = max(want, -stream.unacked)
        if delta:
            stream.recv_window += delta
            stream.unacked += delta
            self.window_extra += delta
        grown = stream.recv_window > FLOW_WINDOW
        self.growing += grown - was_grown
        wants = not grown and want > delta  # refused for want of budget: the grown ones shrink to make room
        if wants != stream.wants_growth:
            self.wanting += wants - stream.wants_growth
            stream.wants_growth = wants

    def status(self, cid: int, code: int, message: str = "") -> bytes | None:
        """Edge: the STATUS message that opens a logs/metrics answer, if negotiated."""
        stream = self.streams.get(cid)
        if Feature.STATUS not in self.features or stream is None or stream.status_sent:
            return None
        stream.status_sent = True
        return encode(cid, MessageType.STATUS, json.dumps({"code": code, "message": message}).encode())

    def close_stream(self, cid: int) -> bytes | None:
        """End our side of ``cid``: the REMOVE_CONNECT to send, exactly once, or None."""
        stream = self.streams.get(cid)
        if stream is None or stream.state is StreamState.LOCAL_CLOSED:
            return None
        if stream.state is StreamState.REMOTE_CLOSED or self.role is Role.EDGE:
            # The edge never waits for an echo: a Go cloud does not send one reliably.
            self._drop(cid)
        else:
            stream.state = StreamState.LOCAL_CLOSED
        return encode(cid, MessageType.REMOVE_CONNECT)

    def renewal_request(self, request_id: int, csr_der: bytes) -> bytes:
        """Edge: the RENEW_REQUEST message for a CSR (``renew`` must have been negotiated)."""
        if self.role is not Role.EDGE or Feature.RENEW not in self.features:
            raise ProtocolError("certificate renewal was not negotiated with this cloud", remote=False)
        return encode(request_id, MessageType.RENEW_REQUEST, encode_request(csr_der))

    def renewal_answer(self, request_id: int, answer: RenewalAnswer) -> bytes:
        """Cloud: the RENEW_ANSWER message to request ``request_id``."""
        if self.role is not Role.CLOUD or Feature.RENEW not in self.features:
            raise ProtocolError("certificate renewal was not negotiated with this edge", remote=False)
        return encode(request_id, MessageType.RENEW_ANSWER, encode_answer(answer))

    def forget(self, cid: int) -> None:
        """Drop a stream's state without sending anything (the tunnel is gone)."""
        self._drop(cid)

    def _drop(self, cid: int) -> None:
        stream = self.streams.pop(cid, None)
        if stream is not None:
            self.window_extra -= stream.recv_window - FLOW_WINDOW
            self.growing -= stream.recv_window > FLOW_WINDOW
            self.wanting -= stream.wants_growth
