"""The emulator's log timelines: nodes out of step, each still starting with ``history`` lines."""

from __future__ import annotations

import time

from edgestream.backends.emulator import EmulatorBackend
from edgestream.config import EmulatorConfig

CONFIG = EmulatorConfig(pods=(("default", "demo", "app"), ("default", "demo", "side")), log_rate=10, history=100)


def _t0s(seed: str) -> list[float]:
    return [c.t0 for c in EmulatorBackend(CONFIG, phase_seed=seed).containers.values()]


def test_nodes_write_out_of_step_within_one_period() -> None:
    period = 1 / CONFIG.log_rate
    phases = {round(t0 % period, 6) for n in range(200) for t0 in _t0s(f"edge-{n:05d}")}
    # 400 containers over one period: spread out, not one instant (a 1,000-node burst every period)
    assert len(phases) > 300
    buckets = {int(p / period * 10) for p in phases}
    assert buckets == set(range(10))


def test_phase_keeps_history_and_is_stable() -> None:
    for seed in ("", "edge-1", "edge-2"):
        backend = EmulatorBackend(CONFIG, phase_seed=seed)
        now = time.time()
        for c in backend.containers.values():
            assert c.written(now) in (CONFIG.history, CONFIG.history + 1)  # + a line written since
    a, b = _t0s("edge-7"), _t0s("edge-7")
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.05  # the same node, the same phase (built ms apart)


def test_no_seed_no_phase() -> None:
    backend = EmulatorBackend(CONFIG)
    t0s = {c.t0 for c in backend.containers.values()}
    assert len(t0s) == 1
