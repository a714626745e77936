"""Device -> cluster Service through the MQTT service proxy, against its baselines, in one run.

Starts everything itself: mosquitto, kube-apiserver + etcd, the real bridge
(in a thread of this process), a real agent (``python -m edge_agent``, its
own process, services enabled: the ClusterIPs on an interface of this host),
and TCP servers behind selector-less Services with manual Endpoints. The
clients run in a child process (``--client``), so they do not share a GIL
with the bridge.

* proxy_ratio     bulk goodput client -> agent -> MQTT -> bridge -> sink server /
                  one seqstream stream device -> cloud on the same broker (goal >= 0.7),
                  its device end in a child process and its cloud end in this one,
                  as the agent and the bridge are (the same stream with both ends in
                  one process is printed too: ``seqstream_stream_one_process_mbps``)
* connect_ratio   p50 of "connect to the ClusterIP, send 1 byte, read its echo" /
                  raw MQTT round trip p50 (goal <= 6), alternating in ``ROUNDS`` blocks
* concurrent_ok   100 concurrent connections echoing 64 KiB each, all byte-exact

Bulk figures alternate baseline and proxy ``ROUNDS`` times and report medians.

Run: python bench/service_proxy_bench.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROUNDS = 3
GOALS = {"proxy_ratio": (">=", 0.7), "connect_ratio": ("<=", 6.0)}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- client side (child process)


def client_bulk(ip: str, port: int, size: int) -> dict[str, Any]:
    chunk = b"b" * (256 * 1024)
    with socket.create_connection((ip, port), timeout=60) as sock:
        start = time.perf_counter()
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            sock.sendall(piece)
            sent += len(piece)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while data := sock.recv(64):
            answer += data
        seconds = time.perf_counter() - start
    if int(answer or b"0") != size:
        raise SystemExit(f"sink counted {answer!r} bytes, {size} sent")
    return {"seconds": seconds, "mbps": size / seconds / 1e6}


def client_connect(ip: str, port: int, rounds: int) -> dict[str, Any]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        with socket.create_connection((ip, port), timeout=10) as sock:
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise SystemExit("no echo")
            samples.append(time.perf_counter() - start)
    return {"samples": samples}


def client_concurrent(ip: str, port: int, count: int, size: int) -> dict[str, Any]:
    results: list[bool] = []
    errors: list[str] = []

    def one() -> None:
        payload = os.urandom(size)
        try:
            with socket.create_connection((ip, port), timeout=60) as sock:
                sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)))
                sender.start()
                digest = hashlib.sha256()
                while data := sock.recv(65536):
                    digest.update(data)
                sender.join(60)
                results.append(digest.digest() == hashlib.sha256(payload).digest())
        except OSError as exc:
            errors.append(repr(exc))
            results.append(False)

    start = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    seconds = time.perf_counter() - start
    return {"ok": sum(results), "count": count, "seconds": seconds, "errors": errors[:5]}


def run_client(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--client", *args], capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"client {args} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


# ---------------------------------------------------------------- baselines (this process)


BASELINE_PREFIX = "bench-baseline/v1"
"""Topics of the baseline endpoints: the bridge (a cloud endpoint too) must not answer them."""


async def _sink(cloud: Any) -> None:
    stream = await cloud.accept()
    total = 0
    async for chunk in stream:
        total += len(chunk)
    stream.write(str(total).encode())
    stream.write_eof()


async def _upload(device: Any, size: int) -> float:
    """Seconds to send ``size`` bytes on a new stream and read the sink's count back."""
    chunk = b"b" * (256 * 1024)
    start = time.perf_counter()
    stream = await device.open_stream({"kind": "sink"})
    sent = 0
    while sent < size:
        piece = chunk[: size - sent]
        stream.write(piece)
        sent += len(piece)
        await stream.drain()
    stream.write_eof()
    answer = await asyncio.wait_for(stream.readall(), 120)
    seconds = time.perf_counter() - start
    if int(answer) != size:
        raise AssertionError(f"baseline sink counted {answer!r}")
    return seconds


async def client_stream(host: str, port: int, size: int) -> dict[str, Any]:
    """The device end of the split baseline, in the client process (as the agent is in its own)."""
    from seqstream.mqtt import BrokerConfig, device_endpoint
    from seqstream.topics import TopicLayout

    device = device_endpoint(
        f"bench-{secrets.token_hex(3)}", BrokerConfig(host=host, port=port), layout=TopicLayout(BASELINE_PREFIX)
    )
    async with device:
        await device.session().wait_established(15)
        seconds = await _upload(device, size)
    return {"seconds": seconds, "mbps": size / seconds / 1e6}


