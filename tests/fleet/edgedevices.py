"""Fixtures for the device registry tests: the EdgeDevice CRD from the chart, bridges that use it.

Each registry bridge has a broker of its own (one bridge per broker) and a
host-pod namespace of its own; the shared ``fleet_bridge`` runs without the
CRD (``edge_devices=False``), so it never acts on these EdgeDevices.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.app import BridgeConfig
from tests.agent_core.agents import REPO, AgentProcess, agent_config
from tests.bridge.conftest import BridgePki
from tests.fleet.conftest import fleet_bridge_config, stop_device_agent
from tests.fleet.harness import BridgeThread
from tests.support.brokers import Broker
from tests.support.kube import ControlPlane

CRD_FILE = REPO / "charts" / "edgefleet" / "crds" / "edgedevice.yaml"
CRD_NAME = "edgedevices.edgefleet.io"


@dataclasses.dataclass
class RegistryFleet:
    """A bridge using EdgeDevices, its broker and its host-pod namespace."""

    thread: BridgeThread
    broker: Broker
    host_namespace: str

    @property
    def counters(self) -> Any:
        assert self.thread.bridge is not None
        return self.thread.bridge.devices.counters


def install_crd(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(CRD_FILE))
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s", timeout=90)


@pytest.fixture(scope="session")
def edgedevice_crd(control_plane: ControlPlane) -> str:
    """The CRD, installed with kubectl from the chart's crds/ file (left installed: CRD removal is slow)."""
    install_crd(control_plane)
    return CRD_NAME


def start_registry_bridge(
    control_plane: ControlPlane, bridge_pki: BridgePki, broker: Broker, **changes: Any
) -> RegistryFleet:
    namespace = f"hosts-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", namespace)
    settings: dict[str, Any] = {
        "auto_register": False,
        "edge_devices": True,
        "registry_poll_seconds": 0.5,
        "host_namespace": namespace,
        **changes,
    }
    owner = settings.pop("owner", None)
    config: BridgeConfig = dataclasses.replace(fleet_bridge_config(control_plane, bridge_pki, broker), **settings)
    if owner is not None:
        config = dataclasses.replace(config, nodes=dataclasses.replace(config.nodes, owner=owner))
    thread = BridgeThread(config, str(control_plane.kubeconfig_path)).start()
    return RegistryFleet(thread, broker, namespace)


def stop_registry_bridge(control_plane: ControlPlane, fleet: RegistryFleet) -> None:
    fleet.thread.stop()
    control_plane.kubectl("delete", "namespace", fleet.host_namespace, "--wait=false", check=False)
    assert fleet.thread.leftover_tasks == [], fleet.thread.leftover_tasks


@pytest.fixture(scope="module")
def registry_broker() -> Iterator[Broker]:
    with Broker("mosquitto") as b:
        yield b


@pytest.fixture(scope="module")
def registry_fleet(
    control_plane: ControlPlane, bridge_pki: BridgePki, registry_broker: Broker, edgedevice_crd: str
) -> Iterator[RegistryFleet]:
    """A bridge that admits only devices with an EdgeDevice (auto-registration off, the default)."""
    fleet = start_registry_bridge(control_plane, bridge_pki, registry_broker)
    try:
        yield fleet
    finally:
        stop_registry_bridge(control_plane, fleet)


AgentStarter = Callable[..., tuple[str, AgentProcess]]


@pytest.fixture
def registry_agent(registry_broker: Broker, docker_host: str, tmp_path: Path) -> Iterator[AgentStarter]:
    """``start(name=None, host_exec=False, host_pf=False, broker=registry_broker)``: a real agent, stopped after."""
    started: list[tuple[str, AgentProcess]] = []

    def start(
        name: str | None = None, *, host_exec: bool = False, host_pf: bool = False, broker: Broker | None = None
    ) -> tuple[str, AgentProcess]:
        name = name or f"edge-{uuid.uuid4().hex[:8]}"
        data = tmp_path / name
        data.mkdir()
        config = agent_config(broker or registry_broker, name, data, docker_host, host_exec=host_exec, host_pf=host_pf)
        proc = AgentProcess(config, tmp_path).start()
        started.append((name, proc))
        return name, proc

    yield start
    for name, proc in started:
        stop_device_agent(docker_host, name, proc)


@pytest.fixture
def edgedevices(control_plane: ControlPlane) -> Iterator[Callable[..., str]]:
    """``create(name, spec)``: an EdgeDevice, deleted after the test."""
    made: list[str] = []

    def create(name: str, spec: dict[str, Any] | None = None) -> str:
        body = {"apiVersion": "edgefleet.io/v1alpha1", "kind": "EdgeDevice", "metadata": {"name": name}}
        body["spec"] = spec or {}
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(body))
        made.append(name)
        return name

    yield create
    for name in made:
        control_plane.kubectl("delete", "edgedevice", name, "--ignore-not-found", "--wait=false", check=False)
    # The bridge (still running) deletes their Nodes and host pods: give it a bounded moment to.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(node_or_none(control_plane, name) for name in made):
        time.sleep(0.3)


def node_or_none(control_plane: ControlPlane, name: str) -> dict[str, Any] | None:
    proc = control_plane.kubectl("get", "node", name, "-o", "json", "--ignore-not-found", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


def ready(node: dict[str, Any] | None) -> str | None:
    if node is None:
        return None
    return next((c["status"] for c in node["status"].get("conditions") or [] if c["type"] == "Ready"), None)


def taints(node: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(((node or {}).get("spec") or {}).get("taints") or [])
