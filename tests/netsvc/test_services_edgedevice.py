"""An EdgeDevice's ``spec.services`` grants a Service that carries no expose label, to that device only.

Runs with the EdgeDevice CRD installed (and removed again afterwards, so the
other modules sharing the apiserver see the cluster as they expect).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netsvc.conftest import GREET_PORT, Bridges, Cluster, endpoints, service
from tests.netsvc.harness import GREETING, DeviceNetns, NetnsAgent, TcpServers, client, wait_until
from tests.support.brokers import Broker
from tests.support.kube import ControlPlane

CRD = Path(__file__).resolve().parents[2] / "charts" / "edgefleet" / "crds" / "edgedevice.yaml"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane) -> Iterator[None]:
    control_plane.kubectl("apply", "-f", str(CRD))
    control_plane.kubectl("wait", "--for=condition=Established", "crd/edgedevices.edgefleet.io", "--timeout=60s")
    try:
        yield
    finally:
        control_plane.kubectl("delete", "crd", "edgedevices.edgefleet.io", "--wait=true", check=False)


def test_edgedevice_list_grants_an_unlabelled_service(
    crd: None,
    control_plane: ControlPlane,
    netns: DeviceNetns,
    broker: Broker,
    servers: TcpServers,
    tmp_path: Path,
) -> None:
    ns = f"listed-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    cluster = Cluster(control_plane, ns)
    cluster.apply(
        service(ns, "plain", GREET_PORT, expose=False),
        endpoints(ns, "plain", servers.host, servers.greet_port),
        service(ns, "other", GREET_PORT, expose=False),
        endpoints(ns, "other", servers.host, servers.greet_port),
    )
    name = f"listed-{secrets.token_hex(3)}"
    device = {
        "apiVersion": "edgefleet.io/v1alpha1",
        "kind": "EdgeDevice",
        "metadata": {"name": name},
        "spec": {"services": [{"name": "plain", "namespace": ns}]},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(device))
    bridges = Bridges(broker, str(control_plane.kubeconfig_path))
    bridges.auto_register = False  # the EdgeDevice admits the device
    agent = NetnsAgent(
        name=name,
        workdir=tmp_path,
        broker_url=broker.device_url,  # type: ignore[attr-defined]
        interface="ef-svc1",
        hosts_file=Path("/etc/hosts"),
        netns=netns,
    )
    try:
        bridges.start()
        agent.start()
        wait_until(
            lambda: cluster.dns("plain") in netns.hosts_file.read_text(),
            timeout=60,
            what=f"the listed service in the device's table; agent log:\n{agent.tail()}",
        )
        assert cluster.dns("other") not in netns.hosts_file.read_text()
        answer = client(netns, "greet", cluster.dns("plain"), str(GREET_PORT))
        assert answer["data"] == GREETING.decode(), answer
    finally:
        agent.stop()
        bridges.stop()
        control_plane.kubectl("delete", "edgedevice", name, check=False)