async def seqstream_bulk_split(broker: Any, size: int) -> float:
    """One stream, device end in a child process and cloud end here: the processes the proxy crosses."""
    from seqstream.mqtt import cloud_endpoint
    from seqstream.topics import TopicLayout

    async with cloud_endpoint(
        broker, replica=f"bench-{secrets.token_hex(3)}", layout=TopicLayout(BASELINE_PREFIX)
    ) as cloud:
        sink = asyncio.create_task(_sink(cloud))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            "stream",
            broker.host,
            str(broker.port),
            str(size),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
        await asyncio.wait_for(sink, 30)
    if proc.returncode != 0:
        raise RuntimeError("baseline device failed")
    return float(json.loads(out)["mbps"])


async def seqstream_bulk(broker: Any, size: int) -> float:
    """One device -> cloud stream of ``size`` bytes, both ends in this process, answered with the count."""
    from seqstream.mqtt import cloud_endpoint, device_endpoint
    from seqstream.topics import TopicLayout

    layout = TopicLayout(prefix=BASELINE_PREFIX)
    cloud = cloud_endpoint(broker, replica=f"bench-{secrets.token_hex(3)}", layout=layout)
    device = device_endpoint(f"bench-{secrets.token_hex(3)}", broker, layout=layout)
    async with cloud, device:
        await device.session().wait_established(15)
        server = asyncio.create_task(_sink(cloud))
        seconds = await _upload(device, size)
        await server
    return size / seconds / 1e6


async def mqtt_rtt(broker: Any, rounds: int) -> list[float]:
    from seqstream_bench import raw_rtt

    return await raw_rtt(broker, 1, rounds, "5")


# ---------------------------------------------------------------- setup


class ServerPorts:
    def __init__(self, ports: dict[str, int]) -> None:
        self.echo_port = ports["echo"]
        self.sink_port = ports["sink"]


@contextlib.contextmanager
def server_process(host: str) -> Any:
    """The "pods": echo and sink servers in their own process (in this one they would share the bridge's GIL)."""
    code = (
        "import json, sys; from tests.netsvc.harness import TcpServers; "
        f"s = TcpServers({host!r}); "
        "print(json.dumps({'echo': s.echo_port, 'sink': s.sink_port}), flush=True); sys.stdin.read(); s.close()"
    )
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root
    )
    try:
        assert proc.stdout is not None
        yield ServerPorts(json.loads(proc.stdout.readline()))
    finally:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def stack(tmp: Path) -> Any:
    from cloud_bridge.app import BridgeConfig
    from cloud_bridge.nodes import NodeSettings
    from cloud_bridge.services import ServiceProxyConfig
    from seqstream.mqtt import BrokerConfig
    from tests.bridge.conftest import bridge_apiserver_args, make_bridge_pki
    from tests.fleet.harness import BridgeThread
    from tests.netsvc.conftest import Cluster, endpoints, service
    from tests.netsvc.harness import HostAddress, NetnsAgent, wait_until
    from tests.support.brokers import Broker, free_port
    from tests.support.kube import ControlPlane

    with contextlib.ExitStack() as stack:
        log("starting mosquitto, kube-apiserver + etcd ...")
        broker = stack.enter_context(Broker("mosquitto"))
        (tmp / "pki").mkdir()
        pki = make_bridge_pki(tmp / "pki")
        cp = stack.enter_context(ControlPlane(kubeconfig=None, apiserver_args=bridge_apiserver_args(pki)))
        address = stack.enter_context(HostAddress())
        servers = stack.enter_context(server_process(address.ip))
        ns = f"bench-{secrets.token_hex(3)}"
        cp.kubectl("create", "namespace", ns)
        cluster = Cluster(cp, ns)
        cluster.apply(
            service(ns, "sink", 9000),
            endpoints(ns, "sink", address.ip, servers.sink_port),
            service(ns, "echo", 7000),
            endpoints(ns, "echo", address.ip, servers.echo_port),
        )
        log("starting the bridge and an agent with services enabled ...")
        broker_config = BrokerConfig(host=broker.host, port=broker.port)
        bridge = BridgeThread(
            BridgeConfig(
                broker=broker_config,
                nodes=NodeSettings(kubelet_address="127.0.0.1", kubelet_port=free_port()),
                kubelet=None,
                services=ServiceProxyConfig(interval=1.0),
                auto_register=True,
            ),
            str(cp.kubeconfig_path),
        ).start()
        stack.callback(bridge.stop)
        hosts = tmp / "hosts"
        hosts.write_text("127.0.0.1\tlocalhost\n")
        agent = NetnsAgent(
            name=f"bench-{secrets.token_hex(3)}",
            workdir=tmp,
            broker_url=f"mqtt://{broker.host}:{broker.port}",
            interface=f"efb-{secrets.token_hex(3)}",
            hosts_file=hosts,
            log_level="warning",
        ).start()
        stack.callback(agent.stop)
        wait_until(lambda: cluster.dns("echo") in hosts.read_text(), timeout=60, what=f"the table:\n{agent.tail()}")
        yield broker_config, cluster.cluster_ip("sink"), cluster.cluster_ip("echo")


