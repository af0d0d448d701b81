"""What the edge answers itself, whatever the backend: the kubelet's ``/healthz`` (from the
edge's own state) and, for the cri and emulator backends, ``/metrics`` with edgestream's own
metrics. Everything else goes to the backend; every stream is counted on the way.

``/healthz`` follows the kubelet (``k8s.io/apiserver/pkg/server/healthz``): checks ``ping``,
``log``, ``syncloop`` plus ours, ``runtime`` (containerd / the kubelet answers); ``ok``, or with
``?verbose`` one ``[+]name ok`` line per check and ``healthz check passed``; a failure is a
500 listing ``[-]name failed: <why>`` (the kubelet withholds the reason on its public port;
10003 is authenticated, so we say it); ``?exclude=name`` skips a check; ``/healthz/<name>``
runs one check. With the kubelet backend ``/metrics`` is the kubelet's own (passed through).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import h11

from streamops.admin.labels import close_reason
from streamproto.aio.ratelog import RateLimitedLog
from streamproto.tunnel import MessageType, TunnelError
from streamproto.tunnel.mux import Stream

from .backends.base import Backend
from .config import EdgeConfig
from .stream import EdgeStream

if TYPE_CHECKING:
    from .session import AgentSession

__all__ = ["NodeEndpoints"]

logger = logging.getLogger(__name__)

_KINDS = {
    MessageType.LOGS_CONNECT: "logs",
    MessageType.EXEC_CONNECT: "exec",
    MessageType.ATTACH_CONNECT: "attach",
    MessageType.METRIC_CONNECT: "metrics",
    MessageType.PORTFORWARD_CONNECT: "portforward",
}
_LOOP_LAG_LIMIT = 5.0
"""syncloop fails when a stream waited longer than this for the edge's loop to serve it."""
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class NodeEndpoints:
    """A Backend that answers /healthz and /metrics itself and hands the rest on."""

    def __init__(self, backend: Backend, config: EdgeConfig) -> None:
        self.backend = backend
        self.config = config
        self.started = time.time()
        self.open: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()
        self._live: dict[EdgeStream, Stream | None] = {}
        """Streams being served, with their mux state (kept: it holds the stream's byte counts)."""
        self.connects = 0
        self.connected_at = 0.0
        # For the admin port's /metrics (edgestream.metrics): counted per tunnel or per stream.
        self.disconnects: Counter[str] = Counter()
        self.results: Counter[tuple[str, str]] = Counter()
        self.bytes_done: Counter[tuple[str, str]] = Counter()
        self.stalls_done = 0
        self.violations_done = 0
        self.dial_failures = 0
        self.last_dial_error = ""
        self.sessions: list[AgentSession] = []
        """The tunnels up now, oldest first (HA: one per cloudstream replica)."""
        self._messages = [0, 0]  # in, out: of finished tunnels
        self._unhealthy = RateLimitedLog(logger, interval=60.0)
        """A prober polling an unhealthy node gets one log line a minute, not one per probe."""

    # ------------------------------------------------------------------ Backend

    async def serve(self, stream: EdgeStream) -> None:
        kind = _KINDS.get(stream.kind, "other")
        self.total[kind] += 1
        self.open[kind] += 1
        self._live[stream] = stream.session.mux.streams.get(stream.connect_id)
        result = "error"
        try:
            if stream.kind == MessageType.METRIC_CONNECT:
                path = stream.request.decoded_path
                if path == "/healthz" or path.startswith("/healthz/"):
                    await self.healthz(stream, path)
                    return
                if path.rstrip("/") == "/metrics" and self.config.backend != "kubelet":
                    await stream.answer(200)
                    await stream.send(self.agent_metrics())
                    return
            await self.backend.serve(stream)
            result = "ok" if stream.code in (0, 200) else "refused"
        except asyncio.CancelledError:
            result = "cancelled"
            raise
        finally:
            state = self._live.pop(stream, None)
            self.open[kind] -= 1
            self.bytes_sent[kind] += stream.bytes_out
            self.results[kind, result] += 1
            if state is not None:
                self.bytes_done["received", kind] += state.bytes_in
                self.bytes_done["sent", kind] += state.bytes_out

    async def close(self) -> None:
        await self.backend.close()

    def on_dial_error(self, why: str) -> None:
        """``run_tunnel``'s callback: a dial failed (``why`` is the line it logs)."""
        self.dial_failures += 1
        self.last_dial_error = why

    @property
    def session(self) -> AgentSession | None:
        """The newest tunnel up, or None."""
        return self.sessions[-1] if self.sessions else None

    def on_session(self, session: AgentSession | None) -> None:
        """``run_tunnel``'s callback: the newest tunnel up after a change (None: none is up).
        With several tunnels (HA) it is called again with a tunnel seen before when another
        ends: a session seen before is not a new tunnel, and an ended one (``closed_reason``
        set, which ``hold`` guarantees before it reports) is accounted exactly once."""
        for old in [s for s in self.sessions if s is not session and (session is None or s.closed_reason is not None)]:
            self.sessions.remove(old)
            self._messages[0] += old.messages_in
            self._messages[1] += old.messages_out
            self.disconnects[close_reason(old.closed_reason, old.over_budget)] += 1
            self.stalls_done += old.credit_stalls
            self.violations_done += old.violations.total
        if session is not None and session not in self.sessions:
            self.connects += 1
            self.connected_at = time.time()
            self.sessions.append(session)

    # ------------------------------------------------------------------ /healthz

    def _checks(self, stream: EdgeStream) -> list[tuple[str, Callable[[], Awaitable[str | None]]]]:
        async def ping() -> str | None:
            return None

        async def log() -> str | None:
            for handler in logging.getLogger().handlers:
                out = getattr(handler, "stream", None)
                if out is not None and getattr(out, "closed", False):
                    return f"log handler {handler!r} writes to a closed stream"
            return None

        async def syncloop() -> str | None:
            lag = time.monotonic() - stream.started
            if lag > _LOOP_LAG_LIMIT:
                return f"the edge's event loop took {lag:.1f} s to serve this request"
            return None

        return [("ping", ping), ("log", log), ("syncloop", syncloop), ("runtime", self._runtime_check)]

    async def _runtime_check(self) -> str | None:
        """None when the backend's runtime answers, else why not."""
        backend = self.config.backend
        try:
            async with asyncio.timeout(self.config.cri_timeout):
                if backend == "cri":
                    await self.backend.version()  # type: ignore[attr-defined]
                elif backend == "kubelet":
                    return await _kubelet_healthz(self.config.kubelet_address)
        except TimeoutError:
            what = "containerd" if backend == "cri" else f"the kubelet at {self.config.kubelet_address}"
            return f"{what} did not answer within {self.config.cri_timeout:g} s"
        except TunnelError as exc:  # BackendError and kin: their text names the socket and the cause
            return str(exc)
        return None

    async def healthz(self, stream: EdgeStream, path: str) -> None:
        checks = self._checks(stream)
        name = path[len("/healthz/") :] if path.startswith("/healthz/") else None
        if name is not None:
            check = dict(checks).get(name)
            if check is None:
                await stream.answer(404, "404 page not found")
                return
            problem = await check()
            if problem is not None:
                await stream.answer(500, f"internal server error: {problem}")
                return
            await stream.answer(200)
            await stream.send(b"ok")
            return
        query = stream.query()
        excluded = set(query.get("exclude", []))
        lines: list[str] = []
        failed = False
        for check_name, check in checks:
            if check_name in excluded:
                excluded.discard(check_name)
                lines.append(f"[+]{check_name} excluded: ok")
                continue
            problem = await check()
            if problem is None:
                lines.append(f"[+]{check_name} ok")
            else:
                failed = True
                lines.append(f"[-]{check_name} failed: {problem}")
        if excluded:
            names = ",".join(f'"{n}"' for n in sorted(excluded))
            lines.append(f"warn: some health checks cannot be excluded: no matches for {names}")
        if failed:
            self._unhealthy.event("healthz", "! healthz failed on node %s: %s", self.config.node_name,
                                  "; ".join(line for line in lines if line.startswith("[-]")))
            await stream.answer(500, "\n".join(lines) + "\nhealthz check failed")
            return
        await stream.answer(200)
        if "verbose" in query:
            await stream.send(("\n".join(lines) + "\nhealthz check passed\n").encode())
        else:
            await stream.send(b"ok")

    # ------------------------------------------------------------------ /metrics

    def agent_metrics(self) -> bytes:
        """edgestream's own metrics, Prometheus text format 0.0.4."""
        out: list[str] = []

        def family(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {_num(value)}" for labels, value in samples)

        proc = _process_figures()
        for name, kind, text in (
            ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds."),
            ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes."),
            ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes."),
            ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds."),
            ("process_open_fds", "gauge", "Number of open file descriptors."),
            ("process_max_fds", "gauge", "Maximum number of open file descriptors."),
        ):
            if name in proc:
                family(name, kind, text, [("", proc[name])])
        node = f'node="{_escape(self.config.node_name)}",backend="{self.config.backend}"'
        family("edgestream_info", "gauge", "edgestream's node name and backend.", [("{" + node + "}", 1)])
        sessions = self.sessions
        family("edgestream_tunnel_up", "gauge", "1 while a tunnel to cloudstream is up.", [("", int(bool(sessions)))])
        family("edgestream_tunnels_up", "gauge", "Tunnels to cloudstream up now (HA: one per replica).",
               [("", len(sessions))])
        family("edgestream_tunnel_connects_total", "counter", "Tunnels established since edgestream started.",
               [("", self.connects)])
        family("edgestream_tunnel_reconnects_total", "counter", "Tunnels established after the first one.",
               [("", max(0, self.connects - 1))])
        msgs_in = self._messages[0] + sum(s.messages_in for s in sessions)
        msgs_out = self._messages[1] + sum(s.messages_out for s in sessions)
        family("edgestream_tunnel_messages_received_total", "counter", "Tunnel messages received from the cloud.",
               [("", msgs_in)])
        family("edgestream_tunnel_messages_sent_total", "counter", "Tunnel messages sent to the cloud.", [("", msgs_out)])
        kinds = sorted(set(_KINDS.values()))
        family("edgestream_streams_open", "gauge", "Streams being served now, by kind.",
               [(f'{{kind="{k}"}}', self.open[k]) for k in kinds])
        family("edgestream_streams_total", "counter", "Streams served since edgestream started, by kind.",
               [(f'{{kind="{k}"}}', self.total[k]) for k in kinds])
        live = Counter[str]()
        for s in self._live:
            live[_KINDS.get(s.kind, "other")] += s.bytes_out
        family("edgestream_stream_bytes_sent_total", "counter", "Body bytes sent to the cloud, by stream kind.",
               [(f'{{kind="{k}"}}', self.bytes_sent[k] + live[k]) for k in kinds])
        return ("\n".join(out) + "\n").encode()


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _process_figures() -> dict[str, float]:
    """The Prometheus process collector's figures, from /proc/self (Linux)."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # fields[0] is field 3 (state): utime=14, stime=15, starttime=22, vsize=23, rss=24
        out["process_cpu_seconds_total"] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
        out["process_virtual_memory_bytes"] = int(fields[20])
        out["process_resident_memory_bytes"] = int(fields[21]) * _PAGE
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        out["process_start_time_seconds"] = btime + int(fields[19]) / _CLK_TCK
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    try:
        out["process_open_fds"] = len(os.listdir("/proc/self/fd"))
    except OSError:
        pass
    out["process_max_fds"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return out


async def _kubelet_healthz(address: str) -> str | None:
    """GET /healthz on the kubelet (edged); None when it answers 200."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError as exc:
        return f"the kubelet at {address} is unreachable: {exc.strerror or exc}"
    try:
        conn = h11.Connection(h11.CLIENT)
        writer.write(conn.send(h11.Request(method="GET", target="/healthz", headers=[
            ("Host", address), ("Connection", "close"), ("User-Agent", "edgestream")])))
        writer.write(conn.send(h11.EndOfMessage()))
        status, body = 0, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(4096))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data) and len(body) < 1024:
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if status == 200:
            return None
        return f"the kubelet at {address} answered {status}: {body[:300].decode(errors='replace').strip()}"
    except h11.RemoteProtocolError as exc:
        return f"the kubelet at {address} answered something that is not HTTP: {exc}"
    except OSError as exc:
        return f"the kubelet at {address} dropped the connection: {exc}"
    finally:
        writer.close()
        try:
            async with asyncio.timeout(1):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            pass
