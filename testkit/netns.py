"""Network namespaces for tests and benchmarks that change iptables (root only).

``netns_pair()`` makes a *cloud* namespace (the API server's host: cloudstream, the iptables
manager, the client) and a *node* namespace holding the edge node's address, joined by a veth
pair on a random 10.213.x.0/24; both are deleted on exit, whatever happened. ``skip_reason()``
says why they cannot be made here (None: they can).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["NetnsPair", "ensure_iptables", "netns", "netns_pair", "run", "skip_reason"]


def run(*argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, check=check, capture_output=True, text=True, timeout=60)


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces and iptables need root (CI runs these tests as root)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return None


def ensure_iptables() -> str | None:
    """Install iptables when missing and allowed (CI, or KES_INSTALL=1 as `make test` sets it); return why it
    is unavailable (None: it is there)."""
    if shutil.which("iptables-restore") is not None:
        return None
    if not (os.environ.get("CI") or os.environ.get("KES_INSTALL") == "1"):
        return "iptables is not installed (apt-get install iptables; `make test` as root installs it: KES_INSTALL=1)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "iptables"]
    if subprocess.run(install, capture_output=True, timeout=300, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300, env=env)  # a fresh machine
        subprocess.run(install, check=True, capture_output=True, timeout=300, env=env)
    return None


@dataclass
class NetnsPair:
    cloud: str
    node: str
    cloud_ip: str
    node_ip: str
    subnet: str
    """``10.213.N`` : further node addresses are ``subnet.3`` etc. (``add_node_ip``)."""
    extra_ips: list[str] = field(default_factory=list)

    def exec_in(self, ns: str | None = None) -> list[str]:
        """The argv prefix that runs a command in ``ns`` (default: the cloud namespace)."""
        return ["ip", "netns", "exec", ns or self.cloud]

    def cloud_run(self, *argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(*self.exec_in(), *argv, stdin=stdin, check=check)

    def add_node_ip(self) -> str:
        """One more address in the node namespace (another fake edge node)."""
        ip = f"{self.subnet}.{3 + len(self.extra_ips)}"
        run("ip", "-n", self.node, "addr", "add", f"{ip}/24", "dev", self._dev("n"))
        self.extra_ips.append(ip)
        return ip

    def _dev(self, side: str) -> str:
        return f"kv{self.cloud.rsplit('-', 1)[1]}{side}"


@contextmanager
def netns(prefix: str = "kes") -> Iterator[str]:
    """One empty namespace with ``lo`` up, deleted on exit."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    try:
        run("ip", "netns", "add", name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        run("ip", "netns", "del", name, check=False)


@contextmanager
def netns_pair() -> Iterator[NetnsPair]:
    tag = secrets.token_hex(3)
    cloud, node = f"kes-c-{tag}", f"kes-n-{tag}"
    subnet = f"10.213.{100 + secrets.randbelow(100)}"
    pair = NetnsPair(cloud, node, f"{subnet}.1", f"{subnet}.2", subnet)
    try:
        run("ip", "netns", "add", cloud)
        run("ip", "netns", "add", node)
        run("ip", "link", "add", f"kv{tag}c", "type", "veth", "peer", "name", f"kv{tag}n")
        run("ip", "link", "set", f"kv{tag}c", "netns", cloud)
        run("ip", "link", "set", f"kv{tag}n", "netns", node)
        run("ip", "-n", cloud, "addr", "add", f"{pair.cloud_ip}/24", "dev", f"kv{tag}c")
        run("ip", "-n", node, "addr", "add", f"{pair.node_ip}/24", "dev", f"kv{tag}n")
        for ns, dev in ((cloud, f"kv{tag}c"), (node, f"kv{tag}n")):
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "link", "set", dev, "up")
        yield pair
    finally:
        run("ip", "netns", "del", cloud, check=False)  # the veth goes with it
        run("ip", "netns", "del", node, check=False)
