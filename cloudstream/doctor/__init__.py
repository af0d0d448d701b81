"""``cloudstream doctor``: what is wrong on the cloud side, each finding with its fix."""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
