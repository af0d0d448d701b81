"""``cloudstream doctor [cloudstream's flags] [--node NAME] [--json]``: reads the config exactly as
``cloudstream`` would (cloudcore.yaml through the same loader, then the same flags), runs the
checks, prints them, exits 0 (nothing failed) or 1 (a FAIL); 2 on a usage or config error."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TextIO

from streamcerts.verify import KUBEEDGE_ROOT
from streamops.cli import Parser
from streamops.doctor.runner import load_config, run_and_print

from ..config import CloudConfig, add_arguments
from .checks import CloudDoctor

STEPS = 20
"""The whole run takes at most about this many ``--timeout``s."""

__all__ = ["build_parser", "main"]

_DOCTOR_FLAGS = ("--json", "--timeout", "--node", "--node-ip", "--pod", "--advertise", "--apiserver-cert",
                 "--apiserver-key", "--kubelet-port")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="cloudstream doctor",
        description="check this cloudstream host: cloudcore.yaml, ports 10003/10004, certificates, the DNAT rule "
                    "per node, tunnels, and a request through the whole chain; give it the flags cloudstream runs with",
    )
    add_arguments(p)  # the very flags cloudstream reads
    d = p.add_argument_group("doctor")
    d.add_argument("--json", action="store_true", help="print JSON instead of aligned text (off)")
    d.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                   help="bound of each network check (default 3; the whole run at most 20x that)")
    d.add_argument("--node", metavar="NAME", help="a node to test end to end: its tunnel, its DNAT rule, "
                                                  "GET /healthz through 10003 (default: none, those checks skip)")
    d.add_argument("--node-ip", metavar="IP", help="--node's internal IP, for the DNAT check without the admin port "
                                                   "(default: from the admin port's /debug/nodes)")
    d.add_argument("--pod", metavar="NS/POD/CONTAINER",
                   help="also read one log line of this container on --node through the chain (default: none)")
    d.add_argument("--advertise", action="append", default=[], metavar="ADDR",
                   help="an address edges dial (edgeStream.server's host), checked reachable and in the server "
                        "certificate's SANs (repeat; default: cloudcore.yaml's cloudHub.advertiseAddress/dnsNames)")
    d.add_argument("--apiserver-cert", metavar="PATH",
                   help="the API server's kubelet-client certificate for the chain request (default: "
                        "<pki-dir>/apiserver/kubelet-client.crt, else /etc/kubernetes/pki/apiserver-kubelet-client.crt)")
    d.add_argument("--apiserver-key", metavar="PATH", help="its key (default: the certificate's path with .key)")
    if "--kubelet-port" not in p._option_string_actions:  # the iptables manager may have added it already
        d.add_argument("--kubelet-port", type=int, metavar="PORT",
                       help="the port the API server dials on a node, for the DNAT check (default 10250)")
    return p


def _cloud_flags(argv: list[str]) -> str:
    """The cloudstream flags among doctor's (for fix lines that say how to start it)."""
    out, skip = [], False
    for i, word in enumerate(argv):
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in _DOCTOR_FLAGS:
            skip = "=" not in word and name != "--json" and i + 1 < len(argv)
            continue
        out.append(word)
    return shlex.join(out)


def main(argv: list[str], out: TextIO = sys.stdout) -> int:
    ns = build_parser().parse_args(argv)
    loaded = load_config("cloudstream", ns, CloudConfig.from_args)
    if loaded is None:
        return 2
    config, yaml = loaded
    doctor = CloudDoctor(
        config=config, yaml_path=Path(ns.config) if ns.config else None, yaml=yaml,
        pki_root=Path(ns.pki_dir) if ns.pki_dir else KUBEEDGE_ROOT, timeout=ns.timeout,
        node=ns.node, node_ip=ns.node_ip or "", pod=ns.pod, advertise=tuple(ns.advertise),
        apiserver_cert=Path(ns.apiserver_cert) if ns.apiserver_cert else None,
        apiserver_key=Path(ns.apiserver_key) if ns.apiserver_key else None,
        kubelet_port=ns.kubelet_port or 10250, cloud_flags=_cloud_flags(argv),
    )
    return run_and_print("cloudstream", doctor, STEPS, ns.json, out)
