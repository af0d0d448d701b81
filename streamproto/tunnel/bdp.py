"""Receive windows sized to the path (sans-I/O): a bandwidth-delay product estimate that
grows as gRPC-Go's ``internal/transport/bdp_estimator.go`` does, then follows the queue the
window builds, as delay-based congestion control does; and the sender's message size.

The receiver sends a WebSocket ping when data arrives and no probe is out, and counts the
payload bytes that arrive until the pong: one sample of the bytes one round trip carries.

**Start (gRPC's rule).** When a sample reaches 2/3 of the current estimate, the window is too
small to fill the path: the estimate becomes twice the sample, up to ``limit``. gRPC also
wants the sample's bandwidth to be the highest seen; a steady window-limited stream on a
satellite link never beat the burst of its first sample and stalled at the initial window
(measured), so a gate replaces that test: no growth while the estimate is already ``_GATE``
times the highest delivery rate seen (bytes over the whole time between two acks) times the
lowest round trip seen: a BBR-style BDP. Without it, on loopback the queue a window builds
lengthens the probe and the window feeds its own growth.

**Follow.** A window larger than the path does not go faster: what it adds waits at the
bottleneck, in front of every keystroke of every stream of the tunnel (``wan-50ms-100mbit``:
the window grew to its 1 MiB limit on a 625 KB path, exec echo beside a `logs -f` at RTT + 24
ms). Once the last ``_EVIDENCE`` round trips all stay ``QUEUE`` above the lowest (or, while
starting, one round trip shows an overshoot no event loop explains), the path is ``full``: the
window drains for two round trips at half the fit (the start's queue empties, so the lowest
round trip becomes the path's own), then sits at ``fit`` (rate x (lowest RTT + QUEUE)), and moves by
the bytes the measured queue is off ``QUEUE / 2``, never below the path's own product (``lowest``:
under it the queue a probe sees is jitter, not the window's); past the fit only by a 1.25x probe every
``_REPROBE`` seconds (a path that got faster). After each change, probes already in flight are
not evidence. The estimate is the tunnel's: each stream that carried data in the last round
trip gets an equal part (``stream_target``), never below the protocol's initial window; a stream
that carried less than a quarter of an equal part (a shell beside a `logs -f`) is not counted
(it was, and halved the `logs -f` on a long link for as long as a shell was open).

**Grant size and message size.** A grant hands back about a millisecond of the delivery rate
(``grant_step``, at least 4 KiB), and the sender cuts DATA to about a millisecond of the rate
at which grants come (``Pacer``): the sends then follow the grants, as TCP's follow its acks;
quarter-window grants and 60 KiB messages were bursts of up to 162 KB at the bottleneck.
On loopback both stay what they were (64 KiB): a millisecond there is more.

Nothing new goes on the wire: pings are WebSocket control frames every peer answers, a
window is what the WINDOW grants add up to, and a message may be any size; an older peer
of ours gets more, smaller grants. The model in ``tests/unit/proto/test_bdp_link.py``
reproduces the bench's figures and checks the targets in a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["BdpEstimator", "Pacer"]

_BETA = 2 / 3
"""A sample this close to the estimate means the window, not the path, limited it."""
_GAMMA = 2
"""Growth factor applied to the sample."""
_ALPHA = 0.9
"""Weight of a new RTT sample in the moving average."""
_GATE = 2.0
"""Growth stops once the estimate reaches this many times rate_max x rtt_min."""
QUEUE = 0.0025
"""Seconds of queue a window may build at the path's bottleneck: what a keystroke sent beside
a bulk stream waits there. When the last ``_EVIDENCE`` round trips all stay this much above the
lowest seen, the window is larger than the path: it shrinks."""
_EVIDENCE = 4
"""Round trips a queue must show in (their minimum is the signal): one late pong is an event
loop or a scheduler (1-5 ms measured here), a queue the window built stays."""
_REPROBE = 10.0
"""Once the path was seen full, the window grows past its fit only once per this many
seconds (a 1.25x step, shrunk again once the queue it builds shows): a path that got
faster is found again, at the price of one short queue per interval."""
_REPROBE_RTTS = 50
"""... and at most once per this many round trips (a probe costs about six of queue)."""
_PROBE_UP = 1.25
_STARTUP_QUEUE = 0.03
"""While starting, one round trip this much (or a quarter of the lowest) above the lowest is
evidence enough: the doubling overshoots (a satellite start queued 260 ms for 4 round trips,
3.5 s, waiting for the usual evidence), and event loops are never this late."""
_UNDERSHOOT = 0.95
"""Below this share of the fit the window goes back to the fit at once; above it, it moves only
by the queue's error. The fit's rate is a maximum, a percent or two high (noise), and at 600 ms a
percent of the rate is 6 ms of queue: jumping to it each time the queue looked short kept
5-10 ms in front of every keystroke on the satellite link."""
_SHORT_PATH = 0.005
"""Below this lowest round trip (loopback, a LAN) every stream that carried data shares the
window: the window is at its floor or near it, and halving it beside a shell keeps a keystroke's
wait under half a millisecond at 650 MB/s (measured: 0.45-0.6 ms against 0.5-1.3 ms). Above it
only streams with a good part of the bytes count: on a long link the split is the bulk rate."""
_DRAIN = 0.5
"""When the path is first seen full, the window drops to this share of the fit for two round
trips: the queue the start built drains, and the lowest round trip (so the fit) becomes the
path's own. Without it a 600 ms link measured 621 ms through its start-up queue, and a window
fitted to that kept the 20 ms of queue in front of every keystroke (BBR's DRAIN)."""
_WINDOWED = 10.0
"""Seconds over which rate_max is kept (two buckets), as BBR's filter: a path that got slower
is followed. A longer path: ``_track_rtt_min``."""
_PATH_QUIET = 60.0
"""Seconds (and at least ``_PATH_QUIET_RTTS`` round trips) without a new path check after one
found the path unchanged: a window held at its least by a rate read high keeps its few ms of
queue, and each check costs three round trips at half the fit (on a 600 ms link, 7 % of every
10 s if repeated at ``_WINDOWED``). A route that got longer meanwhile costs some throughput, no queue."""
_PATH_QUIET_RTTS = 100
_GRANT_TIME = 0.001
"""A grant hands back at most this much time's worth of the delivery rate (and at least
``_GRANT_MIN``): on a long link a quarter-window grant is one burst that queues at the
bottleneck in front of the next keystroke (162 KB: 13 ms at 100 Mbit/s)."""
_GRANT_MIN = 4096


@dataclass(slots=True)
class _WindowedMax:
    """The highest sample over the last ``_WINDOWED`` to ``2 * _WINDOWED`` seconds."""

    current: float = 0.0
    previous: float = 0.0
    until: float = -1.0

    def add(self, value: float, now: float) -> float:
        if now >= self.until:
            self.previous, self.current, self.until = self.current, value, now + _WINDOWED
        else:
            self.current = max(self.current, value)
        return max(self.current, self.previous)


@dataclass(slots=True)
class BdpEstimator:
    estimate: int
    """Current window target in bytes (starts at the protocol's initial window)."""
    limit: int
    """The estimate never exceeds this."""
    min_interval: float = 0.01
    """Seconds between probes: on a short path a window never limits, and a ping per
    round trip of a loopback would cost more than it tells."""
    rtt: float = 0.0
    """Moving average of the probe round trips (seconds)."""
    rtt_min: float = 0.0
    """Lowest probe round trip: the path's own delay (``_track_rtt_min``)."""
    bw_max: float = 0.0
    rate_max: float = 0.0
    """Highest delivery rate between two acks (bytes/s) over the last 10-20 s."""
    full: bool = False
    """The window has filled the path once (a queue was seen): it now follows ``fit``."""
    _floor: int = 0
    _hold_until: float = 0.0
    _reprobe_at: float = 0.0
    _high_since: float = -1.0
    _drain_until: float = 0.0
    _path_check: bool = False
    """Draining to tell a longer path from a queue of the window's own (``_track_rtt_min``)."""
    _path_low: float = 0.0
    _path_quiet_until: float = 0.0
    """After a drain that found the path as it was, no new check before this (``_PATH_QUIET``)."""
    _recent: list[float] = field(default_factory=list)
    _streams: dict[int, int] = field(default_factory=dict)
    """Bytes each stream carried in the sample under way."""
    active: int = 0
    """Streams that carried a good part of the last sample: at least a quarter of an equal
    share (a shell's keystrokes beside a `logs -f` do not halve its window); on a short path,
    every stream that carried data (``_SHORT_PATH``)."""
    _rates: _WindowedMax = field(default_factory=_WindowedMax)
    _rate_bytes: int = 0
    _rate_since: float = -1.0
    sample: int = 0
    """Bytes received since the probe went out."""
    probing: bool = False
    _sent_at: float = 0.0
    _next_at: float = 0.0
    samples: int = 0

    def __post_init__(self) -> None:
        self._floor = self.estimate

    @property
    def fit(self) -> int:
        """The window that fills the path and queues ``QUEUE`` seconds of it, plus the bytes a
        receiver holds before it grants them: rate x (rtt_min + QUEUE) + grant step."""
        return int(self.rate_max * (self.rtt_min + QUEUE)) + (self.grant_step or 0)

    @property
    def lowest(self) -> int:
        """The least window once the queue steers it: the path's bandwidth-delay product (rate x
        lowest round trip), or the floor. A window below it builds no queue of its own, so the
        queue the probes still show is the path's jitter (a link's pacing, a radio, a loaded
        event loop), not a reason to shrink: with 3-4 ms of it on ``wan-50ms-100mbit`` the window
        walked down to the floor, two streams at 0.8 of the link (and 0.55 in the model with 30 ms).
        A path that got slower lowers ``rate_max`` within ``_WINDOWED`` to twice that."""
        return max(self._floor, int(self.rate_max * self.rtt_min))

    @property
    def grant_step(self) -> int | None:
        """Bytes a receiver should hand back at a time (None: until the rate is known)."""
        return max(_GRANT_MIN, int(self.rate_max * _GRANT_TIME)) if self.rate_max else None

    @property
    def stream_target(self) -> int:
        """The window for each stream: the estimate is the path's, shared by the streams that
        carried a good part of the last round trip's data (two streams each given the path
        queue one path; an interactive one beside a bulk one takes no half of it)."""
        return max(self._floor, self.estimate // (self.active or 1))

    @property
    def carrying(self) -> Iterable[int]:
        """The streams that carried data in the sample under way (``received`` with a stream)."""
        return self._streams.keys()

    def received(self, length: int, now: float, stream: int = -1) -> bool:
        """``length`` payload bytes arrived (on ``stream``, if known). True when a probe
        should go out now."""
        if stream >= 0:
            streams = self._streams
            streams[stream] = streams.get(stream, 0) + length
        self._rate_bytes += length
        if self._rate_since < 0:
            self._rate_since = now
        if self.probing:
            self.sample += length
            return False
        if now < self._next_at:
            return False
        self.probing = True
        self.sample = length
        self._sent_at = now
        return True

    def acknowledged(self, now: float, waiting: int = 0) -> int | None:
        """The probe's pong arrived: returns the new estimate when it changed, else None.
        ``waiting``: bytes received and not yet consumed on the streams that carried the sample
        (``carrying``); when that is a good part of the estimate, their consumers, not the window,
        limit them: no growth. (A stream nobody reads holds its whole window and carries nothing:
        counted, it kept two readers beside it at 0.8 of a long link, for good.)"""
        if not self.probing:
            return None
        self.probing = False
        rtt = max(now - self._sent_at, 1e-6)
        self._next_at = now + self.min_interval
        self.samples += 1
        self.rtt = rtt if self.samples == 1 else self.rtt + (rtt - self.rtt) * _ALPHA
        check_path = self._track_rtt_min(rtt, now)
        # loopback, a LAN: the start's gate keeps the window near its floor, and a few late pongs
        # (a loaded machine) are no bottleneck's queue: the path is never taken for full there
        long_path = self.rtt_min > _SHORT_PATH
        streams = self._streams
        if streams and long_path:
            enough = sum(streams.values()) / (4 * len(streams))
            self.active = sum(1 for carried in streams.values() if carried >= enough)
        else:  # a short path: every stream counts (a smaller window, less in front of a keystroke)
            self.active = len(streams)
        streams.clear()
        if now - self._rate_since >= self.min_interval:
            self.rate_max = self._rates.add(self._rate_bytes / (now - self._rate_since), now)
            self._rate_bytes, self._rate_since = 0, now
        bw = self.sample / max(self.rtt, 1e-6)
        if bw > self.bw_max:
            self.bw_max = bw
        if check_path:  # a queue of the window's own drains in three round trips
            self._path_check, self._path_low = True, float("inf")
            return self._drain(3, rtt, now)
        if self._sent_at < self._hold_until:
            return None  # the probe left before the last change could show in the queue
        recent = self._recent
        recent.append(rtt)
        if len(recent) > _EVIDENCE:
            del recent[0]
        queue = min(recent) - self.rtt_min if len(recent) == _EVIDENCE else None
        if long_path and not self.full and rtt - self.rtt_min > max(_STARTUP_QUEUE, self.rtt_min / 4):
            queue = rtt - self.rtt_min  # a start's overshoot: no event loop is this late
        if self._drain_until:
            if now < self._drain_until:
                return None
            self._drain_until = 0.0  # drained: the fit with the path's own round trip
            if self._path_check:
                self._path_check = False
                if self._path_low - self.rtt_min > QUEUE:  # drained, still late: the path is longer
                    self.rtt_min = self._path_low
                else:
                    self._path_quiet_until = now + max(_PATH_QUIET, _PATH_QUIET_RTTS * self.rtt_min)
            return self._change(max(self._floor, self.fit), rtt, now)
        if self.full:
            return self._follow(rtt, queue, now, waiting)
        fit = self.fit
        if long_path and queue is not None and queue > QUEUE and self.estimate > fit:
            # the window is larger than the path: what it adds waits at the bottleneck
            self.full, self._reprobe_at = True, now + max(_REPROBE, _REPROBE_RTTS * self.rtt_min)
            return self._drain(2, rtt, now)
        if self.sample < _BETA * self.estimate:
            return None
        if waiting > self.estimate // 2:
            return None  # data waits for its reader: a bigger window would only hold more of it
        if self.estimate >= _GATE * self.rate_max * self.rtt_min:
            return None  # the window already covers the path: more would only queue
        return self._set(min(int(_GAMMA * self.sample), self.limit))

    def _track_rtt_min(self, rtt: float, now: float) -> bool:
        """The lowest round trip: the path's own delay. Not a sliding window: a window that holds
        about ``QUEUE / 2`` of queue would see the minimum creep up by that much per window.
        True when the path may have got longer: every round trip for ``_WINDOWED`` seconds stayed
        ``QUEUE`` above the lowest while the window sat at its least. That is no proof, for the
        least is built from ``rate_max``, a maximum: read 8 % high on a paced link it holds 4 ms of
        queue of its own, and taking that for the path moved the lowest up by it every 10 s (a
        model: 51.5 -> 120 ms in two minutes; one bench run read RTT + 32 ms, as this builds). So the
        window drains first, and the path is what the round trips say once the queue is gone
        (BBR's PROBE_RTT)."""
        if self._path_check and self._sent_at >= self._hold_until:  # (left once the smaller window showed)
            self._path_low = min(self._path_low, rtt)
        if self.samples == 1 or rtt < self.rtt_min:
            self.rtt_min, self._high_since = rtt, -1.0
        elif not self._path_check and rtt - self.rtt_min > QUEUE and self.estimate <= self.lowest:
            if self._high_since < 0:
                self._high_since = now
            elif now - self._high_since > _WINDOWED and now >= self._path_quiet_until:
                self._high_since = -1.0
                return True
        else:
            self._high_since = -1.0
        return False

    def _follow(self, rtt: float, queue: float | None, now: float, waiting: int) -> int | None:
        """The path was seen full: steer the window so that about ``QUEUE / 2`` seconds wait at
        the bottleneck, by the bytes the measured queue is off (an error in the rate moves the
        step a little, not the window: at 600 ms a 1 % error in rate x RTT is 6 ms of queue)."""
        if queue is None:
            return None  # too few round trips since the last change to tell
        step = int(self.rate_max * (QUEUE / 2 - queue))
        if queue > QUEUE:
            return self._change(max(self.lowest, self.estimate + step), rtt, now)
        if self.sample < _BETA * self.estimate or waiting > self.estimate // 2 or step <= 0:
            return None  # not window-limited, or queued enough
        grown = self.estimate + step
        if self.estimate < _UNDERSHOOT * self.fit:
            grown = max(grown, self.fit)  # back to the fit at once after an undershoot
        if now >= self._reprobe_at:  # now and then past it: the path may have got faster
            self._reprobe_at = now + max(_REPROBE, _REPROBE_RTTS * self.rtt_min)
            grown = max(grown, int(self.estimate * _PROBE_UP))
        return self._change(min(grown, self.limit), rtt, now)

    def _drain(self, rtts: int, rtt: float, now: float) -> int | None:
        """``_DRAIN`` of the fit for ``rtts`` round trips, then the fit (``acknowledged``)."""
        self._drain_until = now + rtts * rtt
        return self._change(max(self._floor, int(self.fit * _DRAIN)), rtt, now)

    def _change(self, estimate: int, rtt: float, now: float) -> int | None:
        """Any change once the path was full: the queue takes a round trip (with the queue) to
        show the new window, so what probes in flight meanwhile say is not evidence."""
        self._hold_until = now + rtt
        return self._set(estimate)

    def _set(self, estimate: int) -> int | None:
        if estimate == self.estimate:
            return None
        self.estimate = estimate
        self._recent.clear()  # the evidence was about the old window
        return estimate

    def abandon(self) -> None:
        """The probe will never be answered (tunnel closing)."""
        self.probing = False


@dataclass(slots=True)
class Pacer:
    """Sender side: the largest DATA message, from the rate at which the peer grants credit
    (its delivery rate: credit comes back as the bottleneck passes bytes). A message crosses a
    bottleneck whole and is granted whole, so its size is the burst the next grant releases;
    at about ``_GRANT_TIME`` of the rate, the sends follow the grants (ack clocking) instead of
    60 KiB at a time (49 ms of a 10 Mbit/s link, queued in front of every keystroke). On a fast
    path it stays at ``max_piece``."""

    max_piece: int
    piece: int = 0
    interval: float = 0.1
    _bytes: int = 0
    _since: float = -1.0

    def __post_init__(self) -> None:
        self.piece = self.piece or self.max_piece

    def granted(self, length: int, now: float) -> None:
        if self._since < 0:
            self._since = now
            return  # the first grant starts the clock: what it carries was sent before
        self._bytes += length
        elapsed = now - self._since
        if elapsed >= self.interval:
            rate = self._bytes / elapsed
            self.piece = min(self.max_piece, max(_GRANT_MIN, int(rate * _GRANT_TIME)))
            self._bytes, self._since = 0, now
