"""cloudstream's running totals for the admin port's ``/metrics``.

Counted per tunnel, per stream or per refusal, never per message: plain ints and Counters
bumped where the event already happens. What is live (streams, queues, bytes of running
streams) is not counted at all: the collector (``metrics``) reads it from the registry at
scrape time, and a stream's bytes move here once, when it ends (``stream_done``).
The histograms observe once per stream.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, Histogram

from streamops.admin.labels import kind_name
from streamproto.tunnel.mux import Stream

__all__ = ["CloudStats"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DURATION_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


class CloudStats:
    def __init__(self) -> None:
        self.tunnel_connects = 0
        self.tunnel_disconnects: Counter[str] = Counter()
        """reason (``streamops.admin.labels.close_reason``) -> tunnels ended."""
        self.stream_opens: Counter[tuple[str, str]] = Counter()
        """(kind, result) -> kubelet-API requests carried to an edge."""
        self.bytes_done: Counter[tuple[str, str]] = Counter()
        """(direction, kind) -> tunnel payload bytes of streams that ended (received: from edges)."""
        self.errors: Counter[str] = Counter()
        self.refusals: Counter[tuple[str, str]] = Counter()
        """(listener, reason) -> refused dials and requests (the accept layer keeps its own)."""
        self.stalls_done: Counter[str] = Counter()
        """cause -> stalls of tunnels that ended (live tunnels are read at scrape time)."""
        self.violations_done = 0
        self.registry = CollectorRegistry(auto_describe=True)
        """The histograms live here; ``metrics`` registers its collector beside them."""
        self.setup_seconds = Histogram(
            "kubeedge_stream_stream_setup_seconds",
            "From opening a stream on the tunnel to the edge's first answer (status or first byte), by kind.",
            ["kind"], registry=self.registry, buckets=_LATENCY_BUCKETS,
        )
        self.first_byte_seconds = Histogram(
            "kubeedge_stream_time_to_first_byte_seconds",
            "logs/metrics: from the request head to the first body byte written to the API server.",
            ["kind"], registry=self.registry, buckets=_LATENCY_BUCKETS,
        )
        self.exec_round_trip_seconds = Histogram(
            "kubeedge_stream_exec_round_trip_seconds",
            "exec/attach/port-forward: from the request head to the edge's upgrade answer (101) reaching the API "
            "server, through the tunnel, the edge and its runtime.",
            ["kind"], registry=self.registry, buckets=_LATENCY_BUCKETS,
        )
        self.duration_seconds = Histogram(
            "kubeedge_stream_stream_duration_seconds", "How long streams lasted, by kind.",
            ["kind"], registry=self.registry, buckets=_DURATION_BUCKETS,
        )

    def stream_done(self, stream: Stream) -> None:
        """A stream's state left the mux: keep its bytes (once per stream)."""
        kind = kind_name(stream.kind)
        if stream.bytes_in:
            self.bytes_done["received", kind] += stream.bytes_in
        if stream.bytes_out:
            self.bytes_done["sent", kind] += stream.bytes_out