def run(quick: bool) -> dict[str, Any]:
    size = (16 if quick else 64) * 1024 * 1024
    rtt_rounds = 100 if quick else 300
    with tempfile.TemporaryDirectory(prefix="svc-bench-") as tmp, stack(Path(tmp)) as (broker, sink_ip, echo_ip):
        run_client("bulk", sink_ip, "9000", str(1024 * 1024))  # warm-up
        baseline, inprocess, proxy = [], [], []
        for round_ in range(ROUNDS):
            baseline.append(asyncio.run(seqstream_bulk_split(broker, size)))
            inprocess.append(asyncio.run(seqstream_bulk(broker, size)))
            proxy.append(run_client("bulk", sink_ip, "9000", str(size))["mbps"])
            log(
                f"round {round_ + 1}: seqstream {baseline[-1]:.1f} MB/s (both ends in one process"
                f" {inprocess[-1]:.1f}), proxy {proxy[-1]:.1f} MB/s"
            )
        raw: list[float] = []
        connect: list[float] = []
        for _ in range(ROUNDS):  # alternating, so both see the same (noisy) machine
            raw += asyncio.run(mqtt_rtt(broker, rtt_rounds // ROUNDS))
            connect += run_client("connect", echo_ip, "7000", str(rtt_rounds // ROUNDS))["samples"]
        concurrent = run_client("concurrent", echo_ip, "7000", "100", str(64 * 1024))
    base_mbps, proxy_mbps = statistics.median(baseline), statistics.median(proxy)
    raw_p50, connect_p50 = statistics.median(raw), statistics.median(connect)
    return {
        "bulk_bytes": size,
        "seqstream_stream_mbps": round(base_mbps, 1),
        "seqstream_stream_one_process_mbps": round(statistics.median(inprocess), 1),
        "proxy_mbps": round(proxy_mbps, 1),
        "proxy_ratio": round(proxy_mbps / base_mbps, 3),
        "raw_mqtt_rtt_p50_ms": round(raw_p50 * 1e3, 3),
        "connect_p50_ms": round(connect_p50 * 1e3, 3),
        "connect_p90_ms": round(statistics.quantiles(connect, n=10)[-1] * 1e3, 3),
        "connect_ratio": round(connect_p50 / raw_p50, 2),
        "concurrent_connections": concurrent["count"],
        "concurrent_byte_exact": concurrent["ok"],
        "concurrent_ok": concurrent["ok"] == concurrent["count"],
        "concurrent_seconds": round(concurrent["seconds"], 2),
        "concurrent_errors": concurrent["errors"],
        "rounds": {
            "seqstream_mbps": [round(x, 1) for x in baseline],
            "seqstream_one_process_mbps": [round(x, 1) for x in inprocess],
            "proxy_mbps": [round(x, 1) for x in proxy],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--client", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        mode, ip, port, *rest = args.client
        if mode == "bulk":
            out = client_bulk(ip, int(port), int(rest[0]))
        elif mode == "stream":
            out = asyncio.run(client_stream(ip, int(port), int(rest[0])))
        elif mode == "connect":
            out = client_connect(ip, int(port), int(rest[0]))
        else:
            out = client_concurrent(ip, int(port), int(rest[0]), int(rest[1]))
        print(json.dumps(out))
        return 0
    if os.geteuid() != 0:
        log("this benchmark needs root (the agent puts ClusterIPs on an interface)")
        return 2
    result = run(args.quick)
    goals_met = {}
    for key, (op, goal) in GOALS.items():
        value = result[key]
        goals_met[key] = value >= goal if op == ">=" else value <= goal
    result["goals"] = {k: f"{op} {goal}" for k, (op, goal) in GOALS.items()}
    result["goals_met"] = goals_met
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
