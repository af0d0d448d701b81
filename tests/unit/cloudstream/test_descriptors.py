"""The open-file budget the ports share: one port may use what the other does not need, never
the floor the other keeps."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, strategies as st

from cloudstream.descriptors import RESERVE, DescriptorPool


@dataclass(eq=False)
class Port:
    name: str
    open_connections: int = 0


def _fill(pool: DescriptorPool, port: Port, limit: int = 1 << 20) -> int:
    while port.open_connections < limit and pool.admits(port):
        port.open_connections += 1
    return port.open_connections


def test_api_port_borrows_what_the_tunnel_port_does_not_use() -> None:
    pool, api, tunnel = DescriptorPool(), Port("kubelet API"), Port("tunnel")
    pool.join(api, 20_000)
    pool.join(tunnel, 20_000)
    tunnel.open_connections = 1_000
    # the old static split stopped the API port at (20,000 - 128) / 2 = 9,936
    assert _fill(pool, api) == 20_000 - RESERVE - pool.floor
    assert api.open_connections >= 10_000 + 4_000
    assert not pool.admits(api)
    assert "kept for tunnel" in pool.why_full(api) and "LimitNOFILE" in pool.why_full(api)
    # the tunnel port still has its floor
    assert _fill(pool, tunnel) == pool.floor


def test_a_flood_on_one_port_leaves_the_other_its_floor() -> None:
    pool, api, tunnel = DescriptorPool(), Port("kubelet API"), Port("tunnel")
    pool.join(api, 1024)
    pool.join(tunnel, 1024)
    _fill(pool, api)
    assert pool.budget - api.open_connections == pool.floor == (1024 - RESERVE) // 4
    assert _fill(pool, tunnel) == pool.floor


def test_leaving_returns_the_floor() -> None:
    pool, api, tunnel = DescriptorPool(), Port("kubelet API"), Port("tunnel")
    pool.join(api, 1024)
    pool.join(tunnel, 1024)
    pool.leave(tunnel)
    # alone, the floor kept for a second port is still a quarter (floors assume two ports at least)
    assert _fill(pool, api) == pool.budget


@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=400), st.integers(64, 2000))
def test_never_over_budget_and_floors_always_reachable(ops: list[tuple[int, bool]], nofile: int) -> None:
    pool = DescriptorPool()
    ports = [Port(f"p{i}") for i in range(3)]
    for port in ports:
        pool.join(port, nofile)
    for i, opening in ops:
        port = ports[i]
        if opening and pool.admits(port):
            port.open_connections += 1
        elif not opening and port.open_connections:
            port.open_connections -= 1
        assert pool.open_total() <= pool.budget
        for other in ports:  # whatever the others did, each port can still reach its floor
            if other.open_connections < pool.floor:
                assert pool.admits(other)
