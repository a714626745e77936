"""kubectl against a device pod, each figure next to its baseline, in one run.

Starts everything itself: kube-apiserver + etcd (tests.support.kube), mosquitto
(tests.support.brokers), the bridge as the fleet tests run it (in a thread of
this process), one real agent (``python -m edge_agent``, docker runtime) and a
pod on it with two containers: ``main`` (busybox httpd serving 64 MiB of random
bytes) and ``ticker`` (prints its wall clock, in microseconds, 20 times a second
once the logs figure starts it).

* exec_ratio          median wall time of ``kubectl exec <pod> -- true`` /
                      ``kubectl get pod <pod>`` (goal <= 2.0); exec_ratio_floor:
                      the same with only the engine's own exec added to the get
* echo_ratio          keystroke echo p50 through ``kubectl exec -it`` on a pty
                      (remote ``cat`` on a TTY echoes) / a raw MQTT round trip
                      p50 on the same broker (goal <= 10)
* portforward_ratio   ``kubectl port-forward`` download throughput (HTTP GET of
                      the 64 MiB, bytes counted) / one seqstream stream's bulk
                      throughput on the same broker (goal >= 0.5);
                      portforward_device_leg_mbps: the same GET over a stream
                      the bridge opens itself (no SPDY, apiserver, kubectl);
                      portforward_without_device_mbps: kubectl -> apiserver ->
                      bridge with a local source; the two bound figures and the
                      CPU each process spends per transfer show where it goes
* logs_follow_ratio   ``kubectl logs -f`` line latency p50 (container clock
                      stamp -> line read here) / ``docker logs -f`` of the same
                      container at the same time (no goal; logs_follow_latency_ms
                      is the figure)

Baseline and candidate alternate in rounds (the machine is noisy). Progress
goes to stderr; everything started is stopped on exit, Ctrl-C and SIGTERM.

Run: PYTHONPATH=. python bench/kubectl_bench.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import docker  # noqa: E402
from seqstream_bench import Pair, raw_rtt  # noqa: E402

import fleetproto as fp  # noqa: E402
from cloud_bridge.app import Bridge  # noqa: E402
from seqstream import SessionConfig  # noqa: E402
from seqstream.mqtt import BrokerConfig, cloud_endpoint, device_endpoint  # noqa: E402
from seqstream.topics import TopicLayout  # noqa: E402
from tests.bridge.conftest import bridge_apiserver_args, make_bridge_pki  # noqa: E402
from tests.fleet.conftest import fleet_bridge_config, start_device_agent, stop_device_agent, wait_until  # noqa: E402
from tests.fleet.harness import BridgeThread  # noqa: E402
from tests.fleet.test_pods import IMAGE, create_pod, pod_json  # noqa: E402
from tests.support.brokers import Broker  # noqa: E402
from tests.support.docker import ensure_dockerd, ensure_test_images  # noqa: E402
from tests.support.kube import ControlPlane, kubectl_path  # noqa: E402
from tests.support.loopthread import LoopThread  # noqa: E402
from tests.support.terminal import PtyProcess  # noqa: E402

GOALS = {"exec_ratio": ("<=", 2.0), "echo_ratio": ("<=", 10.0), "portforward_ratio": (">=", 0.5)}
POD = "bench"
HTTP_PORT = 8080
TICK = re.compile(rb"tick (\d+)\.(\d{6})")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


# ---------------------------------------------------------------- setup


class IsolatedPair(Pair):
    """seqstream_bench's cloud/device pair under its own topic prefix: a second cloud
    endpoint on the bridge's topics would answer the agent's packets too."""

    def __init__(self, broker: BrokerConfig, name: str) -> None:
        super().__init__(broker, name)
        layout = TopicLayout(prefix="bench/kubectl-baseline")
        config = SessionConfig()
        self.cloud = cloud_endpoint(broker, replica=f"bench-{name}", session_config=config, layout=layout)
        self.device = device_endpoint(f"bench-{name}", broker, session_config=config, layout=layout)


class BaselineLoop(LoopThread):
    """One event loop for the MQTT/seqstream baselines, so a seqstream pair is set up once."""

    name = "bench-baselines"

    def __init__(self, broker: BrokerConfig) -> None:
        self.broker = broker
        self.pair: IsolatedPair | None = None
        super().__init__()

    async def setup(self) -> None:
        pair = IsolatedPair(self.broker, f"kubectl-{secrets.token_hex(3)}")
        await pair.__aenter__()
        self.pair = pair

    async def teardown(self) -> None:
        if self.pair is not None:
            await self.pair.__aexit__(None, None, None)


def pod_manifest_containers(http_bytes: int) -> list[dict[str, Any]]:
    serve = (
        f"mkdir -p /www && head -c {http_bytes} /dev/urandom > /www/.big && mv /www/.big /www/big && "
        f"exec httpd -f -p {HTTP_PORT} -h /www"
    )
    # adjtimex is busybox's way to read the clock in microseconds (date has no %N).
    # Idle until the logs figure starts it (exec into ``ticker``: touch /tmp/go), so the
    # other figures do not pay for 40 process spawns a second.
    tick = (
        "while [ ! -e /tmp/go ]; do sleep 1; done; "
        "while :; do adjtimex | awk '/tv_sec/{s=$2} /tv_usec/{u=$2} END{printf \"tick %d.%06d\\n\", s, u}'; "
        "usleep 50000; done"
    )
    return [
        {"name": "main", "image": IMAGE, "imagePullPolicy": "Never", "command": ["sh", "-c", serve]},
        {"name": "ticker", "image": IMAGE, "imagePullPolicy": "Never", "command": ["sh", "-c", tick]},
    ]


@contextlib.contextmanager
def fleet(http_bytes: int) -> Iterator[tuple[ControlPlane, BridgeThread, str, str, BaselineLoop]]:
    """Everything up, a Running pod ``bench`` in a fresh namespace; (cp, bridge, docker_host, namespace, baselines)."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kubectl-bench-")))
        log("starting mosquitto, kube-apiserver + etcd, dockerd ...")
        broker = stack.enter_context(Broker("mosquitto"))
        (tmp / "pki").mkdir()
        pki = make_bridge_pki(tmp / "pki")
        cp = stack.enter_context(ControlPlane(kubeconfig=None, apiserver_args=bridge_apiserver_args(pki)))
        docker_host = ensure_dockerd()
        ensure_test_images(docker_host)
        log("starting the bridge and one agent ...")
        bridge = BridgeThread(fleet_bridge_config(cp, pki, broker), str(cp.kubeconfig_path)).start()
        stack.callback(bridge.stop)
        node, agent = start_device_agent(broker, docker_host, tmp)
        stack.callback(stop_device_agent, docker_host, node, agent)
        wait_until(lambda: cp.kubectl_json("get", "node", node), timeout=60, what=f"node {node}")
        ns = f"bench-{secrets.token_hex(3)}"
        cp.kubectl("create", "namespace", ns)
        create_pod(cp, ns, node, POD, pod_manifest_containers(http_bytes))
        wait_until(lambda: pod_json(cp, ns, POD)["status"].get("phase") == "Running", timeout=90, what="pod Running")
        wait_until(
            lambda: (
                cp.kubectl("exec", "-n", ns, POD, "-c", "main", "--", "test", "-s", "/www/big", check=False).returncode
                == 0
            ),
            timeout=60,
            what="the 64 MiB file",
        )
        baselines = BaselineLoop(BrokerConfig(host=broker.host, port=broker.port)).start()
        stack.callback(baselines.stop)
        yield cp, bridge, docker_host, ns, baselines


