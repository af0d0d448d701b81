"""Errors as the kubelet writes them: a ``metav1.Status`` JSON body (pure, no I/O).

kubectl decodes an error body as a Status object; a plain-text body that happens to contain
``": "`` decodes as YAML and kubectl 1.27-1.29 then print an empty ``Error from server: ``.
"""

from __future__ import annotations

import http
import json

__all__ = ["error_response", "reason_for_code", "status_json"]

# apimachinery's reasonForCode (pkg/api/errors); codes not listed have no reason (omitted).
_REASONS = {
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


def reason_for_code(code: int) -> str:
    return _REASONS.get(code, "")


def status_json(code: int, message: str) -> bytes:
    """``{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",...,"code":N}``"""
    body: dict[str, object] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": message}
    reason = reason_for_code(code)
    if reason:
        body["reason"] = reason
    body["code"] = code
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def error_response(code: int, message: str) -> bytes:
    """A whole HTTP/1.1 error response with a Status body (for raw, upgraded connections)."""
    body = status_json(code, message.rstrip("\n"))
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = "Error"
    head = (
        f"HTTP/1.1 {code} {phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
