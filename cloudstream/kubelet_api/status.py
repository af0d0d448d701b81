"""Error answers of the kubelet API as ``metav1.Status`` JSON, as the kubelet writes them.

A text body is not enough: client-go decodes a refused upgrade's body with its universal
decoder, which also reads YAML, so ``cloudstream: node x: container "c" not found`` (a YAML
mapping, because of ``": "``) became an empty Status and kubectl 1.27-1.29 printed
``Error from server: `` and nothing else. JSON with our message keeps the words.
"""

from __future__ import annotations

import json

from .http1 import response_head

__all__ = ["REASONS", "edge_message", "error_response", "reason_for", "status_body"]

# apimachinery's StatusReason for each code (k8s.io/apimachinery/pkg/api/errors
# NewGenericServerResponse); codes it has no reason for get the nearest one.
REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def reason_for(code: int) -> str:
    if code in REASONS:
        return REASONS[code]
    if code >= 500:
        return "InternalError"  # 501, 502, 505: apimachinery's choice for other 5xx
    return "BadRequest"  # 431 and other 4xx: the request was at fault


def status_body(code: int, message: str, reason: str = "") -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason or reason_for(code),
            "code": code,
        },
        ensure_ascii=False,
    ).encode()


def error_response(
    code: int, message: str, headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (), close: bool = False,
    reason: str = "",
) -> bytes:
    """A complete HTTP/1.1 response carrying ``message`` as a Status."""
    body = status_body(code, f"cloudstream: {message}", reason)
    all_headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if close:
        all_headers.append(("Connection", "close"))
    all_headers.extend(headers)
    return response_head(code, all_headers) + body


def edge_message(message: str) -> tuple[str, str]:
    """The edge's STATUS text, and its reason if the edge already sent a Status object."""
    text = message.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return text, ""
        if isinstance(obj, dict) and obj.get("kind") == "Status" and isinstance(obj.get("message"), str):
            reason = obj.get("reason")
            return obj["message"], reason if isinstance(reason, str) else ""
    return text, ""
