"""Runs iptables-save / iptables-restore for one backend (nft or legacy), and picks the backend.

Both backends can hold nat rules at once and the kernel applies both (legacy's x_tables and
nf_tables hooks), so the choice is about where operators and kube-proxy look:

* ``--iptables-backend nft|legacy``: that one, or a clear error when its binaries are missing;
* ``auto``: the only one installed; with both, the one whose nat table holds more rules (not
  counting ours: what kube-proxy, Docker or the operator already use, as Kubernetes'
  iptables-wrapper decides); on a tie, the one ``iptables`` points to (``iptables --version``
  says ``nf_tables`` or ``legacy``).

Our chain found in the *other* backend (the host switched, or an earlier run chose otherwise)
is removed there by ``sync``, so one backend holds our rules. Reading legacy's nat table creates
it in the kernel when it is absent, so legacy is read only when ``/proc/net/ip_tables_names``
lists ``nat``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamproto.tunnel.errors import ConfigError, TunnelError

from .rules import NatTable, parse_save

__all__ = [
    "Backend", "Exec", "Iptables", "IptablesError", "IptablesMissing", "NeedsNetAdmin", "Result", "choose", "run_exec",
]

TIMEOUT = 30.0
"""Seconds one iptables-save or -restore may take (1,000 rules take milliseconds)."""
LOCK_WAIT = "5"
"""Seconds legacy iptables-restore waits for the xtables lock another writer holds (``-w``)."""
INSTALL = "install iptables (Debian/Ubuntu: apt-get install iptables; RHEL/Fedora: dnf install iptables-nft)"


class IptablesError(TunnelError):
    """iptables could not be read or written; the message says what to do."""


class IptablesMissing(IptablesError):
    pass


class NeedsNetAdmin(IptablesError):
    pass


@dataclass(frozen=True, slots=True)
class Result:
    rc: int
    out: str
    err: str


Exec = Callable[[Sequence[str], "str | None"], Result]
"""Runs argv with optional stdin text; tests and the bench pass ``ip netns exec`` wrappers."""


def run_exec(argv: Sequence[str], stdin: str | None = None, timeout: float = TIMEOUT) -> Result:
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise IptablesMissing(f"{argv[0]} is not installed: {INSTALL}") from None
    except subprocess.TimeoutExpired:
        raise IptablesError(f"{' '.join(argv[:2])} did not finish within {timeout:g} s (xtables lock held?)") from None
    return Result(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    """``nft`` or ``legacy``."""
    save: str
    restore: str


def find_backends(which: Callable[[str], str | None] = shutil.which, run: Exec = run_exec) -> dict[str, Backend]:
    """The backends whose save and restore binaries are installed."""
    found = {}
    for name in ("nft", "legacy"):
        save, restore = which(f"iptables-{name}-save"), which(f"iptables-{name}-restore")
        if save and restore:
            found[name] = Backend(name, save, restore)
    save, restore = which("iptables-save"), which("iptables-restore")
    if not found and save and restore:  # iptables before 1.8 (legacy only), or a distribution without the -nft names
        found[_version_backend(run, save) or "legacy"] = Backend(_version_backend(run, save) or "legacy", save, restore)
    return found


def _version_backend(run: Exec, binary: str) -> str | None:
    """``iptables v1.8.9 (nf_tables)`` -> nft; ``(legacy)`` -> legacy; older ones print no mode."""
    try:
        text = run([binary, "--version"], None).out
    except IptablesError:
        return None
    return "nft" if "nf_tables" in text else "legacy" if "legacy" in text else None


class Iptables:
    """The nat table of one backend: read it, write one restore input."""

    def __init__(self, backend: Backend, run: Exec = run_exec, proc_names: Path = Path("/proc/net/ip_tables_names")):
        self.backend = backend
        self.run = run
        self.proc_names = proc_names

    @property
    def name(self) -> str:
        return self.backend.name

    def has_nat(self) -> bool:
        """False when reading would only create an empty table (legacy without a nat table)."""
        if self.backend.name != "legacy":
            return True
        try:
            text = self.run(["cat", str(self.proc_names)], None).out
        except IptablesError:
            return True
        return "nat" in text.split()

    def save_text(self) -> str:
        return self._checked([self.backend.save, "-t", "nat"], None).out

    def read(self, create: bool = True) -> NatTable:
        if not create and not self.has_nat():
            return NatTable()
        return parse_save(self.save_text())

    def restore(self, text: str) -> None:
        argv = [self.backend.restore, "--noflush"]
        if self.backend.name == "legacy":
            argv[1:1] = ["-w", LOCK_WAIT]
        self._checked(argv, text)

    def _checked(self, argv: list[str], stdin: str | None) -> Result:
        result = self.run(argv, stdin)
        if result.rc == 0:
            return result
        err = result.err.strip().replace("\n", "; ")
        if any(s in result.err for s in ("Permission denied", "you must be root", "Operation not permitted")):
            raise NeedsNetAdmin(
                f"{Path(argv[0]).name} was refused ({err}): changing nat rules needs CAP_NET_ADMIN in the API "
                "server host's network namespace: run as root, or grant the capability (a container: hostNetwork: "
                "true and securityContext.capabilities.add: [NET_ADMIN]); --dry-run prints the rules without it"
            )
        raise IptablesError(f"{Path(argv[0]).name} failed (exit {result.rc}): {err or 'no message'}")


def choose(
    choice: str = "auto", which: Callable[[str], str | None] = shutil.which, run: Exec = run_exec, chain: str = ""
) -> tuple[Iptables, list[Iptables], str]:
    """(the backend to write, the other installed ones, why) for ``choice`` auto|nft|legacy."""
    found = find_backends(which, run)
    if not found:
        raise IptablesMissing(f"no iptables-restore found on PATH (looked for iptables-nft-restore, "
                              f"iptables-legacy-restore, iptables-restore): {INSTALL}")
    tables = {name: Iptables(b, run) for name, b in found.items()}
    if choice != "auto":
        if choice not in tables:
            raise ConfigError(
                f"--iptables-backend {choice}: iptables-{choice}-save/-restore are not installed "
                f"(found: {', '.join(sorted(tables))}); {INSTALL}, or pick auto"
            )
        return tables[choice], [t for n, t in tables.items() if n != choice], "chosen by flag"
    if len(tables) == 1:
        only = next(iter(tables.values()))
        return only, [], "the only backend installed"
    counts = {name: _foreign_rules(t, chain) for name, t in tables.items()}
    if counts["nft"] != counts["legacy"]:
        name = max(counts, key=lambda n: counts[n])
        why = f"its nat table holds more rules ({counts[name]} against {min(counts.values())})"
    else:
        iptables = which("iptables")
        name = (_version_backend(run, iptables) if iptables else None) or "nft"
        why = f"no rules tell them apart; `iptables` points to {name}" if iptables else "no rules tell them apart"
    return tables[name], [t for n, t in tables.items() if n != name], why


def _foreign_rules(table: Iptables, chain: str) -> int:
    nat = table.read(create=False)
    return sum(1 for r in nat.rules if not r.startswith(f"-A {chain} ") and not r.endswith(f" -j {chain}"))
