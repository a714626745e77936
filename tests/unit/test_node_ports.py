"""Per-node kubelet port assignment (pure) and the per-device stats cache."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fleetproto as fp
from cloud_bridge.kubelet.server import host_name
from cloud_bridge.node_ports import NodePorts, PortsExhausted, annotated_port, claims_from_nodes, parse_range
from cloud_bridge.nodes import NodeRegistry, NodeSettings
from cloud_bridge.stats_sampler import StatsSampler


def test_parse_range() -> None:
    assert parse_range("10300-10399") == (10300, 10399)
    assert parse_range("10300") == (10300, 10300)
    for bad in ("a-b", "10-5", "0-10", "1-70000", ""):
        with pytest.raises(ValueError):
            parse_range(bad)


def test_assign_is_stable_and_prefers_recorded_ports() -> None:
    ports = NodePorts(100, 102)
    ports.seed(claims_from_nodes([("b", {"edgefleet.io/kubelet-port": "101"}), ("c", None), ("d", {})]))
    assert ports.node_at(101) == "b"
    assert ports.assign("a") == 100  # lowest free, 101 is b's
    assert ports.assign("a") == 100
    assert ports.assign("b") == 101
    assert ports.assign("c") == 102
    with pytest.raises(PortsExhausted):
        ports.assign("e")
    ports.release("a")
    assert ports.node_at(100) is None and ports.assign("e") == 100


def test_collisions_and_out_of_range_claims() -> None:
    ports = NodePorts(100, 101)
    ports.seed({"x": 100, "y": 100, "z": 5000, "w": None})
    assert ports.node_at(100) == "x"  # first by name keeps it
    assert ports.assign("y") == 101  # the loser gets a free port
    assert ports.port_of("z") is None
    assert annotated_port({"edgefleet.io/kubelet-port": "junk"}) is None


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(95, 110) | st.none()), max_size=12))
def test_assignment_is_a_bijection_within_the_range(claims) -> None:
    ports = NodePorts(100, 105)
    ports.seed(dict(claims))
    assigned = {}
    for node in "abcdefgh":
        try:
            assigned[node] = ports.assign(node)
        except PortsExhausted:
            assert all(ports.node_at(port) is not None for port in ports.ports)  # full: claims count
    assert len(set(assigned.values())) == len(assigned)
    assert all(port in ports and ports.node_at(port) == node for node, port in assigned.items())
    for node, port in dict(claims).items():  # a claim that survived seeding is honoured
        if port is not None and ports.node_at(port) == node:
            assert assigned[node] == port


def _summary(t: float) -> fp.StatsSummary:
    node = fp.NodeUsage(
        cpu_usage_ns=int(t),
        memory_working_set_bytes=1,
        memory_available_bytes=1,
        fs_capacity_bytes=1,
        fs_available_bytes=1,
    )
    return fp.StatsSummary(time=t, node=node)


async def test_sampler_caches_and_shares_a_fetch() -> None:
    now = [0.0]
    calls: list[str] = []
    gate = asyncio.Event()

    async def fetch(device: str) -> fp.StatsSummary:
        calls.append(device)
        await gate.wait()
        return _summary(1000.0 + len(calls))

    sampler = StatsSampler(fetch, ttl=1.5, clock=lambda: now[0])
    waiters = [asyncio.create_task(sampler.get("pi")) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiters)
    assert calls == ["pi"] and {r.current.time for r in results} == {1001.0}
    now[0] = 1.0
    assert (await sampler.get("pi")).current.time == 1001.0  # still fresh
    now[0] = 2.0
    again = await sampler.get("pi")
    assert calls == ["pi", "pi"] and again.current.time == 1002.0
    assert again.previous is not None and again.previous.time == 1001.0 and again.first_time == 1001.0


async def test_sampler_does_not_cache_failures() -> None:
    attempts = 0

    async def fetch(device: str) -> fp.StatsSummary:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("offline")
        return _summary(5.0)

    sampler = StatsSampler(fetch)
    with pytest.raises(RuntimeError):
        await sampler.get("pi")
    assert (await sampler.get("pi")).current.time == 5.0 and attempts == 2


def test_host_name_drops_the_port() -> None:
    assert host_name("Pi-1.Edge.Example:10250") == "pi-1.edge.example"
    assert host_name("pi-1") == "pi-1"
    assert host_name("[fd00::1]:10250") == "fd00::1"
    assert host_name("fd00::1") == "fd00::1"  # bare IPv6 (not valid in Host, but no port to cut)


def test_registry_advertises_port_and_hostname() -> None:
    import kubernetes

    settings = NodeSettings(
        kubelet_address="10.0.0.5", kubelet_port=10250, kubelet_node_ports=(10300, 10309), hostname_suffix=".edge.test"
    )
    registry = NodeRegistry(kubernetes.client.ApiClient(), settings)
    assert registry.ports is not None
    registry.ports.seed({"pi-1": 10304})
    registry.ports.assign("pi-1")
    info = fp.NodeInfo(
        os="linux", arch="arm64", kernel="6.1", hostname="pi", cpus=4, memory_bytes=1 << 30, disk_bytes=1
    )
    registry._info["pi-1"] = info
    body = registry._body("pi-1", info)
    assert body["status"]["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10304}}
    assert body["metadata"]["annotations"]["edgefleet.io/kubelet-port"] == "10304"
    assert body["status"]["addresses"][:2] == [
        {"type": "Hostname", "address": "pi-1.edge.test"},
        {"type": "InternalIP", "address": "10.0.0.5"},
    ]
    assert registry.node_for_hostname("pi-1.edge.test") == "pi-1"
    assert registry.node_for_hostname("pi-2.edge.test") is None  # not a device of this bridge
    assert registry.node_for_hostname("pi-1.other.test") is None


def test_command_line_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from cloud_bridge.__main__ import parse

    args = parse(["--kubelet-node-ports", "10300-10309", "--kubelet-hostname-suffix", ".edge.test"])
    assert args.kubelet_node_ports == (10300, 10309) and args.kubelet_hostname_suffix == ".edge.test"
    assert parse([]).kubelet_node_ports is None
    with pytest.raises(SystemExit):
        parse(["--kubelet-node-ports", "10309-10300"])
    assert "--kubelet-node-ports" in capsys.readouterr().err
