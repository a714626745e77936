"""A shell next to a bulk transfer, over a slow device link.

    sudo .venv/bin/python bench/slow_link_bench.py [--json] [--rate 8mbit]

The device runs in its own network namespace behind a veth pair shaped with
a token bucket (``tc qdisc tbf``) with a deep buffer, like a cellular link:
mosquitto on the host, the cloud endpoint on the host, the device endpoint
(an echo + sink server) in the namespace. For the fixed in-flight cap
(``queue_target=0``, the behaviour before it adapted) and for the adaptive
cap, in the same run and alternating:

* idle echo round trip (1 byte) p50 - the baseline;
* echo p50/p90 while the same session uploads to the device;
* upload goodput vs the shaped rate.

Printed ratios: ``echo_during_bulk_ratio`` (p50 during bulk / idle p50) for
both, ``echo_during_bulk_speedup`` (fixed p50 / adaptive p50) and
``goodput_ratio`` (adaptive / fixed, goal >= 0.9: no throughput is given up). Needs root (ip netns, tc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from seqstream import SessionConfig  # noqa: E402
from seqstream.mqtt import BrokerConfig, cloud_endpoint, device_endpoint  # noqa: E402

HOST_IP, DEVICE_IP = "10.251.0.1", "10.251.0.2"
DEVICE = "slowdev"


def log(text: str) -> None:
    print(f"[slow-link] {text}", file=sys.stderr, flush=True)


def sh(*args: str, check: bool = True) -> None:
    subprocess.run(args, check=check, capture_output=True, timeout=30)


class ShapedNamespace:
    """A netns joined to the host by a veth pair, both directions shaped to ``rate``."""

    def __init__(self, rate: str) -> None:
        tag = os.getpid() % 100000
        self.ns, self.host_if, self.dev_if = f"efslow{tag}", f"efs{tag}a", f"efs{tag}b"
        self.rate = rate

    def __enter__(self) -> ShapedNamespace:
        try:
            sh("ip", "netns", "add", self.ns)
            sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.dev_if)
            sh("ip", "link", "set", self.dev_if, "netns", self.ns)
            sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", self.host_if)
            sh("ip", "link", "set", self.host_if, "up")
            sh("ip", "-n", self.ns, "addr", "add", f"{DEVICE_IP}/30", "dev", self.dev_if)
            sh("ip", "-n", self.ns, "link", "set", self.dev_if, "up")
            sh("ip", "-n", self.ns, "link", "set", "lo", "up")
            # A deep buffer (4 s) as on a bloated cellular link: the queue is what we measure.
            tbf = ["tbf", "rate", self.rate, "burst", "32kb", "latency", "4s"]
            sh("tc", "qdisc", "add", "dev", self.host_if, "root", *tbf)
            sh("ip", "netns", "exec", self.ns, "tc", "qdisc", "add", "dev", self.dev_if, "root", *tbf)
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        sh("ip", "link", "del", self.host_if, check=False)
        sh("ip", "netns", "del", self.ns, check=False)


async def serve_device(broker_url: str) -> None:
    """The device side (run inside the namespace): echo and sink streams."""
    from seqstream_bench import Pair

    async with device_endpoint(DEVICE, BrokerConfig.from_url(broker_url)) as device:
        await Pair._serve(device)


def device_process(ns: str, broker_url: str) -> subprocess.Popen[bytes]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, __file__, "--serve-device", broker_url]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)


async def measure(broker: BrokerConfig, config: SessionConfig, name: str, upload: int) -> dict[str, float]:
    async with cloud_endpoint(broker, replica=f"slow-{name}", session_config=config) as cloud:
        await cloud.session(DEVICE).wait_established(30)
        echo = await cloud.open_stream({"kind": "echo"}, peer=DEVICE)

        async def one_echo() -> float:
            start = time.perf_counter()
            echo.write(b"k")
            await asyncio.wait_for(echo.readexactly(1), 30)
            return time.perf_counter() - start

        await one_echo()
        idle = [await one_echo() for _ in range(15)]
        sink = await cloud.open_stream({"kind": "sink"}, peer=DEVICE)
        done = asyncio.Event()

        async def send() -> float:
            start = time.perf_counter()
            chunk = b"b" * 65536
            for offset in range(0, upload, len(chunk)):
                sink.write(chunk[: upload - offset])
                await sink.drain()
            sink.write_eof()
            answer = await asyncio.wait_for(sink.readall(), 300)
            assert int(answer) == upload, answer
            done.set()
            return upload / (time.perf_counter() - start)

        uploader = asyncio.create_task(send())
        busy: list[float] = []
        await asyncio.sleep(1.0)  # let the queue build (it would, with a fixed cap)
        while not done.is_set() and len(busy) < 200:
            busy.append(await one_echo())
            await asyncio.sleep(0.1)
        goodput = await uploader
        echo.write_eof()
    return {
        "idle_echo_p50_ms": statistics.median(idle) * 1000,
        "bulk_echo_p50_ms": statistics.median(busy) * 1000,
        "bulk_echo_p90_ms": statistics.quantiles(busy, n=10)[-1] * 1000 if len(busy) >= 2 else busy[0] * 1000,
        "goodput_kBps": goodput / 1000,
        "echo_samples": len(busy),
    }


async def run(rate: str, upload: int, rounds: int) -> dict[str, object]:
    from tests.support.brokers import Broker, free_port

    port = free_port()
    results: dict[str, list[dict[str, float]]] = {"fixed": [], "adaptive": []}
    configs = {"fixed": SessionConfig(queue_target=0), "adaptive": SessionConfig()}
    with ShapedNamespace(rate) as net, Broker("mosquitto", extra_config=f"listener {port} {HOST_IP}\n"):
        url = f"mqtt://{HOST_IP}:{port}"
        device = device_process(net.ns, url)
        try:
            for r in range(rounds):
                for name, config in configs.items():
                    log(f"round {r + 1}/{rounds}: {name} cap, {upload / 1e6:.1f} MB at {rate}")
                    figures = await measure(BrokerConfig.from_url(url), config, f"{name}{r}", upload)
                    log("  " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
                    results[name].append(figures)
        finally:
            device.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                device.wait(10)
            if device.poll() is None:
                device.kill()
    summary: dict[str, object] = {"rate": rate, "upload_bytes": upload, "rounds": rounds}
    for name, runs in results.items():
        for key in runs[0]:
            summary[f"{name}_{key}"] = round(statistics.median(r[key] for r in runs), 2)
    for name in configs:
        summary[f"{name}_echo_during_bulk_ratio"] = round(
            summary[f"{name}_bulk_echo_p50_ms"] / summary[f"{name}_idle_echo_p50_ms"],  # type: ignore[operator]
            2,
        )
    summary["echo_during_bulk_speedup"] = round(
        summary["fixed_bulk_echo_p50_ms"] / summary["adaptive_bulk_echo_p50_ms"],  # type: ignore[operator]
        1,
    )
    summary["goodput_ratio"] = round(
        summary["adaptive_goodput_kBps"] / summary["fixed_goodput_kBps"],  # type: ignore[operator]
        3,
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rate", default="8mbit", help="tc rate of the device link (default 8mbit)")
    parser.add_argument("--upload", type=int, default=6_000_000, help="bytes per upload (default 6 MB)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve-device", metavar="BROKER_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_device:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_device(args.serve_device))
        return 0
    if os.geteuid() != 0:
        print("slow_link_bench needs root (ip netns, tc)", file=sys.stderr)
        return 2
    summary = asyncio.run(run(args.rate, args.upload, args.rounds))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:40} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
