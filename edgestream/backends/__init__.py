"""Where the edge gets its answers: containerd CRI, the emulator, or the local kubelet."""

from __future__ import annotations

from .base import Backend

__all__ = ["Backend", "make_backend"]


def make_backend(config: object) -> Backend:
    from ..config import EdgeConfig

    assert isinstance(config, EdgeConfig)
    if config.backend == "emulator":
        from .emulator import EmulatorBackend

        return EmulatorBackend(config.emulator, phase_seed=config.node_name)
    if config.backend == "cri":
        from .cri import CriBackend

        return CriBackend(config)
    from .kubelet import KubeletBackend

    return KubeletBackend(config)
