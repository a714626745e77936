"""Run the edge agent for tests: in-process (fast, inspectable) or as a real ``python -m edge_agent``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, BrokerSettings, FeatureSettings, PodSettings, RuntimeSettings
from tests.agent_core.cloud import FAST
from tests.support.brokers import Broker

REPO = Path(__file__).resolve().parents[2]


def agent_config(
    broker: Broker, node: str, data_dir: Path, docker_host: str, *, host_exec: bool = False, host_pf: bool = False
) -> AgentConfig:
    return AgentConfig(
        name=node,
        data_dir=data_dir,
        heartbeat_seconds=0.5,
        broker=BrokerSettings(urls=(f"mqtt://{broker.host}:{broker.port}",), reconnect_max_seconds=0.5),
        runtime=RuntimeSettings(kind="docker", socket=docker_host),
        features=FeatureSettings(host_exec=host_exec, host_port_forward=host_pf),
        pods=PodSettings(
            backoff_initial_seconds=0.2, backoff_max_seconds=1.0, poll_seconds=0.3, default_grace_seconds=1
        ),
    )


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig) -> AsyncIterator[Agent]:
    agent = Agent(config, session_config=FAST)
    task = asyncio.create_task(agent.run(), name=f"agent-{config.name}")
    try:
        async with asyncio.timeout(30):
            await agent.ready.wait()
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        leftover = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("pod-worker", "stream-"))]
        assert not leftover, f"the agent left tasks behind: {leftover}"


def config_toml(config: AgentConfig) -> str:
    pods = config.pods
    return f"""
[device]
name = "{config.name}"
data_dir = "{config.data_dir}"
heartbeat_seconds = {config.heartbeat_seconds}
log_level = "debug"
[broker]
urls = {list(config.broker.urls)!r}
reconnect_max_seconds = {config.broker.reconnect_max_seconds}
[runtime]
kind = "{config.runtime.kind}"
socket = "{config.runtime.socket}"
[pods]
backoff_initial_seconds = {pods.backoff_initial_seconds}
backoff_max_seconds = {pods.backoff_max_seconds}
poll_seconds = {pods.poll_seconds}
default_grace_seconds = {pods.default_grace_seconds}
[features]
host_exec = {str(config.features.host_exec).lower()}
host_port_forward = {str(config.features.host_port_forward).lower()}
""".replace("'", '"')


class AgentProcess:
    """``python -m edge_agent --config <file>`` as a child process; stopped with SIGTERM."""

    def __init__(self, config: AgentConfig, workdir: Path) -> None:
        self.path = workdir / f"{config.name}.toml"
        self.path.write_text(config_toml(config))
        self.log = workdir / f"{config.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "--config", str(self.path)],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        code = self.proc.returncode
        self.proc = None
        return code
