"""The link emulator's profiles and statistics (``testkit.link`` re-exports them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """One direction's link, applied to both directions: delay (s), rate (bytes/s, None = unlimited), buffer."""

    name: str
    one_way_delay: float = 0.0
    rate: float | None = None
    buffer: int = 256 * 1024

    def __post_init__(self) -> None:
        if not 0 <= self.one_way_delay <= 10:
            raise ValueError(f"link {self.name}: one_way_delay {self.one_way_delay} s not in [0, 10]")
        if self.rate is not None and self.rate < 1024:
            raise ValueError(f"link {self.name}: rate {self.rate} B/s below 1 KiB/s")
        if not 4096 <= self.buffer <= 1 << 30:
            raise ValueError(f"link {self.name}: buffer {self.buffer} B not in [4 KiB, 1 GiB]")

    @property
    def rtt(self) -> float:
        return 2 * self.one_way_delay

    @property
    def bdp(self) -> int:
        """Bandwidth-delay product over the round trip (0 without a rate)."""
        return int(self.rate * self.rtt) if self.rate else 0

    @property
    def wire(self) -> int:
        """Bytes one direction's wire holds (rate × one-way delay; 0 without a rate)."""
        return int(self.rate * self.one_way_delay) if self.rate else 0


def _profile(name: str, delay_ms: float, mbit: float | None, buffer: int | None = None) -> LinkProfile:
    rate = mbit * 1e6 / 8 if mbit else None
    if buffer is None:  # one bandwidth-delay product, the classic bottleneck-buffer rule of thumb
        buffer = max(64 * 1024, int(rate * 2 * delay_ms / 1000)) if rate else 256 * 1024
    return LinkProfile(name, delay_ms / 1000, rate, buffer)


PROFILES: dict[str, LinkProfile] = {
    p.name: p
    for p in (
        _profile("lan", 0, None),
        _profile("wan-20ms-1gbit", 10, 1000),
        _profile("wan-50ms-100mbit", 25, 100),
        _profile("cellular-100ms-20mbit", 50, 20),
        _profile("satellite-600ms-10mbit", 300, 10),
    )
}


@dataclass(frozen=True, slots=True)
class DirectionStats:
    """One direction (``up``: client to upstream, ``down``: back), over all connections."""

    bytes_in: int  # read from the sending side
    bytes_out: int  # written to the receiving side
    held: int  # held in the proxy now (queued + on the wire + delivered-but-unwritable)
    max_held: int  # the most one connection held at once
    max_queue: int  # the longest bottleneck queue one connection had (bytes not yet departed)
    full: int  # how many times reading stopped because the buffer was full
    paused: int  # connections whose sending side is not being read now (buffer full)


@dataclass(frozen=True, slots=True)
class LinkStats:
    up: DirectionStats
    down: DirectionStats
    connections: int  # open now
    accepted: int
    refused: int  # over max_connections
    failed: int  # the upstream could not be reached
    resets: int  # connections reset by reset_all()
