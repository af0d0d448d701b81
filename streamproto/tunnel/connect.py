"""The JSON payload of a *_CONNECT message, as KubeEdge's Go structs marshal it.

``{"MessID": <id>, "url": <Go url.URL>, "header": {name: [values]} | null, "method": "POST"}``
(``method`` only for exec, attach and port-forward). ``MessID`` must equal the frame's
connect ID: a Go edge answers under MessID. The cloud rewrites the URL to
``http://127.0.0.1:10350`` (edged's address) and keeps the API server's path and raw query.

``dumps`` reproduces Go's ``encoding/json`` byte for byte (field order of go1.23-1.25,
HTML-safe escaping, sorted header keys) so golden tests can compare bytes; ``loads``
accepts what Go's decoder accepts: any key order and key case, ``header`` null or absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from .errors import FrameError

__all__ = ["EDGED_HOST", "ConnectRequest", "go_json_dumps"]

EDGED_HOST = "127.0.0.1:10350"

_URL_FIELDS = (
    "Scheme",
    "Opaque",
    "User",
    "Host",
    "Path",
    "RawPath",
    "OmitHost",
    "ForceQuery",
    "RawQuery",
    "Fragment",
    "RawFragment",
)
# Go's url.PathEscape-style set for paths: unreserved plus these sub-delims stay as is.
_PATH_SAFE = "/$&+,:;=@"
_GO_HTML_ESCAPES = {"&": "\\u0026", "<": "\\u003c", ">": "\\u003e", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def go_json_dumps(value: object) -> str:
    """``json.dumps`` with Go's output conventions: compact, UTF-8 kept, HTML-safe escapes."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in _GO_HTML_ESCAPES.items():
        if raw in text:
            text = text.replace(raw, escaped)
    return text


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """What a *_CONNECT message asks the edge to do: one kubelet-API request."""

    connect_id: int
    path: str
    """The raw (escaped) request path, e.g. ``/containerLogs/ns/pod/ctr``."""
    raw_query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    """Header lines in order; repeated names (X-Stream-Protocol-Version) are kept."""
    method: str | None = None
    """Set for exec/attach/port-forward (``GET`` or ``POST``); None for logs/metrics."""
    host: str = EDGED_HOST
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def decoded_path(self) -> str:
        return unquote(self.path)

    @property
    def target(self) -> str:
        """``path?query`` as the request line carries it."""
        return f"{self.path}?{self.raw_query}" if self.raw_query else self.path

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    # --------------------------------------------------------------------- encode

    def to_json(self) -> bytes:
        decoded = unquote(self.path)
        raw_path = self.path if quote(decoded, safe=_PATH_SAFE) != self.path else ""
        url: dict[str, object] = dict.fromkeys(_URL_FIELDS, "")
        url.update(
            Scheme="http",
            User=None,
            Host=self.host,
            Path=decoded,
            RawPath=raw_path,
            OmitHost=False,
            ForceQuery=False,
            RawQuery=self.raw_query,
        )
        obj: dict[str, object] = {"MessID": self.connect_id, "url": url, "header": _header_map(self.headers)}
        if self.method is not None:
            obj["method"] = self.method
        return go_json_dumps(obj).encode()

    # --------------------------------------------------------------------- decode

    @classmethod
    def from_json(cls, connect_id: int, data: bytes | memoryview) -> ConnectRequest:
        """Parse a connect payload. ``connect_id`` is the frame's id (wins over MessID)."""
        try:
            obj = json.loads(bytes(data))
        except (ValueError, UnicodeDecodeError) as exc:
            raise FrameError(f"connect payload of stream {connect_id} is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise FrameError(f"connect payload of stream {connect_id} is not a JSON object")
        lowered = {str(k).lower(): v for k, v in obj.items()}
        url = lowered.get("url")
        if not isinstance(url, dict):
            raise FrameError(f"connect payload of stream {connect_id} has no url object")
        url = {str(k).lower(): v for k, v in url.items()}
        path = str(url.get("rawpath") or "") or quote(str(url.get("path") or ""), safe=_PATH_SAFE)
        if not path.startswith("/"):
            raise FrameError(f"connect payload of stream {connect_id} has no absolute path")
        method = lowered.get("method")
        return cls(
            connect_id=connect_id,
            path=path,
            raw_query=str(url.get("rawquery") or ""),
            headers=_header_lines(lowered.get("header")),
            method=str(method) if method else None,
            host=str(url.get("host") or EDGED_HOST),
        )


def _header_map(lines: Iterable[tuple[str, str]]) -> dict[str, list[str]] | None:
    merged: dict[str, list[str]] = {}
    for name, value in lines:
        merged.setdefault(_canonical(name), []).append(value)
    return {k: merged[k] for k in sorted(merged)} if merged else None


def _header_lines(raw: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        return ()
    out: list[tuple[str, str]] = []
    for name, values in raw.items():
        if isinstance(values, str):
            values = [values]
        if isinstance(values, list):
            out.extend((str(name), str(v)) for v in values)
    return tuple(out)


def _canonical(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey: ``x-stream-protocol-version`` -> ``X-Stream-Protocol-Version``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))
