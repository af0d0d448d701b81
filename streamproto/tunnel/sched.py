"""The order in which a tunnel's queued messages go out (sans-I/O).

Two classes, after RFC 9218's urgency levels: *urgent* (control messages and the DATA of
exec/attach/port-forward streams) leaves first, in arrival order; *bulk* (logs and metrics
DATA) shares what is left by bytes, deficit round robin (Shreedhar & Varghese) among its
streams, so one busy stream cannot starve another however large its messages. Per-stream
order is arrival order within each class; a stream's messages are always in one class.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

__all__ = ["SendQueue"]

T = TypeVar("T")


class SendQueue(Generic[T]):
    __slots__ = ("_active", "_bulk", "_deficit", "_len", "_urgent", "quantum")

    def __init__(self, quantum: int = 64 * 1024) -> None:
        self.quantum = quantum
        # The deques come with the first item: 10,000 idle tunnels hold 10,000 queues that
        # are almost always empty (760 bytes each as deques).
        self._urgent: deque[T] | None = None
        self._bulk: dict[int, deque[tuple[T, int]]] = {}
        self._active: deque[int] | None = None
        """Bulk streams with something queued, in round-robin order."""
        self._deficit: dict[int, int] = {}
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push_urgent(self, item: T) -> None:
        urgent = self._urgent
        if urgent is None:
            urgent = self._urgent = deque()
        urgent.append(item)
        self._len += 1

    def push_bulk(self, key: int, item: T, size: int) -> None:
        queue = self._bulk.get(key)
        if queue is None:
            queue = self._bulk[key] = deque()
            if self._active is None:
                self._active = deque()
            self._active.append(key)
            self._deficit[key] = 0
        queue.append((item, size))
        self._len += 1

    def pop(self) -> T | None:
        """The next item to send, or None when empty."""
        if self._urgent:
            self._len -= 1
            return self._urgent.popleft()
        active = self._active
        while active:  # bounded: each turn adds a quantum, so a stream is served within size/quantum + 1 turns
            key = active[0]
            queue = self._bulk[key]
            item, size = queue[0]
            deficit = self._deficit[key]
            if deficit < size:
                self._deficit[key] = deficit + self.quantum
                active.rotate(-1)
                continue
            queue.popleft()
            self._len -= 1
            if queue:
                self._deficit[key] = deficit - size
            else:  # an idle stream keeps no credit (DRR's rule)
                del self._bulk[key], self._deficit[key]
                active.popleft()
            return item
        return None

    def drain(self) -> list[T]:
        """Everything still queued (the tunnel closed)."""
        items = list(self._urgent or ())
        for queue in self._bulk.values():
            items.extend(item for item, _ in queue)
        self._urgent = None
        self._bulk.clear()
        self._active = None
        self._deficit.clear()
        self._len = 0
        return items
