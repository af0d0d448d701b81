"""Read an admin port as a monitoring system would: /metrics through prometheus_client's own
parser (never ours), other paths as text."""

from __future__ import annotations

import os

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "get", "scrape", "total", "value"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
_FACTOR = float(os.environ.get("KES_TIMEOUT_FACTOR", "1"))


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=10 * _FACTOR)) as resp:
            return resp.status, await resp.text()


async def scrape(port: int) -> Samples:
    """Every sample of /metrics, keyed by (sample name, sorted labels)."""
    status, text = await get(port, "/metrics")
    assert status == 200, text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))
