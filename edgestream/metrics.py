"""edgestream's ``/metrics`` on the admin port (one node, or every node of an ``emulate`` fleet,
summed): read at scrape time from ``NodeEndpoints`` and the live tunnel, nothing per message.
The families share cloudstream's names where they mean the same (tunnels, streams, bytes);
``direction="received"`` is what came from the cloud."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamops.admin.labels import CLOSE_REASONS, kind_name

from .node_endpoints import NodeEndpoints

__all__ = ["EdgeCollector"]

_KINDS = ("logs", "metrics", "exec", "attach", "portforward")
_STATES = ("open", "local-closed", "remote-closed")


class EdgeCollector(Collector):
    def __init__(self, nodes: Callable[[], list[NodeEndpoints]]) -> None:
        self.nodes = nodes

    def collect(self) -> Iterator[Metric]:
        nodes = self.nodes()
        up = connects = reconnects = queued = stalls = violations = dial_failures = 0
        disconnects: Counter[str] = Counter()
        results: Counter[tuple[str, str]] = Counter()
        byte_counts: Counter[tuple[str, str]] = Counter()
        streams: Counter[tuple[str, str]] = Counter()
        for node in nodes:
            connects += node.connects
            reconnects += max(0, node.connects - 1)
            dial_failures += node.dial_failures
            disconnects.update(node.disconnects)
            results.update(node.results)
            byte_counts.update(node.bytes_done)
            stalls += node.stalls_done
            violations += node.violations_done
            for state in list(node._live.values()):
                if state is not None:
                    kind = kind_name(state.kind)
                    byte_counts["received", kind] += state.bytes_in
                    byte_counts["sent", kind] += state.bytes_out
            for session in node.sessions:  # HA: every tunnel, not only the newest
                up += 1
                queued += len(session._queue)
                stalls += session.credit_stalls
                violations += session.violations.total
                for state in session.mux.streams.values():
                    streams[kind_name(state.kind), state.state.value] += 1
        yield _family(GaugeMetricFamily, "kubeedge_stream_tunnels_connected", "Tunnels to cloudstream up now.", [([], up)])
        yield _family(CounterMetricFamily, "kubeedge_stream_tunnel_connects", "Tunnels established.", [([], connects)])
        yield _family(
            CounterMetricFamily, "kubeedge_stream_tunnel_reconnects", "Tunnels established after a node's first one.",
            [([], reconnects)],
        )
        yield _family(
            CounterMetricFamily, "kubeedge_stream_tunnel_dial_failures", "Dials to cloudstream that failed.",
            [([], dial_failures)],
        )
        yield _family(
            CounterMetricFamily, "kubeedge_stream_tunnel_disconnects", "Tunnels ended, by reason.",
            [([r], disconnects[r]) for r in CLOSE_REASONS], ["reason"],
        )
        yield _family(
            GaugeMetricFamily, "kubeedge_stream_streams", "Streams on the tunnels now, by kind and state.",
            [([k, s], streams[k, s]) for k in _KINDS for s in _STATES], ["kind", "state"],
        )
        yield _family(
            CounterMetricFamily, "kubeedge_stream_stream_opens", "Streams the cloud opened here, by kind and result.",
            [([k, r], results[k, r]) for k in _KINDS for r in ("ok", "refused", "error", "cancelled")],
            ["kind", "result"],
        )
        yield _family(
            CounterMetricFamily, "kubeedge_stream_bytes", "Stream payload bytes on the tunnels (received: from the "
            "cloud), by kind.", [([d, k], byte_counts[d, k]) for d in ("received", "sent") for k in _KINDS],
            ["direction", "kind"],
        )
        yield _family(
            CounterMetricFamily, "kubeedge_stream_errors", "Errors, by cause (malformed_message: from the cloud).",
            [(["malformed_message"], violations)], ["cause"],
        )
        yield _family(
            GaugeMetricFamily, "kubeedge_stream_send_queue_messages", "Tunnel messages waiting in send queues now.",
            [([], queued)],
        )
        yield _family(
            CounterMetricFamily, "kubeedge_stream_stalls", "Waits on the tunnels, by cause (credit: a sender "
            "waited for the cloud's window).", [(["credit"], stalls)], ["cause"],
        )


def _family(
    cls: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str, doc: str,
    samples: Sequence[tuple[list[str], float]], labels: list[str] | None = None,
) -> Metric:
    family = cls(name, doc, labels=labels or [])
    for values, value in samples:
        family.add_metric(values, value)
    return family
