"""The iptables manager against real iptables (nft and legacy) in network namespaces this test
creates, proven with real TCP connections: a connection to a fake edge IP:10250 reaches
cloudstream's stream port (and cloudstream's SO_ORIGINAL_DST resolve picks that node), removing
the node sends it back to the real node, a second run changes nothing, a writer killed midway
leaves all or nothing and the next run converges, cleanup leaves the nat table as it was.
Root only (CI runs it as root); every namespace is deleted, whatever happens."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from testkit.netns import NetnsPair, ensure_iptables, netns, netns_pair, run, skip_reason
from tests.conftest import ROOT

from .framework import READY, Process, start_edge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CHAIN = "KUBEEDGE-STREAM"
STANDIN_PORT = 10003
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
# Someone else's nat rules, there before us: they must survive every run untouched.
FOREIGN = """*nat
:TUNNEL-PORT - [0:0]
:OTHER - [0:0]
-A PREROUTING -j OTHER
-A OUTPUT -d 10.99.0.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:1
-A OTHER -p udp -j RETURN
-A TUNNEL-PORT -p tcp -m tcp --dport 10351 -j DNAT --to-destination 10.99.0.2:10003
COMMIT
"""


@pytest.fixture(params=["nft", "legacy"])
def backend(request: pytest.FixtureRequest) -> str:
    if shutil.which(f"iptables-{request.param}-restore") is None:
        pytest.skip(f"iptables-{request.param}-restore is not installed")
    return str(request.param)


@pytest.fixture
def pair() -> Iterator[NetnsPair]:
    reason = skip_reason() or ensure_iptables()
    if reason:
        pytest.skip(reason)
    with netns_pair() as p:
        yield p


def nat(pair: NetnsPair, backend: str) -> str:
    """``iptables-save -t nat`` without its timestamp comments and packet counters."""
    out = pair.cloud_run(f"iptables-{backend}-save", "-t", "nat").stdout
    return "".join(re.sub(r"\[\d+:\d+\]", "[0:0]", ln) + "\n" for ln in out.splitlines() if not ln.startswith("#"))


def chain_rules(pair: NetnsPair, backend: str) -> list[str]:
    return [ln for ln in nat(pair, backend).splitlines() if ln.startswith(f"-A {CHAIN} ")]


def cli(pair: NetnsPair, backend: str, *args: str, check: bool = True, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*pair.exec_in(), *prefix, sys.executable, "-m", "cloudstream", "iptables", *args, "--backend", backend],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=ENV,
    )
    if check:
        assert done.returncode == 0, (done.stdout, done.stderr)
    return done


def probe(pair: NetnsPair, ip: str, port: int = 10250) -> str:
    return pair.cloud_run(sys.executable, "-m", "testkit.netprobe", "probe", ip, str(port)).stdout.strip()


@contextmanager
def listeners(pair: NetnsPair) -> Iterator[None]:
    """A stand-in for cloudstream on 127.0.0.1:10003 (answers with SO_ORIGINAL_DST) in the cloud
    namespace, and the real node's 10250 in the node namespace."""
    procs = []
    try:
        for ns, mode, port in ((pair.cloud, "listen-origdst", STANDIN_PORT), (pair.node, "listen-node", 10250)):
            proc = subprocess.Popen([*pair.exec_in(ns), sys.executable, "-m", "testkit.netprobe", mode, str(port)],
                                    stdout=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()


def test_sync_redirects_removes_is_idempotent_and_cleans_up(pair: NetnsPair, backend: str) -> None:
    ip2 = pair.add_node_ip()
    pair.cloud_run(f"iptables-{backend}-restore", "--noflush", stdin=FOREIGN)
    before = nat(pair, backend)
    with listeners(pair):
        assert probe(pair, pair.node_ip) == f"node {pair.node_ip}:10250"  # no rule: the real node answers
        cli(pair, backend, "sync", "--node", f"edge-1={pair.node_ip}", "--node", f"edge-2={ip2}")
        assert probe(pair, pair.node_ip) == f"cloud {pair.node_ip}:10250"
        assert probe(pair, ip2) == f"cloud {ip2}:10250"
        first = nat(pair, backend)
        shown = cli(pair, backend, "show").stdout
        assert f"# {backend} (writes our rules): chain {CHAIN} present, 2 node rules, 1 jumps" in shown, shown
        assert f'--comment "kubeedge-stream node edge-1" -j DNAT --to-destination 127.0.0.1:{STANDIN_PORT}' in first
        assert first.count(f"-j {CHAIN}") == 1
        # Everything that was there is still there, in its order.
        assert [ln for ln in first.splitlines() if CHAIN not in ln] == before.splitlines()

        again = cli(pair, backend, "sync", "--node", f"edge-2={ip2}", "--node", f"edge-1={pair.node_ip}")
        assert "nothing to change" in again.stderr
        assert nat(pair, backend) == first  # byte-identical

        cli(pair, backend, "sync", "--node", f"edge-1={pair.node_ip}")
        assert probe(pair, ip2) == f"node {ip2}:10250"  # its rule is gone: the real node again
        assert probe(pair, pair.node_ip) == f"cloud {pair.node_ip}:10250"
        assert len(chain_rules(pair, backend)) == 1

        cli(pair, backend, "cleanup")
        assert nat(pair, backend) == before
        assert probe(pair, pair.node_ip) == f"node {pair.node_ip}:10250"
        assert "nothing to remove" in cli(pair, backend, "cleanup").stderr
        assert nat(pair, backend) == before


def test_partial_states_converge(pair: NetnsPair, backend: str) -> None:
    """What a crash, an operator or an old version may leave: each converges in one run."""
    pair.cloud_run(f"iptables-{backend}-restore", "--noflush", stdin=FOREIGN)
    before = nat(pair, backend)
    args = ("sync", "--node", f"edge-1={pair.node_ip}")
    cli(pair, backend, *args)
    want = nat(pair, backend)
    messes = [
        # the chain without its jump
        f"*nat\n-D OUTPUT -m comment --comment kubeedge-stream -j {CHAIN}\nCOMMIT\n",
        # duplicate jumps, one from a chain we were not told to use, a stale rule, a foreign spelling
        f"*nat\n-A OUTPUT -m comment --comment kubeedge-stream -j {CHAIN}\n-I OUTPUT 1 -j {CHAIN}\n"
        f"-A PREROUTING -m comment --comment kubeedge-stream -j {CHAIN}\n"
        f"-A {CHAIN} -d 10.77.0.1/32 -p tcp -m tcp --dport 10250 -j DNAT --to-destination 127.0.0.1:1\nCOMMIT\n",
        # our rule's target changed by hand
        f"*nat\n:{CHAIN} - [0:0]\n-A {CHAIN} -d {pair.node_ip}/32 -p tcp -m tcp --dport 10250 -j DNAT "
        f"--to-destination 127.0.0.1:9\nCOMMIT\n",
    ]
    for mess in messes:
        pair.cloud_run(f"iptables-{backend}-restore", "--noflush", stdin=mess)
        assert nat(pair, backend) != want
        cli(pair, backend, *args)
        assert nat(pair, backend) == want, mess
    # The chain and jump gone entirely (an `iptables -t nat -F OUTPUT; -X`): the same.
    cli(pair, backend, "cleanup")
    cli(pair, backend, *args)
    assert nat(pair, backend) == want
    cli(pair, backend, "cleanup")
    assert nat(pair, backend) == before


def test_a_writer_killed_midway_leaves_all_or_nothing(pair: NetnsPair, backend: str, tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    nodes.write_text("".join(f"edge-{i}=10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}\n" for i in range(1, 1001)))
    # 1. The restore input cut anywhere (a writer killed while feeding iptables-restore): no COMMIT, no change.
    full = cli(pair, backend, "sync", "--node-file", str(nodes), "--dry-run").stdout
    full = full.split("\n", 1)[1]  # drop the "# backend" line
    start = nat(pair, backend)
    for cut in (len(full) // 7, len(full) // 2, len(full) - len("COMMIT\n") - 1, len(full) - 2):
        done = pair.cloud_run(f"iptables-{backend}-restore", "--noflush", stdin=full[:cut], check=False)
        assert done.returncode != 0
        assert nat(pair, backend) == start, cut
    # 2. The command itself killed (SIGKILL) at several points of a 1,000-node sync, from 1,000 to 500
    #    nodes and back: the chain always holds one whole state, never a mix.
    half = tmp_path / "half"
    half.write_text("".join(nodes.read_text().splitlines(keepends=True)[::2]))
    cli(pair, backend, "sync", "--node-file", str(half))
    for i, delay in enumerate((0.05, 0.15, 0.3, 0.45, 0.6, 0.9)):
        target = nodes if i % 2 == 0 else half
        proc = subprocess.Popen(
            [*pair.exec_in(), sys.executable, "-m", "cloudstream", "iptables", "sync", "--node-file", str(target),
             "--backend", backend], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)  # ip netns exec execs python: this is the writer
        proc.wait()
        assert len(chain_rules(pair, backend)) in (500, 1000), delay
        assert nat(pair, backend).count(f"-j {CHAIN}") == 1
    cli(pair, backend, "sync", "--node-file", str(nodes))
    assert len(chain_rules(pair, backend)) == 1000
    settled = nat(pair, backend)
    assert "nothing to change" in cli(pair, backend, "sync", "--node-file", str(nodes)).stderr
    assert nat(pair, backend) == settled


def test_our_chain_in_the_other_backend_is_removed(pair: NetnsPair) -> None:
    for b in ("nft", "legacy"):
        if shutil.which(f"iptables-{b}-restore") is None:
            pytest.skip(f"needs both backends; iptables-{b}-restore is not installed")
    cli(pair, "legacy", "sync", "--node", f"edge-1={pair.node_ip}")
    assert len(chain_rules(pair, "legacy")) == 1
    # What a sync killed between its two steps leaves: nft written, legacy not yet cleaned.
    restore = cli(pair, "nft", "sync", "--node", f"edge-1={pair.node_ip}", "--dry-run").stdout
    assert "# legacy (our chain is stale there)" in restore
    pair.cloud_run("iptables-nft-restore", "--noflush", stdin=restore.split("# legacy")[0])
    assert len(chain_rules(pair, "nft")) == 1 and len(chain_rules(pair, "legacy")) == 1
    with listeners(pair):
        cli(pair, "nft", "sync", "--node", f"edge-1={pair.node_ip}")
        assert len(chain_rules(pair, "nft")) == 1
        assert CHAIN not in nat(pair, "legacy")
        assert probe(pair, pair.node_ip) == f"cloud {pair.node_ip}:10250"
        cli(pair, "nft", "cleanup")
        assert CHAIN not in nat(pair, "nft")


def test_clear_errors_without_iptables_or_privilege(pair: NetnsPair, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run(
        [str(shutil.which("ip")), *pair.exec_in()[1:], sys.executable, "-m", "cloudstream", "iptables", "sync",
         "--node", "a=10.1.1.1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(ENV, PATH=str(empty)),
    )
    assert done.returncode == 1 and "apt-get install iptables" in done.stderr, done.stderr
    # root without CAP_NET_ADMIN (as a container without the capability); staying uid 0 keeps the
    # checkout readable wherever CI cloned it (a 0700 temp dir is closed to nobody)
    unprivileged = ("setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    done = cli(pair, "nft", "sync", "--node", "a=10.1.1.1", check=False, prefix=unprivileged)
    assert done.returncode == 1 and "CAP_NET_ADMIN" in done.stderr and "run as root" in done.stderr, done.stderr
    done = cli(pair, "nft", "sync", "--node", "a=10.1.1.1", "--dry-run", check=False, prefix=unprivileged)
    assert done.returncode == 0 and "-A KUBEEDGE-STREAM -d 10.1.1.1/32" in done.stdout, done.stderr


async def test_the_server_keeps_rules_in_step_with_tunnels(pair: NetnsPair, backend: str, lab_pki) -> None:  # type: ignore[no-untyped-def]
    """A real cloudstream with --manage-iptables: an edge's tunnel brings its rule, the API
    server's connection to nodeIP:10250 reaches cloudstream, which picks that node by
    SO_ORIGINAL_DST; the tunnel's end takes the rule away; the rules stay when cloudstream stops."""
    ip2 = pair.add_node_ip()
    pair.cloud_run(f"iptables-{backend}-restore", "--noflush", stdin=FOREIGN)
    before = nat(pair, backend)
    exec_in = pair.exec_in()
    cloud = await Process.start(
        "cloudstream",
        [*exec_in, sys.executable, "-m", "cloudstream", "--pki-dir", str(lab_pki.root), "--stream-address", "127.0.0.1",
         "--stream-port", "0", "--tunnel-address", "127.0.0.1", "--tunnel-port", "0", "--manage-iptables",
         "--iptables-backend", backend, "--iptables-allow-cidr", f"{pair.subnet}.0/24"],
        raw=True,
    )
    edges: dict[str, Process] = {}
    try:
        m = await cloud.wait_for_line(READY)
        tunnel_port = m.group(2)
        await cloud.wait_for_line(r"iptables \(\w+\): \+0 -0 node rules \(0 in the chain\); jump added from OUTPUT")
        # edge-3 announces an IP outside the allowed range (another, non-edge node's, say): no rule for it
        for node, ip in (("edge-1", pair.node_ip), ("edge-2", ip2), ("edge-3", "10.77.0.5")):
            edges[node] = await Process.start(
                "edgestream",
                [*exec_in, sys.executable, "-m", "edgestream", "--pki-dir", str(lab_pki.root), "--node-name", node,
                 "--server", f"localhost:{tunnel_port}", "--node-ip", ip, "--backend", "emulator",
                 "--emulate", f"default/{node}/app"],
                raw=True,
            )
        await cloud.wait_for_line("node edge-3 gets no DNAT rule: its IP 10.77.0.5 is outside --iptables-allow-cidr")
        await _wait_rules(pair, backend, 2)
        for node, ip in (("edge-1", pair.node_ip), ("edge-2", ip2)):
            text = await _logs(pair, lab_pki, ip, node)
            assert text.startswith("HTTP/1.1 200"), (text, cloud.output)
            assert f"default/{node}/app line" in text
        await edges.pop("edge-2").stop()
        await _wait_rules(pair, backend, 1)
        assert not any(ip2 in r for r in chain_rules(pair, backend))
        with listeners(pair):  # edge-2's IP leads to the real node again
            assert probe(pair, ip2) == f"node {ip2}:10250"
    finally:
        for edge in edges.values():
            await edge.stop()
        await cloud.stop()
    assert "iptables rules left in place" in cloud.output
    assert len(chain_rules(pair, backend)) in (0, 1)  # edge-1's rule, unless its tunnel's end was synced first
    cli(pair, backend, "cleanup")
    assert nat(pair, backend) == before


async def _wait_rules(pair: NetnsPair, backend: str, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while len(chain_rules(pair, backend)) != count:
        assert time.monotonic() < deadline, (count, nat(pair, backend))
        await asyncio.sleep(0.1)


CLIENT = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.check_hostname = False
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
with socket.create_connection((sys.argv[1], 10250), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
    tls.sendall(("GET /containerLogs/default/%s/app?tailLines=2 HTTP/1.1\r\nHost: apiserver.example:6443\r\n"
                 "Connection: close\r\n\r\n" % sys.argv[5]).encode())
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
print(data.decode(errors="replace"))
"""


async def _logs(pair: NetnsPair, lab_pki, ip: str, node: str) -> str:  # type: ignore[no-untyped-def]
    client = await asyncio.create_subprocess_exec(
        *pair.exec_in(), sys.executable, "-c", CLIENT, ip, str(lab_pki.stream_ca), str(lab_pki.apiserver_client_cert),
        str(lab_pki.apiserver_client_key), node, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )
    out, err = await asyncio.wait_for(client.communicate(), 30)
    return out.decode() + err.decode()


def test_netns_helper_cleans_up_on_failure() -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    names = []
    with pytest.raises(RuntimeError), netns_pair() as p:
        names = [p.cloud, p.node]
        raise RuntimeError("a failing test")
    listed = run("ip", "netns", "list").stdout
    assert names and not any(n in listed for n in names)


async def test_a_restarted_server_keeps_rules_until_their_nodes_could_come_back(pair: NetnsPair, lab_pki) -> None:  # type: ignore[no-untyped-def]
    """Rules a previous run left stay through the start-up grace (the API server keeps reaching
    us, not the unreachable node IPs), follow the new port at once, and go when the grace ends."""
    ghost = pair.add_node_ip()
    cli(pair, "nft", "sync", "--node", f"ghost={ghost}", "--node", f"edge-1={pair.node_ip}", "--stream-port", "1")
    cloud = await Process.start(
        "cloudstream",
        [*pair.exec_in(), sys.executable, "-m", "cloudstream", "--pki-dir", str(lab_pki.root), "--stream-address",
         "127.0.0.1", "--stream-port", "0", "--tunnel-address", "127.0.0.1", "--tunnel-port", "0", "--manage-iptables",
         "--iptables-backend", "nft", "--iptables-startup-grace", "4"],
        raw=True,
    )
    try:
        stream_port = (await cloud.wait_for_line(READY)).group(1)
        await cloud.wait_for_line(r"iptables \(nft\): \+0 -0 node rules")
        rules = chain_rules(pair, "nft")
        assert len(rules) == 2 and all(r.endswith(f"--to-destination 127.0.0.1:{stream_port}") for r in rules), rules
        await _wait_rules(pair, "nft", 0)  # nobody came back within the grace
    finally:
        await cloud.stop()
    cli(pair, "nft", "cleanup")


async def test_a_wave_of_tunnels_is_a_few_writes(pair: NetnsPair, tmp_path: Path) -> None:
    """60 edges dialling at once (one fleet process, certificates carrying their IPs): every rule
    in place, in far fewer iptables writes than tunnels (the loop waits for a quiet moment, at most
    max_delay). With --iptables-verified-only, an edge whose certificate does not carry the IP it
    announces gets no rule."""
    from streamcerts import init_lab

    layout = init_lab(tmp_path / "pki", ["plain"])
    cloud = await Process.start(
        "cloudstream",
        [*pair.exec_in(), sys.executable, "-m", "cloudstream", "--pki-dir", str(layout.root), "--stream-address",
         "127.0.0.1", "--stream-port", "0", "--tunnel-address", "127.0.0.1", "--tunnel-port", "0", "--manage-iptables",
         "--iptables-backend", "nft", "--iptables-verified-only"],
        raw=True,
    )
    procs: list[Process] = []
    try:
        tunnel_port = (await cloud.wait_for_line(READY)).group(2)
        await cloud.wait_for_line(r"iptables \(nft\): ")
        mark = len(cloud.lines)
        procs.append(await Process.start(
            "edgestream",
            [*pair.exec_in(), sys.executable, "-m", "edgestream", "--pki-dir", str(layout.root), "--node-name", "plain",
             "--server", f"localhost:{tunnel_port}", "--node-ip", "10.128.200.1", "--backend", "emulator"],
            raw=True,
        ))
        await cloud.wait_for_line("tunnel up: node plain")
        procs.append(await Process.start(
            "edgestream",
            [*pair.exec_in(), sys.executable, "-m", "edgestream", "emulate", "--nodes", "60", "--server",
             f"127.0.0.1:{tunnel_port}", "--server-name", "localhost", "--pki-dir", str(layout.root), "--cidr",
             "10.128.0.0/16"],
            raw=True,
        ))
        await _wait_rules(pair, "nft", 60, timeout=60)
        await cloud.wait_for_line(r"\(60 in the chain\)", since=mark)  # the write's log line follows the write
        writes = [ln for ln in cloud.lines[mark:] if re.search(r"iptables \(nft\): \+", ln)]
        assert 1 <= len(writes) <= 30, writes
        assert sum(int(m.group(1)) for ln in writes if (m := re.search(r": \+(\d+) ", ln))) == 60
        assert not any("10.128.200.1" in r for r in chain_rules(pair, "nft"))
        await procs.pop().stop()
        await _wait_rules(pair, "nft", 0, timeout=30)
    finally:
        for proc in procs:
            await proc.stop()
        await cloud.stop()
    cli(pair, "nft", "cleanup")


def test_prerouting_redirects_an_api_server_on_another_host(pair: NetnsPair) -> None:
    """The API server in a third namespace routes node IPs through the cloud host: without
    --prerouting its connection is forwarded to the real node; with it, DNATed to cloudstream
    on the cloud host's address."""
    octet = pair.subnet.rsplit(".", 1)[1]
    api_ip, gw_ip, tag = f"10.214.{octet}.2", f"10.214.{octet}.1", pair.cloud.rsplit("-", 1)[1]
    with netns("kes-a") as api:
        run("ip", "link", "add", f"ka{tag}c", "type", "veth", "peer", "name", f"ka{tag}a")
        run("ip", "link", "set", f"ka{tag}c", "netns", pair.cloud)
        run("ip", "link", "set", f"ka{tag}a", "netns", api)
        run("ip", "-n", pair.cloud, "addr", "add", f"{gw_ip}/24", "dev", f"ka{tag}c")
        run("ip", "-n", api, "addr", "add", f"{api_ip}/24", "dev", f"ka{tag}a")
        run("ip", "-n", pair.cloud, "link", "set", f"ka{tag}c", "up")
        run("ip", "-n", api, "link", "set", f"ka{tag}a", "up")
        run("ip", "-n", api, "route", "add", "default", "via", gw_ip)
        run("ip", "-n", pair.node, "route", "add", f"10.214.{octet}.0/24", "via", pair.cloud_ip)
        pair.cloud_run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        procs = [subprocess.Popen([*pair.exec_in(ns), sys.executable, "-m", "testkit.netprobe", *args],
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
                 for ns, args in ((pair.cloud, ("listen-origdst", "10003", gw_ip)), (pair.node, ("listen-node", "10250")))]
        try:
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

            def from_api() -> str:
                return run(*pair.exec_in(api), sys.executable, "-m", "testkit.netprobe", "probe", pair.node_ip,
                           "10250").stdout.strip()

            assert from_api() == f"node {pair.node_ip}:10250"
            cli(pair, "nft", "sync", "--node", f"edge-1={pair.node_ip}")  # OUTPUT only
            assert from_api() == f"node {pair.node_ip}:10250"
            assert probe(pair, pair.node_ip) == "refused"  # on this host: to 127.0.0.1:10003, nobody there
            refused = cli(pair, "nft", "sync", "--node", f"edge-1={pair.node_ip}", "--prerouting", check=False)
            assert refused.returncode == 2 and "route_localnet" in refused.stderr
            cli(pair, "nft", "sync", "--node", f"edge-1={pair.node_ip}", "--prerouting", "--to-address", gw_ip)
            assert from_api() == f"cloud {pair.node_ip}:10250"
            assert probe(pair, pair.node_ip) == f"cloud {pair.node_ip}:10250"
            assert nat(pair, "nft").count(f"-j {CHAIN}") == 2
            cli(pair, "nft", "sync", "--node", f"edge-1={pair.node_ip}", "--to-address", gw_ip)  # PREROUTING off again
            assert nat(pair, "nft").count(f"-j {CHAIN}") == 1
            assert from_api() == f"node {pair.node_ip}:10250"
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
                assert proc.stdout is not None
                proc.stdout.close()
            cli(pair, "nft", "cleanup")


def test_dry_run_needs_no_iptables_and_reads_kubectls_node_list(tmp_path: Path) -> None:
    """No root, no iptables: ``--dry-run`` still prints the rules. The node file is what the
    README's kubectl jsonpath prints (every InternalIP; the first is the one the API server dials)."""
    empty = tmp_path / "bin"
    empty.mkdir()
    nodes = tmp_path / "nodes"
    nodes.write_text("# kubectl get nodes -l node-role.kubernetes.io/edge ...\nedge-1=10.0.0.7 10.0.0.8\nedge-2=10.0.0.9\n")
    done = subprocess.run(
        [sys.executable, "-m", "cloudstream", "iptables", "sync", "--node-file", str(nodes), "--dry-run"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(ENV, PATH=str(empty)),
    )
    assert done.returncode == 0, done.stderr
    assert "apt-get install iptables" in done.stdout  # why it could not read the table
    rules = [ln for ln in done.stdout.splitlines() if ln.startswith(f"-A {CHAIN} ")]
    assert [r.split()[3] for r in rules] == ["10.0.0.7/32", "10.0.0.9/32"]


async def test_the_server_without_iptables_says_so_and_serves(tmp_path: Path, lab_pki) -> None:  # type: ignore[no-untyped-def]
    """No iptables binary (no root needed): one error line that says what to install, and
    cloudstream still serves its tunnels and kubelet API."""
    empty = tmp_path / "bin"
    empty.mkdir()
    cloud = await Process.start(
        "cloudstream",
        ["env", f"PATH={empty}", sys.executable, "-m", "cloudstream", "--pki-dir", str(lab_pki.root), "--stream-address",
         "127.0.0.1", "--stream-port", "0", "--tunnel-address", "127.0.0.1", "--tunnel-port", "0", "--manage-iptables"],
        raw=True,
    )
    edge = None
    try:
        tunnel_port = (await cloud.wait_for_line(READY)).group(2)
        line = await cloud.wait_for_line(r"--manage-iptables: .*")
        assert "apt-get install iptables" in line.group(0) and "serving without managed rules" in line.group(0)
        edge = await start_edge(lab_pki, "edge-1", int(tunnel_port))
        await cloud.wait_for_line("tunnel up: node edge-1")
    finally:
        if edge is not None:
            await edge.stop()
        await cloud.stop()
