"""Reconnect delays: a spread first retry, then capped decorrelated jitter, as a pure generator.

Why this shape (AWS's "Exponential Backoff and Jitter", gRPC's connection backoff):

- A fleet loses the cloud *together* (the cloud restarts, a link drops), so the first retry is
  drawn uniformly over ``first_window``: N edges knock at about N / first_window per second
  instead of all in the same millisecond.
- Then decorrelated jitter, ``uniform(initial, 3 * previous)`` capped at ``maximum``: each edge's
  delays drift apart from the others' even when they started in step, so the dial rate while the
  cloud is away stays near N / (mean delay) and never lines up into waves.
- The cap is short (6 s by default) because the cap *is* the recovery time: an edge that just
  waited its longest step redials at most ``maximum`` seconds after the cloud is back. With a cap of
  30 s, edges came back up to 22 s after a restart. The price is the dial rate during a long
  outage, about N / (0.6 * maximum) per second (refused SYNs, cheap for the cloud host);
  a much larger fleet raises ``maximum`` and accepts a slower return.

The random source is a parameter so tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

__all__ = ["backoff"]


def backoff(
    initial: float = 0.5,
    maximum: float = 6.0,
    first_window: float | None = None,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Yield delays in seconds, for ever.

    The first is uniform in ``(0, first_window]`` (default: ``initial * 4``, at most ``maximum``);
    each next one is uniform in ``[initial, 3 * previous]``, capped at ``maximum``.
    """
    if initial <= 0 or maximum < initial:
        raise ValueError("need 0 < initial <= maximum")
    window = min(maximum, initial * 4 if first_window is None else first_window)
    if window <= 0:
        raise ValueError("first_window must be positive")
    # never exactly 0: a zero delay on a refused dial would spin
    first = max(window * rand(), initial / 10)
    yield first
    previous = max(first, initial)
    while True:
        previous = min(maximum, initial + rand() * (3 * previous - initial))
        yield previous
