"""Edge agent footprint on the docker runtime, with its baseline in the same run.

* rss_idle_0_pods_mb / rss_idle_10_pods_mb  agent RSS (VmRSS of the real
  ``python -m edge_agent`` process) after settling, goal <= 35 MB
  (KubeEdge's edgecore needs about 70 MB)
* cpu_idle_percent_*                         agent CPU over an idle window
* pod_start_ratio                            desired pod received -> container
  running (as the agent reports it) vs ``docker run -d`` of the same image until
  docker says running, medians over several pods, goal <= 1.5

Starts its own mosquitto and private dockerd (hack/dockerd.sh) and plays the
cloud with a seqstream endpoint.

Run: python bench/agent_footprint.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fleetproto as fp
from edge_agent.config import AgentConfig, BrokerSettings, RuntimeSettings
from tests.agent_core.agents import AgentProcess
from tests.agent_core.cloud import fake_cloud
from tests.support.brokers import Broker
from tests.support.docker import BUSYBOX_IMAGE, ensure_dockerd, ensure_test_images

GOALS = {"rss_idle_10_pods_mb": ("<=", 35.0), "pod_start_ratio": ("<=", 1.5)}
TICKS = os.sysconf("SC_CLK_TCK")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def rss_split(pid: int) -> dict[str, float]:
    """Heap and stacks (anon) vs mapped files (interpreter, .so libraries): where the RSS sits."""
    return {"anon_mb": round(rss_mb(pid, "RssAnon"), 1), "file_mb": round(rss_mb(pid, "RssFile"), 1)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def idle_cpu_percent(pid: int, seconds: float) -> float:
    start = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - start) / seconds * 100


def pod(uid: str) -> fp.DesiredPod:
    return fp.DesiredPod(
        uid=uid,
        namespace="bench",
        name=f"pod-{uid}",
        containers=(fp.Container(name="main", image=BUSYBOX_IMAGE, command=("sleep", "3600")),),
        termination_grace_seconds=1,
    )


def running(report: fp.PodStatusReport) -> bool:
    return report.phase is fp.PodPhase.RUNNING and all(c.ready for c in report.container_statuses)


def docker_run_seconds(docker_host: str) -> float:
    """``docker run -d`` until docker reports the container running."""
    env = dict(os.environ, DOCKER_HOST=docker_host)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    subprocess.run(
        ["docker", "run", "-d", "--name", name, BUSYBOX_IMAGE, "sleep", "3600"],
        env=env,
        check=True,
        capture_output=True,
    )
    while True:
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", name], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        if state == "true":
            elapsed = time.perf_counter() - start
            break
    subprocess.run(["docker", "rm", "-f", name], env=env, check=True, capture_output=True)
    return elapsed


async def run(quick: bool) -> dict[str, object]:
    docker_host = ensure_dockerd()
    ensure_test_images(docker_host)
    settle = 5.0 if quick else 15.0
    idle_window = 5.0 if quick else 20.0
    starts = 3 if quick else 5
    results: dict[str, object] = {}
    node = f"bench-{uuid.uuid4().hex[:6]}"
    with Broker("mosquitto") as broker, tempfile.TemporaryDirectory() as tmp:
        config = AgentConfig(
            name=node,
            data_dir=Path(tmp) / "agent",
            broker=BrokerSettings(urls=(f"mqtt://{broker.host}:{broker.port}",)),
            runtime=RuntimeSettings(kind="docker", socket=docker_host),
        )
        agent = AgentProcess(config, Path(tmp))
        async with fake_cloud(broker) as cloud:
            agent.start()
            try:
                assert agent.proc is not None
                pid = agent.proc.pid
                control = await cloud.control(timeout=60)
                await control.wait_for(lambda m: isinstance(m, fp.NodeHello), what="NodeHello", timeout=60)
                log(f"agent up (pid {pid}); settling {settle:.0f}s with no pods ...")
                await asyncio.sleep(settle)
                results["rss_idle_0_pods_mb"] = round(rss_mb(pid), 1)
                results["rss_idle_0_pods_split"] = rss_split(pid)
                results["cpu_idle_percent_0_pods"] = round(await idle_cpu_percent(pid, idle_window), 2)

                log("pod start: agent vs docker run, alternating ...")
                agent_times: list[float] = []
                docker_times: list[float] = []
                for i in range(starts):
                    p = pod(f"start{i}")
                    t0 = time.perf_counter()
                    control.send(fp.PodUpsert(pod=p, generation=i + 1))
                    await control.status(p.uid, running, what=f"{p.uid} Running", timeout=120)
                    agent_times.append(time.perf_counter() - t0)
                    docker_times.append(await asyncio.to_thread(docker_run_seconds, docker_host))
                generation = starts
                for i in range(starts):
                    generation += 1
                    control.send(
                        fp.PodDelete(namespace="bench", name=f"pod-start{i}", uid=f"start{i}", grace_seconds=1)
                    )

                log("starting 10 pods ...")
                for i in range(10):
                    generation += 1
                    control.send(fp.PodUpsert(pod=pod(f"idle{i}"), generation=generation))
                for i in range(10):
                    await control.status(f"idle{i}", running, what=f"idle{i} Running", timeout=120)
                log(f"settling {settle:.0f}s with 10 pods ...")
                await asyncio.sleep(settle)
                results["rss_idle_10_pods_mb"] = round(rss_mb(pid), 1)
                results["rss_idle_10_pods_split"] = rss_split(pid)
                results["cpu_idle_percent_10_pods"] = round(await idle_cpu_percent(pid, idle_window), 2)
                for i in range(10):
                    control.send(fp.PodDelete(namespace="bench", name=f"pod-idle{i}", uid=f"idle{i}", grace_seconds=1))
                await asyncio.sleep(3)
            finally:
                agent.stop()
                subprocess.run(
                    [
                        "docker",
                        "rm",
                        "-f",
                        *subprocess.run(
                            ["docker", "ps", "-aq", "--filter", f"label=org.edgefleet.node={node}"],
                            env=dict(os.environ, DOCKER_HOST=docker_host),
                            capture_output=True,
                            text=True,
                        ).stdout.split(),
                    ],
                    env=dict(os.environ, DOCKER_HOST=docker_host),
                    capture_output=True,
                )
    agent_start = statistics.median(agent_times)
    docker_start = statistics.median(docker_times)
    results.update(
        pod_start_agent_s=round(agent_start, 3),
        pod_start_docker_run_s=round(docker_start, 3),
        pod_start_ratio=round(agent_start / docker_start, 3),
        pod_start_samples={
            "agent": [round(x, 3) for x in agent_times],
            "docker_run": [round(x, 3) for x in docker_times],
        },
    )
    results["goals_met"] = {
        name: (results[name] <= goal if op == "<=" else results[name] >= goal)  # type: ignore[operator]
        for name, (op, goal) in GOALS.items()
    }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(run(args.quick))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
