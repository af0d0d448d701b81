"""``kubeedge_stream_certificate_expiry_timestamp_seconds{file}``: the ``notAfter`` of each
certificate file in use, read at scrape time (a rotated file shows its new date at once).
Parsed again only when the file's mtime or size changed; a file with several certificates (a CA
bundle) reports the earliest."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cryptography import x509
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CertExpiryCollector", "not_after"]

logger = logging.getLogger(__name__)


def not_after(path: Path) -> float:
    """The earliest ``notAfter`` of the PEM certificates in ``path``, as a UNIX time."""
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    return min(c.not_valid_after_utc.timestamp() for c in certs)


class CertExpiryCollector(Collector):
    def __init__(self, files: Callable[[], Iterable[Path]]) -> None:
        """``files``: the certificate files in use now (called at each scrape)."""
        self.files = files
        self._cache: dict[Path, tuple[tuple[int, int], float]] = {}
        self._unreadable: set[Path] = set()

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "kubeedge_stream_certificate_expiry_timestamp_seconds",
            "notAfter of each certificate file in use (the earliest one in a bundle), as a UNIX time.",
            labels=["file"],
        )
        seen = set()
        for path in self.files():
            seen.add(path)
            value = self._read(path)
            if value is not None:
                family.add_metric([str(path)], value)
        for gone in set(self._cache) - seen:
            del self._cache[gone]
        yield family

    def _read(self, path: Path) -> float | None:
        try:
            st = os.stat(path)
            key = (st.st_mtime_ns, st.st_size)
            cached = self._cache.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
            value = not_after(path)
        except (OSError, ValueError) as exc:
            if path not in self._unreadable and len(self._unreadable) < 64:
                self._unreadable.add(path)
                logger.warning("! cannot read certificate %s for its expiry metric: %s", path, exc)
            return None
        self._unreadable.discard(path)
        self._cache[path] = (key, value)
        return value