@contextlib.contextmanager
def child(cmd: list[str], env: dict[str, str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A helper process that is always stopped (terminate, then kill) on the way out."""
    proc = subprocess.Popen(cmd, env=env, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


# ---------------------------------------------------------------- figures


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_exec(cp: ControlPlane, docker_host: str, ns: str, rounds: int) -> dict[str, Any]:
    status = next(s for s in pod_json(cp, ns, POD)["status"]["containerStatuses"] if s["name"] == "main")
    container_id = status["containerID"].rpartition("://")[2]
    engine = docker.APIClient(base_url=docker_host, timeout=60)

    def exec_true() -> None:
        cp.kubectl("exec", "-n", ns, POD, "-c", "main", "--", "true")

    def get_pod() -> None:
        cp.kubectl("get", "pod", "-n", ns, POD)

    def engine_exec() -> None:
        """The container engine's own exec of ``true`` (create, start, wait): the floor under kubectl exec."""
        exec_id = engine.exec_create(container_id, ["true"])["Id"]
        engine.exec_start(exec_id)
        if engine.exec_inspect(exec_id)["ExitCode"] != 0:
            raise RuntimeError("docker exec of true failed")

    try:
        exec_true()  # warm-up (discovery cache, first stream)
        get_pod()
        engine_exec()
        execs, gets, engines = [], [], []
        for i in range(rounds):
            log(f"exec round {i + 1}/{rounds}")
            gets.append(timed(get_pod))
            execs.append(timed(exec_true))
            engines.append(timed(engine_exec))
    finally:
        engine.close()
    return {
        "exec_ms": round(p50(execs) * 1000, 1),
        "get_pod_ms": round(p50(gets) * 1000, 1),
        "exec_ratio": round(p50(execs) / p50(gets), 3),
        "docker_exec_ms": round(p50(engines) * 1000, 1),
        # What apiserver, bridge, MQTT and agent add on top of kubectl's own request and the engine's exec.
        "exec_overhead_ms": round((p50(execs) - p50(gets) - p50(engines)) * 1000, 1),
        # The ratio if apiserver, bridge, MQTT and agent cost nothing: the engine's exec alone.
        "exec_ratio_floor": round((p50(gets) + p50(engines)) / p50(gets), 3),
    }


def bench_echo(cp: ControlPlane, ns: str, baselines: BaselineLoop, rounds: int, per_round: int) -> dict[str, Any]:
    cmd = [kubectl_path(), f"--kubeconfig={cp.kubeconfig_path}", "exec", "-it", "-n", ns, POD, "-c", "main", "--"]
    cmd += ["sh", "-c", "echo READY; exec cat"]
    tty: list[float] = []
    raw: list[float] = []
    with PtyProcess(cmd, env=cp.kubectl_env()) as term:
        term.expect(b"READY\r\n", 30)  # kubectl has put the local pty in raw mode before the session starts
        letters = b"abcdefghijklmnopqrstuvwxyz"
        for i in range(rounds):
            log(f"echo round {i + 1}/{rounds}: {per_round} keystrokes via kubectl exec -it, then raw MQTT")
            for j in range(per_round):
                key = letters[j % len(letters) : j % len(letters) + 1]
                start = time.perf_counter()
                term.write(key)
                term.expect(key, 10)
                tty.append(time.perf_counter() - start)
            raw += baselines.call(raw_rtt, baselines.broker, 16, per_round, "5", timeout=60)
        term.write(b"\r\x04")  # end the line, then EOF for cat (^D on an empty line)
        term.read_until_eof(20)
    return {
        "echo_p50_ms": round(p50(tty) * 1000, 2),
        "echo_p90_ms": round(sorted(tty)[int(len(tty) * 0.9)] * 1000, 2),
        "mqtt_rtt_p50_ms": round(p50(raw) * 1000, 3),
        "echo_ratio": round(p50(tty) / p50(raw), 2),
    }


def http_get_bytes(port: int, path: str) -> int:
    """Body bytes of a GET by curl, a process of its own as a user's client would be
    (a reader thread in this process would fight the bridge's thread for the GIL)."""
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}", f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"port-forwarded GET failed: {out.stderr.strip()[:300]}")
    return int(out.stdout)


async def device_leg_get(bridge: Bridge, namespace: str, size: int) -> float:
    """MB/s of the same GET over a port-forward stream the bridge opens itself: the
    device leg (httpd -> agent -> MQTT -> bridge) without SPDY, kube-apiserver and kubectl."""
    entry = bridge.pods.lookup(namespace, POD)
    assert entry is not None, "the bridge does not know the pod"
    ref = fp.PodRef(namespace=namespace, pod=POD, uid=entry.uid)
    stream = await bridge.hub.endpoint.open_stream(
        fp.PortForwardOpen(port=HTTP_PORT, ref=ref).to_metadata(), peer=entry.device
    )
    start = time.perf_counter()
    stream.write(b"GET /big HTTP/1.0\r\nHost: bench\r\n\r\n")
    total = 0
    async for chunk in stream:
        total += len(chunk)
    elapsed = time.perf_counter() - start
    if total < size:
        raise RuntimeError(f"the device leg delivered {total} bytes, expected {size} and a header")
    return size / elapsed / 1e6


CEILING_PORT = 7999
"""A pod port the bridge serves from a local TCP source instead of the device (no MQTT, no agent)."""


@contextlib.contextmanager
def local_http_source(size: int) -> Iterator[int]:
    """A TCP server answering every connection with an HTTP/1.0 response of ``size`` random bytes."""
    body = os.urandom(1 << 20)
    head = f"HTTP/1.0 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)  # the request
                conn.sendall(head)
                for offset in range(0, size, len(body)):
                    conn.sendall(body[: size - offset])

    thread = threading.Thread(target=serve, name="ceiling-source", daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


def serve_port_locally(provider: Any, port: int, target: int) -> None:
    """Make the bridge answer port-forwards to ``port`` from 127.0.0.1:``target``: what
    kubectl + kube-apiserver + the bridge's SPDY can carry with the device out of the way."""
    original = provider.port_forward

    async def port_forward(namespace: str, pod: str, pod_port: int, conn: Any) -> None:
        if pod_port != port:
            return await original(namespace, pod, pod_port, conn)
        reader, writer = await asyncio.open_connection("127.0.0.1", target, limit=1 << 20)

        async def upstream() -> None:
            while data := await conn.read(65536):
                writer.write(data)

        async def downstream() -> None:
            while data := await reader.read(1 << 18):
                await conn.write(data)
            await conn.close_write()

        up = asyncio.create_task(upstream())
        try:
            await downstream()
        finally:
            up.cancel()
            writer.close()

    provider.port_forward = port_forward


def cpu_by_process() -> dict[str, int]:
    """CPU time (ns, all threads) of the processes on the path, by role; this process is "bridge"."""
    roles: dict[str, int] = {}
    me = str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            tasks = os.listdir(f"/proc/{pid}/task")
            ns = sum(int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0]) for t in tasks)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if pid == me:
            role = "bridge"
        elif b"edge_agent" in cmdline:
            role = "agent"
        elif comm in ("kubectl", "kube-apiserver", "mosquitto"):
            role = comm
        else:
            continue
        roles[role] = roles.get(role, 0) + ns
    return roles


