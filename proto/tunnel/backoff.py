"""Reconnect delays: exponential backoff with full jitter, as a pure generator.

The random source is a parameter so tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

__all__ = ["backoff"]


def backoff(
    initial: float = 0.5,
    maximum: float = 30.0,
    factor: float = 2.0,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Yield delays in seconds: ``initial * factor**n`` capped at ``maximum``, jittered.

    Jitter keeps from half to all of each step, so a fleet of edges that lost the cloud
    together does not redial in lockstep, and no delay is ever near zero.
    """
    if initial <= 0 or maximum < initial or factor < 1:
        raise ValueError("need 0 < initial <= maximum and factor >= 1")
    step = initial
    while True:
        yield step * (0.5 + 0.5 * rand())
        step = min(maximum, step * factor)
