"""Pacing of bulk DATA at the sender (sans-I/O), after BBR (Cardwell et al., 2016).

On a long link a full-speed bulk stream keeps the link's bottleneck queue full, and every
interactive frame (an exec keystroke's echo) waits behind it: RTT + queue / rate. No receive
window pulls those bytes back; only sending bulk a little below the rate the link delivers
keeps that queue near empty. So:

- *Bottleneck bandwidth*: the delivery rate the peer's WINDOW grants show (credit returns
  when the peer's consumer took the bytes, i.e. after the link), measured between grant
  arrivals over at least one round trip, max-filtered over the last ``ROUNDS`` rounds.
- *Round trip*: the lowest seen (the tunnel's WebSocket pings, ``BdpEstimator.rtt_min``).
- *Pacing*: bulk leaves at ``gain x bandwidth``; the gain cycles per round trip through
  1.25 (probe: find a faster link), 0.75 (drain what the probe queued) and ``cruise`` (below
  1, so a queue left from start-up drains). Interactive frames are never paced.

*Start-up* (BBR's STARTUP): while the estimate still grows by ``GROWTH`` within
``PLATEAU`` samples the receiver's window is still opening (a long link's first seconds), and
pacing at what it delivered so far would only hold that opening back: nothing is paced
until the estimate stops growing.

*Small frames while paced*: an interactive frame that reaches the bottleneck just after a
bulk frame still waits for it to leave (64 KiB is 52 ms at 10 Mbit/s), so paced bulk goes
out in pieces of ``frame_time`` at the estimated rate (at least ``min_frame`` bytes).

*Reader-limited samples*: a slow kubectl reader returns credit slowly whatever the link
does; after start-up a sample below the estimate counts only when bulk was held back during
it (by the pacer or a full transport: ``held``), as BBR drops application-limited samples.
Otherwise one slow reader would pace every other bulk stream of the tunnel at its speed.

Only where it matters: with no samples (a Go peer sends no WINDOW) or a round trip under
``min_rtt`` (loopback: the bottleneck is the CPU, not a link queue, and pacing would only
cost throughput) nothing is paced.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["Pacer", "GAINS"]

GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
"""Per-round pacing gain cycle (BBR's ProbeBW); the 1.0 rounds use ``cruise`` instead."""
GROWTH = 1.25
"""Start-up ends once the estimate grew less than this ..."""
PLATEAU = 3
"""... over this many samples in a row."""
ROUNDS = 10
"""Bandwidth samples are max-filtered over this many round trips (BBR's window)."""


@dataclass(slots=True)
class Pacer:
    cruise: float = 0.95
    """Gain of the steady rounds: below 1 so the bottleneck queue drains."""
    min_rtt: float = 0.002
    """Below this round trip (seconds) nothing is paced."""
    slack: float = 0.002
    """Seconds of sending a burst may catch up after an idle spell."""
    min_interval: float = 0.02
    """A bandwidth sample spans at least this long (and at least one round trip)."""
    frame_time: float = 0.002
    """Seconds of link time one paced bulk frame may take."""
    min_frame: int = 4096
    rtt_min: float = 0.0
    """Lowest round trip seen (seconds), 0 when unknown; set by the caller."""
    bandwidth: float = 0.0
    """Bottleneck bandwidth estimate (bytes/s), 0 while unknown."""
    held: bool = False
    """Bulk waited for the pacer or the transport since the current sample began."""
    filled: bool = False
    """Start-up is over: the estimate stopped growing (the pipe is full)."""
    _full_bw: float = 0.0
    _full_count: int = 0
    _samples: deque[tuple[float, float]] = field(default_factory=deque)
    """(time, rate) of recent delivery samples, for the max filter."""
    _since: float = -1.0
    _bytes: int = 0
    _next_at: float = 0.0
    _cycle_at: float = 0.0
    _phase: int = 0

    def _round(self) -> float:
        return max(self.rtt_min, self.min_interval)

    def delivered(self, length: int, now: float) -> None:
        """The peer granted ``length`` bytes back (they left the link)."""
        if self._since < 0:  # the first grant starts the first interval; its bytes predate it
            self._since = now
            return
        self._bytes += length
        elapsed = now - self._since
        if elapsed < self._round():
            return
        rate = self._bytes / elapsed
        held, self.held = self.held, False
        self._since, self._bytes = now, 0
        samples = self._samples
        horizon = now - ROUNDS * self._round()
        while samples and samples[0][0] < horizon:  # bounded by the deque's length
            samples.popleft()
        if self.filled and rate < self.bandwidth and not held:
            return  # the reader, not the link, limited this one (an old estimate stays)
        samples.append((now, rate))
        self.bandwidth = max(r for _, r in samples)
        if not self.filled:
            if self.bandwidth >= GROWTH * self._full_bw:
                self._full_bw, self._full_count = self.bandwidth, 0
            else:
                self._full_count += 1
                self.filled = self._full_count >= PLATEAU

    def active(self) -> bool:
        return self.filled and self.rtt_min >= self.min_rtt

    def frame_limit(self) -> int | None:
        """Largest bulk payload to send in one message now (None: no limit)."""
        if not self.active():
            return None
        return max(self.min_frame, int(self.bandwidth * self.frame_time))

    def gain(self, now: float) -> float:
        """The pacing gain of the round ``now`` falls in (advances the cycle)."""
        length = self._round()
        if now - self._cycle_at >= length:
            steps = min(int((now - self._cycle_at) / length), len(GAINS))
            self._phase = (self._phase + steps) % len(GAINS)
            self._cycle_at = now
        gain = GAINS[self._phase]
        return self.cruise if gain == 1.0 else gain

    def delay(self, now: float) -> float:
        """Seconds until the next bulk message may go (<= 0: now)."""
        if not self.active():
            return 0.0
        wait = self._next_at - now
        if wait > 0:
            self.held = True
        return wait

    def sent(self, length: int, now: float) -> None:
        """A bulk message of ``length`` bytes went out at ``now``."""
        if not self.active():
            return
        rate = self.gain(now) * self.bandwidth
        self._next_at = max(self._next_at, now - self.slack) + length / rate
