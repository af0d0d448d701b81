"""edgestream: the edge half of the tunnel.

Dials cloudstream, keeps the tunnel up, and serves each stream from a backend: containerd's
CRI (default), the local kubelet/edged, or the built-in emulator.
"""
