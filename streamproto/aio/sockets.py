"""Socket settings for the tunnel: keep the kernel's queue of *unsent* bytes short, so that an
interactive byte is never stuck behind megabytes of bulk data the kernel already accepted
(Linux lets a send queue grow to several MB). ``TCP_NOTSENT_LOWAT`` bounds only what is not
yet on the wire, not the window in flight, so throughput over a long, fat link is unharmed
(a small SO_SNDBUF would cap it at buffer/RTT). What the kernel does not take waits in the
tunnel's own buffers, where the sender decides the order."""

from __future__ import annotations

import socket

__all__ = ["NOTSENT_LOWAT", "tune_tunnel_socket"]

NOTSENT_LOWAT = 128 * 1024
_TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # Linux's number when Python lacks the name


def tune_tunnel_socket(sock: socket.socket | None, lowat: int = NOTSENT_LOWAT) -> None:
    if sock is None:
        return
    for level, option, value in (
        (socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, lowat),
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    ):
        try:
            sock.setsockopt(level, option, value)
        except OSError:  # not TCP (socketpairs in tests) or an older kernel: nothing to tune
            pass
