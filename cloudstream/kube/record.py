"""KubeEdge's tunnel-port record, sans-I/O: the ``tunnelportrecord.kubeedge.io`` annotation.

cloudcore (``cloud/cmd/cloudcore/app/server.go`` NegotiateTunnelPort) keeps, on the ConfigMap
``kubeedge/tunnelport``, the JSON of ``iptables.TunnelPortRecord``::

    {"ipTunnelPort":{"192.168.1.16":10351},"port":{"10351":true}}

``ipTunnelPort`` maps a cloudcore's IP to its port; ``port`` (Go ``map[int]bool``, so the keys are
decimal strings) holds every port ever handed out. A new cloudcore takes the smallest port above
``constants.ServerPort`` (10350) that ``port`` does not hold; an IP already present keeps its port.
The iptables-manager's pod-deletion cleanup removes only the ``ipTunnelPort`` entry, never the
``port`` one, "so that port number is never reused" (a node still pointing at it must not land on
another replica). We do the same, and write the JSON as Go's encoding/json does (keys sorted).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

from streamproto.tunnel.errors import ConfigError

__all__ = [
    "ANNOTATION", "CONFIGMAP", "FIRST_PORT", "NAMESPACE", "RELEASED", "SERVER_PORT", "TunnelPortRecord", "claim_in",
    "release_in",
]

NAMESPACE = "kubeedge"
"""``constants.SystemNamespace``."""
CONFIGMAP = "tunnelport"
"""``modules.TunnelPort``."""
ANNOTATION = "tunnelportrecord.kubeedge.io"
"""``modules.TunnelPortRecordAnnotationKey``."""
SERVER_PORT = 10350
"""``constants.ServerPort``; negotiatePort starts its search one above."""
FIRST_PORT = SERVER_PORT + 1
RELEASED = "kubeedge-stream.io/released-tunnel-ports"
"""Ours, beside cloudcore's: ``{ip: port}`` of entries released on a clean shutdown, so that the same
IP coming back (a restart on the host network, a rolling update) gets its old port again while no
other IP ever does. Go cloudcores update the ConfigMap they read, so they keep this annotation."""
MAX_RECORD = 256 * 1024
"""Annotations hold 256 KiB in all; a longer value is not a record anyone wrote."""


@dataclass(frozen=True, slots=True)
class TunnelPortRecord:
    ip_ports: dict[str, int] = field(default_factory=dict)
    """``ipTunnelPort``: replica IP -> its port."""
    ports: frozenset[int] = frozenset()
    """``port``: every port handed out (a released IP's port stays here)."""

    @classmethod
    def parse(cls, text: str | None) -> TunnelPortRecord:
        """The annotation's value; None or empty is an empty record (a ConfigMap made by hand)."""
        if not text:
            return cls()
        if len(text) > MAX_RECORD:
            raise ConfigError(f"{ANNOTATION}: {len(text)} bytes, more than an annotation holds")
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{ANNOTATION} is not JSON ({exc}); fix or delete the annotation of {NAMESPACE}/{CONFIGMAP}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{ANNOTATION} is not a JSON object")
        ip_ports: dict[str, int] = {}
        for ip, port in (raw.get("ipTunnelPort") or {}).items():
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 65535:
                raise ConfigError(f"{ANNOTATION}: ipTunnelPort[{ip!r}] = {port!r} is not a TCP port")
            ip_ports[str(ip)] = port
        ports: set[int] = set(ip_ports.values())
        for key, used in (raw.get("port") or {}).items():
            try:
                port = int(key)
            except (TypeError, ValueError):
                raise ConfigError(f"{ANNOTATION}: port key {key!r} is not a number (Go reads it as map[int]bool)") from None
            if used:
                ports.add(port)
        return cls(ip_ports, frozenset(ports))

    def dump(self) -> str:
        """Go's ``json.Marshal(record)``: compact, map keys sorted as strings."""
        ip_part = {ip: self.ip_ports[ip] for ip in sorted(self.ip_ports)}
        port_part = {str(p): True for p in sorted(self.ports, key=str)}
        return json.dumps({"ipTunnelPort": ip_part, "port": port_part}, separators=(",", ":"))

    def port_of(self, ip: str) -> int | None:
        return self.ip_ports.get(ip)

    def claim(self, ip: str, previous: int | None = None) -> tuple[TunnelPortRecord, int]:
        """(the record with ``ip`` holding a port, that port): its own when it has one, else
        ``previous`` (the port it released) when no other IP holds it, else the smallest free one
        above 10350, as negotiatePort picks it."""
        own = self.ip_ports.get(ip)
        if own is not None:
            return (self if own in self.ports else TunnelPortRecord(self.ip_ports, self.ports | {own})), own
        if previous is not None and previous not in self.ip_ports.values() and 0 < previous <= 65535:
            return TunnelPortRecord({**self.ip_ports, ip: previous}, self.ports | {previous}), previous
        taken = self.ports | set(self.ip_ports.values())
        port = FIRST_PORT
        while port in taken:  # bounded: taken is finite
            port += 1
        if port > 65535:
            raise ConfigError(f"{ANNOTATION}: no free port above {SERVER_PORT} (the record holds {len(taken)})")
        return TunnelPortRecord({**self.ip_ports, ip: port}, self.ports | {port}), port

    def release(self, ip: str, port: int) -> TunnelPortRecord | None:
        """The record without ``ip``'s entry, when it still maps to ``port``; None: nothing to do
        (someone else already removed or re-pointed it). The port stays used, as KubeEdge keeps it."""
        if self.ip_ports.get(ip) != port:
            return None
        return TunnelPortRecord({k: v for k, v in self.ip_ports.items() if k != ip}, self.ports)

    def routes(self) -> list[tuple[int, str]]:
        """(port, IPv4) per entry, sorted by port: the DNAT rules KubeEdge's iptables-manager keeps.
        Entries that are not IPv4 addresses are skipped (iptables writes IPv4 nat rules)."""
        out = []
        for ip, port in self.ip_ports.items():
            try:
                if isinstance(ipaddress.ip_address(ip), ipaddress.IPv4Address):
                    out.append((port, ip))
            except ValueError:
                continue
        return sorted(out)


def _released(text: str | None) -> dict[str, int]:
    """Our released-ports annotation; anything unreadable is no memory (never an error: it is a hint)."""
    try:
        raw = json.loads(text or "{}")
    except ValueError:
        return {}
    if not isinstance(raw, dict) or len(text or "") > MAX_RECORD:
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)}


def _with(annotations: dict[str, str], record: TunnelPortRecord, released: dict[str, int]) -> dict[str, str]:
    out = {**annotations, ANNOTATION: record.dump()}
    if released:
        out[RELEASED] = json.dumps({k: released[k] for k in sorted(released)}, separators=(",", ":"))
    else:
        out.pop(RELEASED, None)
    return out


def claim_in(annotations: dict[str, str], ip: str) -> tuple[dict[str, str] | None, int]:
    """The ConfigMap's annotations with ``ip`` holding a port (None: already so), and the port."""
    released = _released(annotations.get(RELEASED))
    record, port = TunnelPortRecord.parse(annotations.get(ANNOTATION)).claim(ip, released.pop(ip, None))
    new = _with(annotations, record, released)
    return (None if new == annotations else new), port


def release_in(annotations: dict[str, str], ip: str, port: int) -> dict[str, str] | None:
    """The annotations without ``ip``'s entry, remembered as released (None: it was gone or re-pointed)."""
    record = TunnelPortRecord.parse(annotations.get(ANNOTATION)).release(ip, port)
    if record is None:
        return None
    return _with(annotations, record, {**_released(annotations.get(RELEASED)), ip: port})
