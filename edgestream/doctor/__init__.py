"""``edgestream doctor``: what is wrong on an edge node, each finding with its fix."""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
