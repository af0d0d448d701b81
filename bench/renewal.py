"""What an edge certificate renewal costs (the ``renew`` feature), CPU only, in this process:

* cloud: one signed renewal (policy checks + signature), one refused CSR (wrong CN), one
  rate-limited request (what a flooding edge costs after its hourly allowance);
* edge: a new ECDSA P-256 key and its CSR, the checks of the answer, and the atomic pair
  write (two files, fsynced, renamed; on the filesystem of ``--dir``).

    python -m bench.renewal [--n 300] [--dir /tmp]

Signing runs inline in the tunnel's reader (no thread): these numbers are how long it holds
that reader, and the event loop.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from streamcerts import create_ca
from streamcerts._x509 import name, new_key
from streamcerts.pair_files import write_pair
from streamcerts.renewal import check_issued, make_csr
from cloudstream.cert_signer import CertSigner
from testkit.short_certs import issue_edge_cert


def per_call(n: int, fn: Callable[[int], object]) -> float:
    """Milliseconds per call, best of three rounds of ``n``."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.renewal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    ns = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the refusals' log lines are not what is measured
    ca = create_ca()
    cert, _ = issue_edge_cert(*ca, "edge-1", ("10.0.0.1",), lifetime=86400)
    der = cert.public_bytes(serialization.Encoding.DER)
    keys = [new_key() for _ in range(ns.n)]
    csrs = [make_csr(k, cert.subject, ["10.0.0.1"]) for k in keys]
    signer = CertSigner(*ca, max_validity=dt.timedelta(days=365), max_per_window=10**9)
    chains = [signer.answer("edge-1", der, c).chain_pem for c in csrs]
    bad = make_csr(new_key(), name("victim"), [])
    rows = [
        ("cloud: sign a renewal", per_call(ns.n, lambda i: signer.answer("edge-1", der, csrs[i]))),
        ("cloud: refuse a CSR (wrong CN)", per_call(ns.n, lambda i: signer.answer("edge-1", der, bad))),
    ]
    limited = CertSigner(*ca, max_validity=dt.timedelta(days=365), max_per_window=1)
    limited.answer("edge-1", der, csrs[0])
    rows.append(("cloud: a rate-limited request", per_call(ns.n * 10, lambda i: limited.answer("edge-1", der, csrs[0]))))
    rows.append(("edge: new key + CSR", per_call(ns.n, lambda i: make_csr(new_key(), cert.subject, ["10.0.0.1"]))))
    rows.append(("edge: check the answer", per_call(ns.n, lambda i: check_issued(chains[i], keys[i], cert, ["10.0.0.1"], [ca[0]]))))
    with tempfile.TemporaryDirectory(dir=ns.dir) as tmp:
        target = Path(tmp)
        chain = check_issued(chains[0], keys[0], cert, ["10.0.0.1"], [ca[0]])
        rows.append(("edge: atomic pair write (fsync)",
                     per_call(max(10, ns.n // 10), lambda i: write_pair(target / "s.crt", target / "s.key", chain, keys[0]))))
    print(f"renewal costs, best of 3 x {ns.n}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for label, ms in rows:
        print(f"  {label:34} {ms:8.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
