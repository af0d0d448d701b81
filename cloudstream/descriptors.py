"""The open-file budget cloudstream's ports share.

Each port used to get half of the descriptors for itself, so 1,000 tunnels on 10004 left
10003 at 9,936 connections under a 20,000 limit while 9,000 descriptors sat unused. Now the
ports draw from one budget (the open-file limit less a reserve for logs, certificates and the
loop), and each keeps a floor that the others cannot take: a port may open a connection while
the total stays below the budget less what the other ports have not yet used of their floors.
A flood on one port (authenticated: the unauthenticated caps are per port and below the floor)
can therefore take at most the budget less the others' floors, and never an edge's place.
Sans-I/O: members report their open connections; the listener asks before it admits.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DescriptorPool", "Member", "POOL", "RESERVE"]

RESERVE = 128
"""Descriptors kept out of the budget: log files, certificates read, the loop, the admin port."""


class Member(Protocol):
    name: str

    @property
    def open_connections(self) -> int: ...


class DescriptorPool:
    def __init__(self) -> None:
        self._members: list[Member] = []
        self.budget = 0

    def join(self, member: Member, nofile: int) -> None:
        """``nofile``: the soft open-file limit now (it may have been raised since the last join)."""
        self.budget = max(64, nofile - RESERVE)
        if member not in self._members:
            self._members.append(member)

    def leave(self, member: Member) -> None:
        if member in self._members:
            self._members.remove(member)

    @property
    def floor(self) -> int:
        """Connections each port can always open: a quarter of the budget with two ports."""
        return self.budget // (2 * max(2, len(self._members)))

    def open_total(self) -> int:
        return sum(m.open_connections for m in self._members)

    def held_for_others(self, member: Member) -> int:
        floor = self.floor
        return sum(max(0, floor - m.open_connections) for m in self._members if m is not member)

    def admits(self, member: Member) -> bool:
        """May ``member`` open one more connection?"""
        if not self._members:
            return True
        return self.open_total() < self.budget - self.held_for_others(member)

    def why_full(self, member: Member) -> str:
        held = self.held_for_others(member)
        others = ", ".join(m.name for m in self._members if m is not member) or "no other port"
        return (f"{self.open_total()} connections are open on all ports and the open-file budget is "
                f"{self.budget} (the limit less {RESERVE}), {held} of it kept for {others}; raise the "
                f"limit (--max-open-files, systemd LimitNOFILE=)")


POOL = DescriptorPool()
"""One per process: descriptors are."""
