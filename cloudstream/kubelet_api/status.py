"""Error answers of the kubelet API as ``metav1.Status`` JSON, as the kubelet writes them.

A text body is not enough: client-go decodes a refused upgrade's body with its universal
decoder, which also reads YAML, so a text body with one ``": "`` became an empty Status and
kubectl 1.27-1.29 printed ``error upgrading connection: `` and nothing else. The body comes
from ``streamproto.kube_status`` (the edge writes its Status bodies with it too); this module adds
the response head we need on 10003 (keep-alive or close, extra headers such as ``Allow``).
"""

from __future__ import annotations

import json

from streamproto.kube_status import reason_for_code, status_json

from .http1 import response_head

__all__ = ["edge_message", "error_response", "reason_for_code", "status_json"]


def error_response(
    code: int, message: str, headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (), close: bool = False,
    as_status: bool = True,
) -> bytes:
    """A complete HTTP/1.1 response carrying ``cloudstream: message``.

    ``as_status``: a Status JSON body, as the kubelet's streaming server refuses an upgrade
    (exec/attach/port-forward: client-go decodes that body). Otherwise plain text, as the
    kubelet's go-restful handlers answer logs/stats errors: the API server quotes that text in
    its own Status (``Error from server (NotFound): cloudstream: ...``), where a JSON body
    would show up as raw JSON.
    """
    text = f"cloudstream: {message}"
    if as_status:
        body, content_type = status_json(code, text), "application/json"
    else:
        body, content_type = (text.rstrip("\n") + "\n").encode(), "text/plain; charset=utf-8"
    all_headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if close:
        all_headers.append(("Connection", "close"))
    all_headers.extend(headers)
    return response_head(code, all_headers) + body


def edge_message(message: str) -> str:
    """The words of the edge's STATUS answer (unwrapped if the edge already sent a Status)."""
    text = message.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return text
        if isinstance(obj, dict) and obj.get("kind") == "Status" and isinstance(obj.get("message"), str):
            return obj["message"].strip()
    return text
