"""A per-stream receive buffer bounded in bytes, with high and low marks.

The tunnel reader ``feed``s payload views in (no copy) and the stream's owner ``read``s
them out. ``feed`` never blocks; it reports when the buffer went over its high mark so the
tunnel reader can decide what to do (wait, or fail this one stream): head-of-line policy
lives in one place, the session, not here.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["StreamBuffer"]

Chunk = bytes | memoryview


class StreamBuffer:
    def __init__(self, high: int = 1 << 20, low: int | None = None) -> None:
        self.high = high
        self.low = high // 4 if low is None else low
        self._chunks: deque[Chunk] = deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._readable = asyncio.Event()
        self._below_low = asyncio.Event()
        self._below_low.set()

    @property
    def size(self) -> int:
        return self._size

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def feed(self, chunk: Chunk) -> bool:
        """Queue ``chunk``; return True when the buffer is now above its high mark."""
        if self._eof:
            return False  # late data after close: dropped, the stream is done
        if chunk:
            self._chunks.append(chunk)
            self._size += len(chunk)
            self._readable.set()
        if self._size > self.high:
            self._below_low.clear()
            return True
        return False

    def feed_eof(self, error: BaseException | None = None) -> None:
        """No more data. With ``error``, ``read`` raises it once the buffer is drained."""
        if not self._eof:
            self._eof = True
            self._error = error
        self._readable.set()
        self._below_low.set()

    async def wait_drained(self) -> None:
        """Wait until the owner has read the buffer below its low mark."""
        await self._below_low.wait()

    async def read(self) -> Chunk | None:
        """The next chunk, or None at EOF. Raises the error given to ``feed_eof``."""
        while not self._chunks:
            if self._eof:
                if self._error is not None:
                    raise self._error
                return None
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._size <= self.low:
            self._below_low.set()
        return chunk

    def read_nowait(self) -> list[Chunk]:
        """Everything buffered now (to coalesce many small chunks into one write)."""
        chunks = list(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._below_low.set()
        return chunks
