"""Reading a KubeEdge config file's sections for the doctors (pure): missing or mistyped
sections read as empty, so a check reports them instead of crashing."""

from __future__ import annotations

from typing import Any

__all__ = ["section"]


def section(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``data[k1][k2]...`` when each step is a mapping, else ``{}``."""
    for key in keys:
        value = data.get(key)
        if not isinstance(value, dict):
            return {}
        data = value
    return data
