"""How much misbehaviour one tunnel may show before it is closed (sans-I/O: time comes in).

A peer that sends malformed messages is broken or hostile; either way each one costs a decode
and, without a limit, a log line. The budget counts them per fixed window and says when the
peer has spent it: the I/O layer then closes the tunnel with a reason the peer sees. A fixed
window lets up to twice the limit through across a boundary; that is the price of keeping
the counter two numbers and the check one comparison. Ignored messages (unknown stream IDs,
repeats) are not misbehaviour: a Go cloud repeats REMOVE_CONNECT in a loop by design.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["Budget", "ViolationCounter"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    max_violations: int = 100
    """Malformed messages tolerated per ``window``; the next one closes the tunnel."""
    window: float = 10.0
    """Seconds."""

    def __post_init__(self) -> None:
        if self.max_violations < 0:
            raise ConfigError(f"max_violations {self.max_violations} must be >= 0")
        if not self.window > 0:
            raise ConfigError(f"the misbehaviour window {self.window} s must be > 0")


@dataclass(slots=True)
class ViolationCounter:
    """One tunnel's spending. ``spend(now)`` is called only for a violation, never per message."""

    budget: Budget
    total: int = 0
    in_window: int = 0
    window_start: float = float("-inf")

    def spend(self, now: float) -> bool:
        """Count one violation at ``now`` (seconds, monotonic); True once over budget."""
        self.total += 1
        if now - self.window_start >= self.budget.window:
            self.window_start, self.in_window = now, 0
        self.in_window += 1
        return self.in_window > self.budget.max_violations