class CpuMeter:
    """Adds up, per role, the CPU spent while ``measure`` runs."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self.runs = 0

    def measure(self, fn: Callable[[], float]) -> float:
        before = cpu_by_process()
        value = fn()
        for role, ns in cpu_by_process().items():
            self.ns[role] = self.ns.get(role, 0) + max(ns - before.get(role, 0), 0)
        self.runs += 1
        return value

    def per_run_ms(self) -> dict[str, float]:
        return {role: round(ns / 1e6 / self.runs, 1) for role, ns in sorted(self.ns.items(), key=lambda kv: -kv[1])}


def bench_port_forward(
    cp: ControlPlane, bridge: BridgeThread, ns: str, baselines: BaselineLoop, rounds: int, size: int
) -> dict[str, Any]:
    cmd = [
        kubectl_path(),
        f"--kubeconfig={cp.kubeconfig_path}",
        "port-forward",
        "-n",
        ns,
        f"pod/{POD}",
        f":{HTTP_PORT}",
        f":{CEILING_PORT}",
    ]
    pf: list[float] = []
    seq: list[float] = []
    leg: list[float] = []
    ceiling: list[float] = []
    pf_cpu, seq_cpu = CpuMeter(), CpuMeter()
    assert bridge.bridge is not None
    with (
        local_http_source(size) as source,
        child(cmd, cp.kubectl_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc,
    ):
        bridge.call(serve_port_locally, bridge.bridge.provider, CEILING_PORT, source)
        assert proc.stdout is not None
        local: dict[int, int] = {}
        while len(local) < 2:
            line = proc.stdout.readline().decode()
            if line.startswith("Forwarding from [::1]"):
                continue
            match = re.search(r"127\.0\.0\.1:(\d+) -> (\d+)", line)
            if not match:
                raise RuntimeError(f"kubectl port-forward said: {line!r}")
            local[int(match.group(2))] = int(match.group(1))
        assert baselines.pair is not None

        def get(pod_port: int) -> float:
            start = time.perf_counter()
            got = http_get_bytes(local[pod_port], "/big")
            elapsed = time.perf_counter() - start
            if got != size:
                raise RuntimeError(f"port-forward to {pod_port} delivered {got} bytes, expected {size}")
            return size / elapsed / 1e6

        get(HTTP_PORT)  # warm-up
        for i in range(rounds):
            log(
                f"port-forward round {i + 1}/{rounds}: {size >> 20} MiB via kubectl port-forward, seqstream, "
                "device leg, kubectl without the device"
            )
            pf.append(pf_cpu.measure(lambda: get(HTTP_PORT)))
            seq.append(seq_cpu.measure(lambda: baselines.call(baselines.pair.bulk, size, timeout=300)))
            leg.append(bridge.call(device_leg_get, bridge.bridge, ns, size, timeout=300))
            ceiling.append(get(CEILING_PORT))
    ratios = [p / s for p, s in zip(pf, seq, strict=True)]
    return {
        "portforward_mbps": round(p50(pf), 1),
        "seqstream_mbps": round(p50(seq), 1),
        "portforward_rounds_mbps": [round(x, 1) for x in pf],
        "seqstream_rounds_mbps": [round(x, 1) for x in seq],
        "portforward_ratio": round(p50(ratios), 3),
        "portforward_device_leg_mbps": round(p50(leg), 1),
        # kubectl -> kube-apiserver -> bridge (SPDY) with a local source instead of the device:
        # the most the chain above the bridge carries here, whatever MQTT and the agent do.
        "portforward_without_device_mbps": round(p50(ceiling), 1),
        # Each leg alone is faster than both together: on this machine they share two
        # cores, so the chain runs near 1 / (1/leg + 1/rest); with cores to spare it
        # would approach the slower leg. Both, over the baseline:
        "portforward_ratio_shared_cpu_bound": round(1 / (1 / p50(leg) + 1 / p50(ceiling)) / p50(seq), 3),
        "portforward_ratio_slower_leg_bound": round(min(p50(leg), p50(ceiling)) / p50(seq), 3),
        # CPU per transfer (ms, all threads) of each process on the path; "bridge" is
        # this process (the bridge runs in a thread of it).
        "portforward_cpu_ms": pf_cpu.per_run_ms(),
        "seqstream_cpu_ms": seq_cpu.per_run_ms(),
    }


def follow_latencies(proc: subprocess.Popen[bytes], since: float, out: list[float], stop: threading.Event) -> None:
    """Latency of every ticker line stamped after ``since``: now - the stamp inside the line."""
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.time()
        match = TICK.search(line)
        if match:
            stamp = int(match.group(1)) + int(match.group(2)) / 1e6
            if stamp >= since:
                out.append(now - stamp)
        if stop.is_set():
            return


def bench_logs(cp: ControlPlane, docker_host: str, ns: str, seconds: float) -> dict[str, Any]:
    status = next(s for s in pod_json(cp, ns, POD)["status"]["containerStatuses"] if s["name"] == "ticker")
    container_id = status["containerID"].rpartition("://")[2]
    kubectl = [kubectl_path(), f"--kubeconfig={cp.kubeconfig_path}", "logs", "-f", "--tail=1", "-n", ns, POD]
    kubectl += ["-c", "ticker"]
    docker = ["docker", "logs", "-f", "--tail", "1", container_id]
    cp.kubectl("exec", "-n", ns, POD, "-c", "ticker", "--", "touch", "/tmp/go")
    kube_lat: list[float] = []
    docker_lat: list[float] = []
    stop = threading.Event()
    log(f"logs -f for {seconds:.0f}s: kubectl and docker (baseline) follow the same container at once")
    with (
        child(kubectl, cp.kubectl_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as kproc,
        child(
            docker, {**os.environ, "DOCKER_HOST": docker_host}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as dproc,
    ):
        since = time.time() + 1.0  # skip the backlog and the first second of each stream
        readers = [
            threading.Thread(target=follow_latencies, args=(kproc, since, kube_lat, stop), daemon=True),
            threading.Thread(target=follow_latencies, args=(dproc, since, docker_lat, stop), daemon=True),
        ]
        for reader in readers:
            reader.start()
        time.sleep(seconds + 1.0)
        stop.set()
    for reader in readers:
        reader.join(10)
    if len(kube_lat) < 10 or len(docker_lat) < 10:
        raise RuntimeError(f"too few log lines: kubectl {len(kube_lat)}, docker {len(docker_lat)}")
    return {
        "logs_lines": len(kube_lat),
        "logs_follow_latency_ms": round(p50(kube_lat) * 1000, 2),
        "logs_follow_p90_ms": round(sorted(kube_lat)[int(len(kube_lat) * 0.9)] * 1000, 2),
        "docker_logs_follow_latency_ms": round(p50(docker_lat) * 1000, 2),
        "logs_follow_ratio": round(p50(kube_lat) / p50(docker_lat), 2),
    }


# ---------------------------------------------------------------- main


def run(quick: bool) -> dict[str, Any]:
    size = (16 if quick else 64) << 20
    results: dict[str, Any] = {}
    started = time.monotonic()
    with fleet(size) as (cp, bridge, docker_host, ns, baselines):
        results["setup_seconds"] = round(time.monotonic() - started, 1)
        results.update(bench_exec(cp, docker_host, ns, rounds=5 if quick else 20))
        results.update(bench_echo(cp, ns, baselines, rounds=5, per_round=8 if quick else 20))
        results.update(bench_port_forward(cp, bridge, ns, baselines, rounds=2 if quick else 5, size=size))
        results.update(bench_logs(cp, docker_host, ns, seconds=4 if quick else 8))
        log("stopping everything ...")
    results["goals_met"] = {
        name: (results[name] >= goal if op == ">=" else results[name] <= goal) for name, (op, goal) in GOALS.items()
    }
    results["total_seconds"] = round(time.monotonic() - started, 1)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 16 MiB transfers (smoke runs)")
    args = parser.parse_args()

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwind through every cleanup, as Ctrl-C does

    signal.signal(signal.SIGTERM, on_term)
    try:
        results = run(args.quick)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        lines = [
            ("exec", f"{results['exec_ms']} ms", f"get pod {results['get_pod_ms']} ms", "exec_ratio"),
            (
                "tty echo p50",
                f"{results['echo_p50_ms']} ms",
                f"raw MQTT rtt {results['mqtt_rtt_p50_ms']} ms",
                "echo_ratio",
            ),
            (
                "port-forward",
                f"{results['portforward_mbps']} MB/s",
                f"seqstream {results['seqstream_mbps']} MB/s",
                "portforward_ratio",
            ),
            (
                "logs -f p50",
                f"{results['logs_follow_latency_ms']} ms",
                f"docker logs -f {results['docker_logs_follow_latency_ms']} ms",
                "logs_follow_ratio",
            ),
        ]
        for what, value, baseline, ratio in lines:
            goal = GOALS.get(ratio)
            verdict = f"goal {goal[0]} {goal[1]}: {'met' if results['goals_met'][ratio] else 'MISSED'}" if goal else ""
            print(f"{what:14} {value:>12}   baseline {baseline:34} {ratio} {results[ratio]:<7} {verdict}")
        print(f"port-forward device leg alone (agent -> MQTT -> bridge): {results['portforward_device_leg_mbps']} MB/s")
        ceiling = results["portforward_without_device_mbps"]
        print(f"port-forward without the device (kubectl -> apiserver -> bridge): {ceiling} MB/s")
        print(f"CPU ms per port-forward transfer: {results['portforward_cpu_ms']}")
        print(f"CPU ms per seqstream transfer:    {results['seqstream_cpu_ms']}")
        print(
            f"exec_ratio_floor (engine exec only) {results['exec_ratio_floor']}, portforward_ratio bounds: "
            f"shared cpu {results['portforward_ratio_shared_cpu_bound']}, "
            f"slower leg {results['portforward_ratio_slower_leg_bound']}"
        )
        print(f"setup {results['setup_seconds']} s, total {results['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
