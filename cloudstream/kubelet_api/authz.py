"""Who may call which kubelet-API route on 10003: the client certificate against the access rules."""

from __future__ import annotations

from streamcerts import Identity

from ..config import AccessRule
from .routes import Route

__all__ = ["NO_CERTIFICATE", "authorize"]

NO_CERTIFICATE = (
    "a client certificate signed by the cluster CA is required "
    "(the API server's --kubelet-client-certificate and --kubelet-client-key)"
)


def authorize(identity: Identity | None, route: Route | None, access: tuple[AccessRule, ...]) -> tuple[int, str] | None:
    """None when allowed, else (401 or 403, why and what to change)."""
    if identity is None:
        return 401, NO_CERTIFICATE
    allowed: set[str] = set()
    for rule in access:
        if (rule.kind == "cn" and rule.name == identity.common_name) or (
            rule.kind == "group" and rule.name in identity.organizations
        ):
            allowed |= rule.routes
    if route is None and allowed:
        return None  # known caller, unknown path: a 404 is more useful than a 403
    if route is not None and route.kind.value in allowed:
        return None
    wanted = route.kind.value if route is not None else "any route"
    return 403, (
        f"certificate CN={identity.common_name!r} O={list(identity.organizations)!r} may not use {wanted}; "
        f"access rules: {', '.join(map(str, access)) or 'none'} (cloudstream --allow)"
    )
