"""Expiry of the certificates a running process uses: a warning 30, 7 and 1 days ahead, an error
once expired, each line naming the file, the subject and the command that renews it.

Both processes call :func:`watch_cloud` / :func:`watch_edge` once at start: the files are read
then and once a day (from disk, so a renewed file counts at once), on the caller's event loop
through ``loop.call_later`` (certs itself never imports asyncio).
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import CertificateError
from .files import Layout, load_certs
from .inspect import sans
from .site import LOOPBACK_SANS

__all__ = ["BANDS", "InUse", "check_expiry", "cloud_in_use", "edge_in_use", "watch", "watch_cloud", "watch_edge"]

logger = logging.getLogger("streamcerts.expiry")

BANDS = (30.0, 7.0, 1.0)
"""Days before expiry at which a warning is logged (once per band; again at each start)."""
DAY = 86400.0


class _Loop(Protocol):
    def call_later(self, delay: float, callback: Callable[[], object]) -> Any: ...


@dataclass(frozen=True, slots=True)
class InUse:
    role: str
    path: Path
    fix: str
    keep_sans: bool = False
    """A server certificate: the fix reissues it with the SANs it has now."""


def _band(days_left: float) -> float | None:
    """The smallest band ``days_left`` falls in (0 = expired), None when beyond all of them."""
    if days_left <= 0:
        return 0.0
    inside = [b for b in BANDS if days_left <= b]
    return min(inside) if inside else None


def check_expiry(
    files: list[InUse], now: dt.datetime | None = None, last: dict[Path, float | None] | None = None,
    log: logging.Logger = logger,
) -> dict[Path, float | None]:
    """Log what is near or past expiry; returns each file's band. With ``last`` (the previous
    result) a file is logged only when it entered a new band since."""
    now = now or dt.datetime.now(dt.UTC)
    bands: dict[Path, float | None] = {}
    for item in files:
        try:
            cert = load_certs(item.path)[0]
        except CertificateError as exc:
            log.warning("! %s certificate: %s (checked for expiry)", item.role, exc)
            continue
        end = cert.not_valid_after_utc
        days = (end - now).total_seconds() / DAY
        band = bands[item.path] = _band(days)
        if band is None or (last is not None and last.get(item.path) == band):
            continue
        subject = cert.subject.rfc4514_string()
        fix = item.fix
        if item.keep_sans:
            fix += "".join(f" --san {shlex.quote(n.split(':', 1)[1])}" for n in sans(cert)
                           if n.split(":", 1)[1] not in LOOPBACK_SANS)
        if band == 0:
            log.error("x %s certificate %s (%s) EXPIRED on %s: peers refuse it; fix: %s",
                      item.role, item.path, subject, end.isoformat(), fix)
        else:
            left = f"{days:.1f} days" if days >= 1 else f"{days * 24:.1f} hours"
            log.warning("! %s certificate %s (%s) expires in %s, on %s; fix: %s",
                        item.role, item.path, subject, left, end.isoformat(), fix)
    return bands


def watch(loop: _Loop, files: list[InUse], interval: float = DAY) -> Callable[[], None]:
    """Check now and every ``interval`` seconds; returns the function that stops it."""
    state: dict[str, Any] = {"last": check_expiry(files), "handle": None}

    def tick() -> None:
        state["last"] = check_expiry(files, last=state["last"])
        state["handle"] = loop.call_later(interval, tick)

    state["handle"] = loop.call_later(interval, tick)
    return lambda: state["handle"].cancel()


def _q(*words: object) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def _issue_fix(kind: str, cert: Path, key: Path) -> str:
    """``streamcerts issue KIND --dir ROOT --force``, with --out-* only where KubeEdge's names differ."""
    root = cert.parent.parent
    lay = Layout(root)
    default = (lay.server_cert, lay.server_key) if kind == "server" else (lay.stream_cert, lay.stream_key)
    out = [] if (cert, key) == default else ["--out-cert", cert, "--out-key", key]
    return _q("streamcerts", "issue", kind, "--dir", root, *out, "--force")


def cloud_in_use(config: Any) -> list[InUse]:
    """A ``CloudConfig``'s four certificates (duck-typed: certs does not import cloudstream)."""
    tunnel, stream = Path(config.tls_tunnel_cert_file), Path(config.tls_stream_cert_file)
    return [
        InUse("tunnel CA", Path(config.tls_tunnel_ca_file),
              _q("streamcerts", "init", "--dir", tunnel.parent.parent, "--only", "tunnel", "--force")
              + " and reissue what it signed"),
        InUse("tunnel server", tunnel, _issue_fix("server", tunnel, Path(config.tls_tunnel_private_key_file)), True),
        InUse("stream CA", Path(config.tls_stream_ca_file), "renew the cluster CA and copy it there"),
        InUse("stream server", stream, _issue_fix("stream", stream, Path(config.tls_stream_private_key_file)), True),
    ]


def edge_in_use(config: Any) -> list[InUse]:
    """An ``EdgeConfig``'s tunnel CA and client certificate."""
    cert = Path(config.tls_tunnel_cert_file)
    ip = ["--ip", config.node_ip] if getattr(config, "node_ip", "") else []
    return [
        InUse("tunnel CA", Path(config.tls_tunnel_ca_file), "copy the cloud's renewed ca/rootCA.crt there"),
        InUse(f"edge {config.node_name}", cert,
              _q("streamcerts", "issue", "edge", config.node_name, *ip, "--force")
              + f" where the tunnel CA key is, then install the pair as {cert}"),
    ]


def watch_cloud(loop: _Loop, config: Any) -> Callable[[], None]:
    return watch(loop, cloud_in_use(config))


def watch_edge(loop: _Loop, config: Any) -> Callable[[], None]:
    return watch(loop, edge_in_use(config))
