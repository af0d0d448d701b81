"""Bandwidth-delay product estimation for receive windows (sans-I/O), after gRPC-Go's
``internal/transport/bdp_estimator.go``.

The receiver sends a WebSocket ping when data arrives and no probe is out, and counts the
payload bytes that arrive until the pong: one sample of the bytes one round trip carries.
When a sample reaches 2/3 of the current estimate and the bandwidth it implies is the
highest seen, the window is too small to fill the path: the estimate becomes twice the
sample. Estimates only grow, up to ``limit``. Nothing new goes on the wire: pings are
WebSocket control frames every peer answers, and a bigger window is just a bigger WINDOW
grant (credit is additive), so an older peer of ours simply gets more credit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BdpEstimator"]

_BETA = 2 / 3
"""A sample this close to the estimate means the window, not the path, limited it."""
_GAMMA = 2
"""Growth factor applied to the sample."""
_ALPHA = 0.9
"""Weight of a new RTT sample in the moving average."""


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
    bw_max: float = 0.0
    sample: int = 0
    """Bytes received since the probe went out."""
    probing: bool = False
    _sent_at: float = 0.0
    _next_at: float = 0.0
    samples: int = 0

    def received(self, length: int, now: float) -> bool:
        """``length`` payload bytes arrived. True when a probe should go out now."""
        if self.probing:
            self.sample += length
            return False
        if self.estimate >= self.limit or now < self._next_at:
            return False
        self.probing = True
        self.sample = length
        self._sent_at = now
        return True

    def acknowledged(self, now: float) -> int | None:
        """The probe's pong arrived: returns the new estimate when it grew, else None."""
        if not self.probing:
            return None
        self.probing = False
        rtt = max(now - self._sent_at, 1e-6)
        self._next_at = now + self.min_interval
        self.samples += 1
        self.rtt = rtt if self.samples == 1 else self.rtt + (rtt - self.rtt) * _ALPHA
        bw = self.sample / max(self.rtt, 1e-6)
        if bw > self.bw_max:
            self.bw_max = bw
        if self.sample < _BETA * self.estimate or bw < self.bw_max:
            return None
        grown = min(int(_GAMMA * self.sample), self.limit)
        if grown <= self.estimate:
            return None
        self.estimate = grown
        return grown

    def abandon(self) -> None:
        """The probe will never be answered (tunnel closing)."""
        self.probing = False
