"""cloudstream's ``/metrics``: a prometheus_client Collector that reads, at scrape time, what the
process holds anyway (the session registry, each tunnel's mux and send queue, the accept layer's
counts) plus the per-event totals in ``stats.CloudStats``. Nothing here runs per message.

Labels are bounded: kinds, states, directions, reasons and causes come from fixed sets; the
``node`` label only on the ``kubeedge_stream_node_*`` families, one series per connected node
(nodes are bounded by certificates and ``--max-connections``), never a client address.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamops.admin.labels import CLOSE_REASONS, kind_name

from .listener import Listener
from .registry import SessionRegistry

__all__ = ["CloudCollector", "listener_label"]

_KINDS = ("logs", "metrics", "exec", "attach", "portforward")
_STATES = ("open", "local-closed", "remote-closed")
_RESULTS = ("ok", "edge_error", "timeout", "tunnel_error", "unavailable", "no_answer")
"""How a stream's opening went (``kubelet_api.forward``)."""
_CAUSES = ("bug", "edge_timeout", "malformed_message", "slow_client", "stream_cut")


def listener_label(listener: Listener) -> str:
    return "tunnel" if listener.name == "tunnel" else "kubelet_api"


class CloudCollector(Collector):
    def __init__(self, registry: SessionRegistry, listeners: Callable[[], list[Listener]], max_nodes: int = 2000) -> None:
        self.registry = registry
        self.listeners = listeners
        self.max_nodes = max_nodes
        """Per-node series beyond this many nodes are left out (the totals still count them)."""

    def collect(self) -> Iterator[Metric]:
        stats = self.registry.stats
        sessions = self.registry.sessions()
        yield _gauge("kubeedge_stream_tunnels_connected", "Edge tunnels connected now.", [([], len(sessions))])
        yield _counter("kubeedge_stream_tunnel_connects", "Edge tunnels established.", [([], stats.tunnel_connects)])
        yield _counter(
            "kubeedge_stream_tunnel_disconnects", "Edge tunnels ended, by reason.",
            [([r], stats.tunnel_disconnects[r]) for r in CLOSE_REASONS], ["reason"],
        )
        streams: Counter[tuple[str, str]] = Counter()
        live_bytes: Counter[tuple[str, str]] = Counter()
        stalls = Counter(stats.stalls_done)
        violations = stats.violations_done
        queued = 0
        nodes: list[tuple[str, int, int]] = []
        for session in sessions:
            for state in session.mux.streams.values():
                kind = kind_name(state.kind)
                streams[kind, state.state.value] += 1
                live_bytes["received", kind] += state.bytes_in
                live_bytes["sent", kind] += state.bytes_out
            depth = len(session._queue)
            queued += depth
            stalls["credit"] += session.credit_stalls
            stalls["slow_reader"] += session.reader_stalls
            violations += session.violations.total
            if len(nodes) < self.max_nodes:
                nodes.append((session.node, len(session.streams), depth))
        yield _gauge(
            "kubeedge_stream_streams", "Streams on the tunnels now, by kind and state.",
            [([k, s], streams[k, s]) for k in _KINDS for s in _STATES], ["kind", "state"],
        )
        yield _counter(
            "kubeedge_stream_stream_opens", "kubelet-API requests carried to an edge, by kind and result.",
            [([k, r], stats.stream_opens[k, r]) for k in _KINDS for r in _RESULTS], ["kind", "result"],
        )
        total = stats.bytes_done + live_bytes
        yield _counter(
            "kubeedge_stream_bytes", "Stream payload bytes on the tunnels (received: from edges), by kind.",
            [([d, k], total[d, k]) for d in ("received", "sent") for k in _KINDS], ["direction", "kind"],
        )
        errors = Counter(dict.fromkeys(_CAUSES, 0))
        errors.update(stats.errors)
        errors["malformed_message"] += violations
        yield _counter(
            "kubeedge_stream_errors", "Errors, by cause (stream_cut: a tunnel ended under a stream; "
            "slow_client: a stream ended because its client read nothing; malformed_message: from an edge).",
            [([c], n) for c, n in sorted(errors.items())], ["cause"],
        )
        refusals = Counter(stats.refusals)
        for listener in self.listeners():
            name = listener_label(listener)
            for kind, n in listener.refused_by.items():
                refusals[name, "accept_" + kind.replace("-", "_")] += n
        yield _counter(
            "kubeedge_stream_refusals", "Connections, dials and requests refused, by listener and reason "
            "(accept_*: the accept layer: caps, handshake timeout, TLS).",
            [([ls, r], n) for (ls, r), n in sorted(refusals.items())], ["listener", "reason"],
        )
        yield _gauge("kubeedge_stream_send_queue_messages", "Tunnel messages waiting in send queues now.", [([], queued)])
        yield _counter(
            "kubeedge_stream_stalls", "Waits on the tunnels, by cause (credit: a sender waited for the edge's "
            "window; slow_reader: the tunnel reader waited for one stream's slow client).",
            [([c], stalls[c]) for c in ("credit", "slow_reader")], ["cause"],
        )
        connections = []
        for listener in self.listeners():
            name = listener_label(listener)
            connections.append(([name, "open"], listener.open_connections))
            connections.append(([name, "pending"], listener.pending))
        yield _gauge(
            "kubeedge_stream_connections", "Connections on each listener now (pending: not authenticated yet).",
            connections, ["listener", "state"],
        )
        yield _gauge(
            "kubeedge_stream_node_streams", "Streams of each connected node now.",
            [([n], s) for n, s, _ in nodes], ["node"],
        )
        yield _gauge(
            "kubeedge_stream_node_send_queue_messages", "Tunnel messages waiting in each connected node's send queue.",
            [([n], q) for n, _, q in nodes], ["node"],
        )


def _gauge(name: str, doc: str, samples: Sequence[tuple[list[str], float]], labels: list[str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels or [])
    for values, value in samples:
        family.add_metric(values, value)
    return family


def _counter(name: str, doc: str, samples: Sequence[tuple[list[str], float]], labels: list[str] | None = None) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels or [])
    for values, value in samples:
        family.add_metric(values, value)
    return family
