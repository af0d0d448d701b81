"""Hot reload of TLS material: a context rebuilt when its files change, one watch timer per process.

A :class:`ReloadingContext` holds the ``ssl.SSLContext`` built from some files (certificate, key,
CA bundle) and the files' stamps (mtime, size, inode). :class:`FileWatch` (one per event loop,
:func:`shared_watch`; a loop timer, as streamcerts/ never imports asyncio) stats every watched file
each ``interval`` seconds and, when a context's stamps changed, rebuilds that context off to
the side: only a context that loads replaces the old one, so running connections (which keep
the context they were made with) never notice and new connections get the new files. SIGHUP
calls :meth:`FileWatch.reload_all` to do it at once.

A pair written file by file (certificate, then key) is briefly mismatched: a failure whose files
were still changing is retried on the next poll and only warned about when the same files fail
twice (or on SIGHUP), with the file and the fix. A file that stays broken is warned about once.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from .errors import CertificateError

__all__ = ["FileWatch", "Reloading", "ReloadingContext", "shared_watch"]

logger = logging.getLogger(__name__)

Stamp = tuple[int, int, int] | None
"""(mtime ns, size, inode) of a file; None when it cannot be stat'ed."""

_FIX = (
    "write the new files completely and as a matching pair (to a temporary name, then rename over the old "
    "ones; certificate and key signed for each other, the CA bundle in PEM); the previous files stay in use until then"
)


def stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


T = TypeVar("T")


class Reloading(Generic[T]):
    """``current`` is what the next connection uses (a context, or a CA to sign with); ``build``
    makes a new one from ``files``.

    Building the first context raises (a process must not start without its TLS material);
    later failures keep the old context and log one warning. ``on_swap`` callbacks run after
    every successful swap (e.g. to drop per-node contexts derived from the old files).
    """

    def __init__(
        self, name: str, files: Sequence[Path | None], build: Callable[[], T], current: T | None = None
    ) -> None:
        self.name = name
        self.files = tuple(Path(f) for f in files if f is not None)
        self.build = build
        self.stamps = tuple(stamp(f) for f in self.files)
        self.current = build() if current is None else current
        """``current``: one the caller already built from these files."""
        self.generation = 0
        """Incremented on every swap."""
        self.on_swap: list[Callable[[T], None]] = []
        self._failed: tuple[Stamp, ...] | None = None
        """Stamps of the last failed attempt: a file set that failed and did not change is not retried."""
        self._warned: tuple[Stamp, ...] | None = None

    def wants(self, stamps: tuple[Stamp, ...]) -> bool:
        """Whether files with these stamps are worth a rebuild (changed, and not known broken)."""
        return stamps != self.stamps and stamps != self._warned

    def check(self, stamps: tuple[Stamp, ...] | None = None, force: bool = False) -> bool:
        """Reload when the files changed (or always with ``force``); True when swapped."""
        stamps = tuple(stamp(f) for f in self.files) if stamps is None else stamps
        if not force and not self.wants(stamps):
            return False
        settled = force or stamps == self._failed  # the same files failed on the previous poll too
        changed = [str(f) for f, old, new in zip(self.files, self.stamps, stamps, strict=True) if old != new]
        try:
            context = self.build()
        except (CertificateError, OSError, ssl.SSLError, ValueError, TypeError) as exc:
            self._failed = stamps
            if settled and stamps != self._warned:
                self._warned = stamps
                logger.warning(
                    "! %s: kept the previous TLS certificate: the new files do not load (changed: %s): %s. Fix: %s",
                    self.name, ", ".join(changed) or "none", exc, _FIX,
                )
            return False
        self.current = context
        self.stamps = stamps
        self._failed = self._warned = None
        self.generation += 1
        logger.info("= %s: loaded new TLS files (changed: %s); new connections use them", self.name,
                    ", ".join(changed) or "none, reload asked for")
        for callback in self.on_swap:
            callback(context)
        return True


ReloadingContext = Reloading[ssl.SSLContext]


class _Loop(Protocol):
    """What the watch needs of an event loop (streamcerts/ stays free of asyncio: the caller passes its loop)."""

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _Timer: ...

    def is_closed(self) -> bool: ...


class _Timer(Protocol):
    def cancel(self) -> None: ...


class FileWatch:
    """Polls the files of every added :class:`Reloading` on one loop timer (no task): armed with
    the first context, cancelled with the last. Each path is stat'ed once per poll however many
    contexts share it (a fleet of edges shares one CA file), and at most ``max_rebuilds`` contexts
    are rebuilt per step (a new CA for a thousand edges is spread over many loop turns)."""

    max_rebuilds = 16

    def __init__(self, loop: _Loop, interval: float = 3.0) -> None:
        self.loop = loop
        self.interval = interval
        self._contexts: dict[Reloading[Any], None] = {}
        self._timer: _Timer | None = None
        self._pending: list[Reloading[Any]] = []
        """Contexts left over when a poll's rebuild budget ran out."""
        self.polls = 0

    def __len__(self) -> int:
        return len(self._contexts)

    def add(self, context: Reloading[Any]) -> None:
        self._contexts[context] = None
        if self._timer is None:
            self._timer = self.loop.call_later(self.interval, self._tick)

    def discard(self, context: Reloading[Any]) -> None:
        self._contexts.pop(context, None)
        if not self._contexts and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def reload_all(self) -> int:
        """SIGHUP: rebuild every context now (failures warned at once); returns how many swapped."""
        logger.info("= reloading the TLS files of %d context(s)", len(self._contexts))
        return sum(context.check(force=True) for context in list(self._contexts))

    def _tick(self) -> None:
        self._timer = None
        more = self.poll()
        if self._contexts:
            self._timer = self.loop.call_later(0 if more else self.interval, self._tick)

    def poll(self) -> bool:
        """Check every context once; True when a rebuild budget ran out (call again soon)."""
        self.polls += 1
        seen: dict[Path, Stamp] = {}
        rebuilt = 0
        pending = self._pending or list(self._contexts)
        self._pending = []
        for i, context in enumerate(pending):
            if context not in self._contexts:
                continue
            stamps = []
            for path in context.files:
                if path not in seen:
                    seen[path] = stamp(path)
                stamps.append(seen[path])
            stamps_t = tuple(stamps)
            if context.wants(stamps_t):
                if rebuilt >= self.max_rebuilds:
                    self._pending = pending[i:]
                    return True
                rebuilt += 1
                context.check(stamps_t)
        return False


_SHARED: dict[_Loop, FileWatch] = {}


def shared_watch(loop: _Loop) -> FileWatch:
    """``loop``'s :class:`FileWatch` (one per loop: tests run many loops in one process); the
    process's entry point sets its ``interval``."""
    found = _SHARED.get(loop)
    if found is None:
        for old in [old for old in _SHARED if old.is_closed()]:
            del _SHARED[old]
        found = _SHARED[loop] = FileWatch(loop)
    return found
