"""seqstream against raw aiomqtt on the same mosquitto, in one run.

Each figure is measured next to its baseline and printed as a ratio, since
these machines are noisy:

* throughput_ratio     one stream's bulk goodput / raw QoS 0 publishing of the
                       same payload size (goal >= 0.8)
* rtt_ratio            64-byte echo p50 over a stream / raw MQTT echo p50 (goal <= 1.5)
* lossy_goodput_ratio  goodput with 5% of packets dropped in both directions /
                       lossless goodput (goal >= 0.5)
* fanout_ratio         aggregate goodput of 100 concurrent streams / one stream
* echo_during_bulk_*   64-byte echo on one stream while another streams bulk data
                       (head-of-line delay; bounded by SessionConfig.max_in_flight)

Run: python bench/seqstream_bench.py [--json] [--broker mqtt://host:port] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqstream import SessionConfig
from seqstream.mqtt import BrokerConfig, Endpoint, cloud_endpoint, device_endpoint
from seqstream.mqtt.link import Message
from tests.support.brokers import Broker

ROUNDS = 3
GOALS = {"throughput_ratio": (">=", 0.8), "rtt_ratio": ("<=", 1.5), "lossy_goodput_ratio": (">=", 0.5)}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- raw MQTT baselines


def raw_client(broker: BrokerConfig, name: str, protocol: str) -> aiomqtt.Client:
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    return aiomqtt.Client(broker.host, broker.port, identifier=f"raw-{name}-{random.random()}", protocol=version)


async def raw_throughput(broker: BrokerConfig, payload_size: int, total: int, protocol: str) -> float:
    """MB/s a subscriber receives while one publisher sends QoS 0 back to back."""
    count = total // payload_size
    payload = b"r" * payload_size
    async with raw_client(broker, "sub", protocol) as sub, raw_client(broker, "pub", protocol) as pub:
        await sub.subscribe("bench/raw/bulk", qos=0)
        received = 0
        last = time.perf_counter()

        async def receive() -> None:
            nonlocal received, last
            async for message in sub.messages:
                received += len(message.payload)
                last = time.perf_counter()
                if received >= count * payload_size:
                    return

        receiver = asyncio.create_task(receive())
        start = time.perf_counter()
        for _ in range(count):
            await pub.publish("bench/raw/bulk", payload, qos=0)
        try:
            await asyncio.wait_for(receiver, 30)
        except TimeoutError:
            log(f"raw baseline: broker dropped {count * payload_size - received} bytes")
        return received / (last - start) / 1e6


async def raw_rtt(broker: BrokerConfig, size: int, rounds: int, protocol: str) -> list[float]:
    """Round trips of a ``size``-byte message through the broker and an echo client."""
    async with raw_client(broker, "echo", protocol) as echo, raw_client(broker, "ping", protocol) as ping:
        await echo.subscribe("bench/raw/ping", qos=0)
        await ping.subscribe("bench/raw/pong", qos=0)

        async def echoer() -> None:
            async for message in echo.messages:
                await echo.publish("bench/raw/pong", message.payload, qos=0)

        task = asyncio.create_task(echoer())
        samples = []
        messages = ping.messages
        payload = b"p" * size
        for _ in range(rounds):
            start = time.perf_counter()
            await ping.publish("bench/raw/ping", payload, qos=0)
            await asyncio.wait_for(anext(messages), 5)
            samples.append(time.perf_counter() - start)
        task.cancel()
        return samples


# ---------------------------------------------------------------- seqstream


class Pair:
    """A cloud and a device endpoint on the same broker, with an echo/sink server."""

    def __init__(self, broker: BrokerConfig, name: str, loss: float = 0.0, config: SessionConfig | None = None) -> None:
        config = config or SessionConfig()
        self.cloud = cloud_endpoint(broker, replica=f"bench-{name}", session_config=config)
        self.device = device_endpoint(f"bench-{name}", broker, session_config=config)
        self.loss = loss
        self.rng = random.Random(42)
        self._server: asyncio.Task[None] | None = None

    def _lossy(self, message: Message) -> bool:
        return message.retain or self.rng.random() >= self.loss

    async def __aenter__(self) -> Pair:
        await self.cloud.start()
        await self.device.start()
        if self.loss:
            self.cloud.link.outbound_filter = self._lossy
            self.device.link.outbound_filter = self._lossy
        await self.device.session().wait_established(15)
        self._server = asyncio.create_task(self._serve(self.device))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server:
            self._server.cancel()
        await self.device.close()
        await self.cloud.close()

    @staticmethod
    async def _serve(endpoint: Endpoint) -> None:
        async def handle(stream) -> None:
            if stream.metadata.get("kind") == "echo":
                async for chunk in stream:
                    stream.write(chunk)
                    await stream.drain()
                stream.write_eof()
            else:  # sink: count and acknowledge with the byte count
                total = 0
                async for chunk in stream:
                    total += len(chunk)
                stream.write(str(total).encode())
                stream.write_eof()

        tasks = set()
        while True:
            stream = await endpoint.accept()
            task = asyncio.create_task(handle(stream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def bulk(self, total: int, streams: int = 1, chunk: int = 64 * 1024) -> float:
        """Goodput in MB/s of ``streams`` concurrent uploads of ``total`` bytes together."""
        per_stream = total // streams
        data = b"s" * chunk

        async def upload() -> None:
            stream = await self.cloud.open_stream({"kind": "sink"}, peer=self.device.name)
            sent = 0
            while sent < per_stream:
                piece = data[: per_stream - sent]
                stream.write(piece)
                sent += len(piece)
                await stream.drain()
            stream.write_eof()
            answer = await asyncio.wait_for(stream.readall(), 120)
            if int(answer) != per_stream:
                raise AssertionError(f"sink got {answer!r} bytes, sent {per_stream}")

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(upload() for _ in range(streams))), 300)
        return per_stream * streams / (time.perf_counter() - start) / 1e6

    async def rtt(self, size: int, rounds: int) -> list[float]:
        stream = await self.cloud.open_stream({"kind": "echo"}, peer=self.device.name)
        payload = b"e" * size
        stream.write(payload)
        await stream.readexactly(size)  # warm-up: stream open on both sides
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            stream.write(payload)
            await asyncio.wait_for(stream.readexactly(size), 5)
            samples.append(time.perf_counter() - start)
        stream.write_eof()
        return samples


# ---------------------------------------------------------------- main


def broker_speaks(protocol: str) -> bool:
    """Only mosquitto (MQTT 5) also offers the other version for comparison."""
    return protocol == "5"


async def run(broker: BrokerConfig, quick: bool) -> dict[str, object]:
    total = (16 if quick else 64) * 1024 * 1024
    rounds = 200 if quick else 1000
    # The size of seqstream's bulk packets: its max_packet, cut to what the broker's
    # maximum packet size (262144 in broker-config) leaves after header and topic.
    payload_size = min(SessionConfig().max_packet, 262144 - 512)
    results: dict[str, object] = {"payload_size": payload_size, "bulk_bytes": total}

    # Baseline and candidate alternate, ROUNDS times, and each figure is the
    # median of its rounds: a noisy neighbour then hits both alike.
    raw_runs: list[float] = []
    seq_runs: list[float] = []
    async with Pair(broker, "bulk") as pair:
        protocol = pair.cloud.link.info.protocol if pair.cloud.link.info else "3.1.1"
        await pair.bulk(total // 8)  # warm-up
        for i in range(ROUNDS):
            log(f"throughput round {i + 1}/{ROUNDS}: raw QoS 0 (MQTT {protocol}), then seqstream ...")
            raw_runs.append(await raw_throughput(broker, payload_size, total, protocol))
            seq_runs.append(await pair.bulk(total))
        log("fan-out over 100 streams ...")
        fan_mbps = await pair.bulk(total, streams=100)
        log("echo round trips, alternating seqstream and raw ...")
        seq_rtt: list[float] = []
        raw_samples: list[float] = []
        for _ in range(ROUNDS):
            seq_rtt += await pair.rtt(64, rounds // ROUNDS)
            raw_samples += await raw_rtt(broker, 64, rounds // ROUNDS, protocol)
        log("echo while another stream runs a bulk transfer ...")
        bulk = asyncio.create_task(pair.bulk(total * 2))
        await asyncio.sleep(0.2)
        loaded_rtt = await pair.rtt(64, 100)
        await bulk
    raw_mbps = statistics.median(raw_runs)
    seq_mbps = statistics.median(seq_runs)
    other = "3.1.1" if protocol == "5" else "5"
    raw_other_mbps = await raw_throughput(broker, payload_size, total, other) if broker_speaks(protocol) else None
    log("seqstream with 5% loss ...")
    async with Pair(broker, "lossy", loss=0.05) as lossy:
        lossy_mbps = await lossy.bulk(total)
    results["mqtt_protocol"] = protocol
    results["throughput_rounds"] = {
        "raw_mbps": [round(x, 1) for x in raw_runs],
        "seqstream_mbps": [round(x, 1) for x in seq_runs],
    }
    results[f"raw_throughput_mbps_mqtt{other}"] = round(raw_other_mbps, 1) if raw_other_mbps else None

    raw_p50 = statistics.median(raw_samples)
    seq_p50 = statistics.median(seq_rtt)
    results.update(
        raw_throughput_mbps=round(raw_mbps, 1),
        seqstream_throughput_mbps=round(seq_mbps, 1),
        throughput_ratio=round(statistics.median(s / r for s, r in zip(seq_runs, raw_runs, strict=True)), 3),
        raw_rtt_p50_ms=round(raw_p50 * 1000, 3),
        seqstream_rtt_p50_ms=round(seq_p50 * 1000, 3),
        seqstream_rtt_p99_ms=round(sorted(seq_rtt)[int(len(seq_rtt) * 0.99)] * 1000, 3),
        rtt_ratio=round(seq_p50 / raw_p50, 3),
        echo_during_bulk_p50_ms=round(statistics.median(loaded_rtt) * 1000, 2),
        echo_during_bulk_p90_ms=round(sorted(loaded_rtt)[89] * 1000, 2),
        lossy_goodput_mbps=round(lossy_mbps, 1),
        lossy_goodput_ratio=round(lossy_mbps / seq_mbps, 3),
        fanout_streams=100,
        fanout_throughput_mbps=round(fan_mbps, 1),
        fanout_ratio=round(fan_mbps / seq_mbps, 3),
    )
    results["goals_met"] = {
        name: (results[name] >= goal if op == ">=" else results[name] <= goal)  # type: ignore[operator]
        for name, (op, goal) in GOALS.items()
    }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--broker", help="use this broker (mqtt://host:port) instead of starting mosquitto")
    parser.add_argument("--quick", action="store_true", help="smaller transfers (for CI smoke runs)")
    args = parser.parse_args()
    if args.broker:
        results = asyncio.run(run(BrokerConfig.from_url(args.broker), args.quick))
    else:
        with Broker("mosquitto") as broker:
            results = asyncio.run(run(BrokerConfig(host=broker.host, port=broker.port), args.quick))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
