"""Hot reload of TLS material: a context rebuilt when its files change, one watch task per process.

A :class:`ReloadingContext` holds the ``ssl.SSLContext`` built from some files (certificate, key,
CA bundle) and the files' stamps (mtime, size, inode). :class:`FileWatch` (one per event loop,
:func:`shared_watch`) stats every watched file each ``interval`` seconds and, when a context's
stamps changed, rebuilds that context off to the side: only a context that loads replaces the
old one, so running connections (which keep the context they were made with) never notice and
new connections get the new files. SIGHUP calls :meth:`FileWatch.reload_all` to do it at once.

A pair written file by file (certificate, then key) is briefly mismatched: a failure whose files
were still changing is retried on the next poll and only warned about when the same files fail
twice (or on SIGHUP), with the file and the fix. A file that stays broken is warned about once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

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

    def __init__(self, name: str, files: Sequence[Path | None], build: Callable[[], T]) -> None:
        self.name = name
        self.files = tuple(Path(f) for f in files if f is not None)
        self.build = build
        self.stamps = tuple(stamp(f) for f in self.files)
        self.current = build()
        self.generation = 0
        """Incremented on every swap."""
        self.on_swap: list[Callable[[T], None]] = []
        self._failed: tuple[Stamp, ...] | None = None
        """Stamps of the last failed attempt: a file set that failed and did not change is not retried."""
        self._warned: tuple[Stamp, ...] | None = None

    def check(self, stamps: tuple[Stamp, ...] | None = None, force: bool = False) -> bool:
        """Reload when the files changed (or always with ``force``); True when swapped."""
        stamps = tuple(stamp(f) for f in self.files) if stamps is None else stamps
        if not force and (stamps == self.stamps or stamps == self._warned):
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


class FileWatch:
    """Polls the files of every added :class:`ReloadingContext`: one task per loop, started with
    the first context and ended with the last; each path is stat'ed once per poll however many
    contexts share it (a fleet of edges shares one CA file)."""

    batch = 256
    """Contexts checked per step before yielding to the loop."""

    def __init__(self, interval: float = 3.0) -> None:
        self.interval = interval
        self._contexts: dict[Reloading[Any], None] = {}
        self._task: asyncio.Task[None] | None = None
        self.polls = 0

    def __len__(self) -> int:
        return len(self._contexts)

    def add(self, context: Reloading[Any]) -> None:
        self._contexts[context] = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="certificate watch")

    def discard(self, context: Reloading[Any]) -> None:
        self._contexts.pop(context, None)
        if not self._contexts and self._task is not None:
            self._task.cancel()
            self._task = None

    def reload_all(self) -> int:
        """SIGHUP: rebuild every context now (failures warned at once); returns how many swapped."""
        logger.info("= reloading the TLS files of %d context(s)", len(self._contexts))
        return sum(context.check(force=True) for context in list(self._contexts))

    async def _run(self) -> None:
        while self._contexts:
            await asyncio.sleep(self.interval)
            await self.poll()

    async def poll(self) -> None:
        self.polls += 1
        seen: dict[Path, Stamp] = {}
        for i, context in enumerate(list(self._contexts)):
            if context not in self._contexts:
                continue
            stamps = []
            for path in context.files:
                if path not in seen:
                    seen[path] = stamp(path)
                stamps.append(seen[path])
            if context.check(tuple(stamps)) or (i + 1) % self.batch == 0:
                await asyncio.sleep(0)  # a rebuild parses files: let the loop breathe between them


_SHARED: dict[asyncio.AbstractEventLoop, FileWatch] = {}


def shared_watch() -> FileWatch:
    """The running loop's :class:`FileWatch` (one per loop: tests run many loops in one process);
    the process's entry point sets its ``interval``."""
    loop = asyncio.get_running_loop()
    found = _SHARED.get(loop)
    if found is None:
        for old in [old for old in _SHARED if old.is_closed()]:
            del _SHARED[old]
        found = _SHARED[loop] = FileWatch()
    return found
