"""Is a process's RSS (or fd count) flat over a window, or growing? A least-squares line through
samples taken every second: a leak is a steady slope that goes on; allocator noise is wobble,
which a line over many samples does not tilt for, and steps (an arena or heap extension), which
tilt it by at most 1.5 times their height (a step in the middle of the window; less near
either end). So a bound on the fitted growth a few steps high separates the two once the leak
adds more than that over the window. Pure functions; the soak samples and asserts."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Fit", "fit", "second_half"]


@dataclass(frozen=True)
class Fit:
    slope: float
    """Units per second."""
    span: float
    """Seconds from the first sample to the last."""
    first: float
    last: float

    @property
    def growth(self) -> float:
        """What the line says was added over the span (slope x span)."""
        return self.slope * self.span


def fit(samples: list[tuple[float, float]]) -> Fit:
    """Ordinary least squares through (t, value) samples (at least two, distinct times)."""
    if len(samples) < 2:
        raise ValueError("a line needs two samples")
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        raise ValueError("samples at one instant")
    slope = sum((t - mt) * (v - mv) for t, v in samples) / var
    return Fit(slope, samples[-1][0] - samples[0][0], samples[0][1], samples[-1][1])


def second_half(samples: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The samples of the second half of the window (by time): the first half grows the arenas."""
    if not samples:
        return []
    mid = (samples[0][0] + samples[-1][0]) / 2
    return [s for s in samples if s[0] >= mid]
