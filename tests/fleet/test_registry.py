"""The device registry with real agents: EdgeDevices admit devices, shape their Nodes and take them away.

A bridge with auto-registration off (the default) refuses a device without an
EdgeDevice (FORBIDDEN on its control stream, counted, no Node); the
EdgeDevice's labels and taints land on the Node, its status follows the
device; an offline device's Node gets the unreachable taints; deleting the
EdgeDevice removes the Node and its Lease.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid

import pytest

import fleetproto as fp
from cloud_bridge import registry as registry_module
from cloud_bridge.nodes import ANNOTATION_OWNER, LABEL_DEVICE
from cloud_bridge.registry import GROUP, VERSION, CrdMissing, DeviceRegistry
from seqstream import StreamResetError
from seqstream.mqtt import BrokerConfig, device_endpoint
from tests.agent_core.cloud import FAST
from tests.fleet import edgedevices as ed
from tests.fleet.conftest import wait_until
from tests.fleet.edgedevices import node_or_none, ready, start_registry_bridge, stop_registry_bridge, taints
from tests.support.brokers import Broker

edgedevice_crd, edgedevices, registry_broker = ed.edgedevice_crd, ed.edgedevices, ed.registry_broker
registry_fleet, registry_agent = ed.registry_fleet, ed.registry_agent

UNREACHABLE = "node.kubernetes.io/unreachable"


def edgedevice(control_plane, name: str) -> dict:
    return control_plane.kubectl_json("get", "edgedevice", name)


def test_unknown_device_is_refused_until_it_has_an_edgedevice(
    control_plane, registry_fleet, registry_agent, edgedevices
):
    before = registry_fleet.counters["rejected"]
    name, _agent = registry_agent()
    wait_until(lambda: registry_fleet.counters["rejected"] > before, timeout=30, what="the device refused")
    time.sleep(2)  # time enough for a Node, had the refusal not held
    assert node_or_none(control_plane, name) is None
    assert control_plane.kubectl("get", "lease", "-n", "kube-node-lease", name, check=False).returncode != 0

    edgedevices(
        name,
        {
            "node": {
                "labels": {"site": "berlin", "edgefleet.io/tier": "gold"},
                "taints": [{"key": "example.com/gpu", "value": "none", "effect": "PreferNoSchedule"}],
            }
        },
    )
    # The agent retries its control stream (backoff up to 5 s): then it is admitted.
    node = wait_until(
        lambda: (n := node_or_none(control_plane, name)) and ready(n) == "True" and n, timeout=40, what="node Ready"
    )
    labels = node["metadata"]["labels"]
    assert labels["site"] == "berlin" and labels["edgefleet.io/tier"] == "gold"
    assert labels["edgefleet.io/device"] == name
    keys = {(t["key"], t["effect"]) for t in taints(node)}
    assert ("example.com/gpu", "PreferNoSchedule") in keys
    assert ("edgefleet.io/edge", "NoSchedule") in keys  # the bridge's default stays

    status = wait_until(
        lambda: (s := edgedevice(control_plane, name).get("status") or {}).get("online") and s,
        timeout=20,
        what="EdgeDevice status online",
    )
    assert status["nodeName"] == name
    assert status["agentVersion"] and status["lastSeen"]
    assert any(c["type"] == "Online" and c["status"] == "True" for c in status["conditions"])
    row = control_plane.kubectl("get", "ed", name, "--no-headers").stdout.split()
    assert row[:2] == [name, "true"], row

    # Edit the EdgeDevice: the Node follows (a dropped label and taint are taken back).
    patch = {"spec": {"node": {"labels": {"site": "paris", "edgefleet.io/tier": None}, "taints": []}}}
    control_plane.kubectl("patch", "edgedevice", name, "--type=merge", "-p", json.dumps(patch))

    def edited() -> bool:
        n = node_or_none(control_plane, name) or {"metadata": {"labels": {}}}
        got = n["metadata"]["labels"]
        return (
            got.get("site") == "paris"
            and "edgefleet.io/tier" not in got
            and all(t["key"] != "example.com/gpu" for t in taints(n))
        )

    wait_until(edited, timeout=20, what="labels/taints of the edited EdgeDevice on the Node")
    assert ("edgefleet.io/edge", "NoSchedule") in {
        (t["key"], t["effect"]) for t in taints(node_or_none(control_plane, name))
    }


def test_offline_device_gets_unreachable_taints_until_it_returns(
    control_plane, registry_fleet, registry_agent, edgedevices
):
    name = edgedevices(f"edge-off-{time.monotonic_ns() % 100000}", {"node": {"labels": {"site": "oslo"}}})
    name, agent = registry_agent(name)
    wait_until(lambda: ready(node_or_none(control_plane, name)) == "True", timeout=40, what="node Ready")
    assert not [t for t in taints(node_or_none(control_plane, name)) if t["key"] == UNREACHABLE]

    agent.stop()
    node = wait_until(
        lambda: (n := node_or_none(control_plane, name)) and ready(n) == "False" and n, timeout=30, what="NotReady"
    )
    node = wait_until(
        lambda: (
            (n := node_or_none(control_plane, name))
            and len([t for t in taints(n) if t["key"] == UNREACHABLE]) == 2
            and n
        ),
        timeout=15,
        what="unreachable taints",
    )
    unreachable = {t["effect"]: t for t in taints(node) if t["key"] == UNREACHABLE}
    assert set(unreachable) == {"NoSchedule", "NoExecute"}
    assert unreachable["NoExecute"].get("timeAdded")  # tolerationSeconds count from here
    assert node["metadata"]["labels"]["site"] == "oslo"
    wait_until(
        lambda: edgedevice(control_plane, name)["status"]["online"] is False, timeout=15, what="EdgeDevice offline"
    )

    agent.start()
    node = wait_until(
        lambda: (n := node_or_none(control_plane, name)) and ready(n) == "True" and n, timeout=40, what="Ready again"
    )
    assert not [t for t in taints(node) if t["key"] == UNREACHABLE]
    assert ("edgefleet.io/edge", "NoSchedule") in {(t["key"], t["effect"]) for t in taints(node)}
    assert node["metadata"]["labels"]["site"] == "oslo"
    wait_until(lambda: edgedevice(control_plane, name)["status"]["online"] is True, timeout=15, what="online again")


def test_deleting_the_edgedevice_removes_node_and_lease(control_plane, registry_fleet, registry_agent, edgedevices):
    name = edgedevices(f"edge-del-{time.monotonic_ns() % 100000}")
    name, _agent = registry_agent(name)
    wait_until(lambda: ready(node_or_none(control_plane, name)) == "True", timeout=40, what="node Ready")
    control_plane.kubectl("get", "lease", "-n", "kube-node-lease", name)
    before = registry_fleet.counters["rejected"]

    control_plane.kubectl("delete", "edgedevice", name)
    wait_until(lambda: node_or_none(control_plane, name) is None, timeout=20, what="Node deleted")
    wait_until(
        lambda: control_plane.kubectl("get", "lease", "-n", "kube-node-lease", name, check=False).returncode != 0,
        timeout=10,
        what="Lease deleted",
    )
    # The device was dropped; reconnecting, it is refused and gets no Node back.
    wait_until(lambda: registry_fleet.counters["rejected"] > before, timeout=30, what="the device refused again")
    time.sleep(2)
    assert node_or_none(control_plane, name) is None


def test_credentials_secret_is_checked(control_plane, registry_fleet, edgedevices):
    """The bridge only checks that the broker credentials Secret exists (the broker ACL side uses it)."""
    ns = f"creds-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    name = edgedevices(
        f"edge-cred-{secrets.token_hex(3)}", {"credentials": {"secretRef": {"name": "mqtt", "namespace": ns}}}
    )

    def credentials() -> dict:
        conditions = (edgedevice(control_plane, name).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "CredentialsFound"), {})

    missing = wait_until(lambda: credentials().get("status") == "False" and credentials(), timeout=15, what="missing")
    assert f"Secret {ns}/mqtt not found" in missing["message"]
    control_plane.kubectl("create", "secret", "generic", "mqtt", "-n", ns, "--from-literal=password=x")
    wait_until(lambda: credentials().get("status") == "True", timeout=15, what="CredentialsFound=True")
    control_plane.kubectl("delete", "namespace", ns, "--wait=false")


def test_auto_register_creates_the_edgedevice(control_plane, bridge_pki, edgedevice_crd, registry_agent):
    with Broker("mosquitto") as broker:  # one bridge per broker
        fleet = start_registry_bridge(control_plane, bridge_pki, broker, auto_register=True)
        name = ""
        try:
            name, agent = registry_agent(f"edge-auto-{uuid.uuid4().hex[:6]}", broker=broker)
            wait_until(lambda: ready(node_or_none(control_plane, name)) == "True", timeout=40, what="node Ready")
            obj = edgedevice(control_plane, name)
            assert obj["metadata"]["labels"]["edgefleet.io/auto-registered"] == "true"
            assert obj["spec"] == {}
            status = wait_until(
                lambda: (s := edgedevice(control_plane, name).get("status") or {}).get("online") and s,
                timeout=20,
                what="status online",
            )
            assert status["nodeName"] == name
            assert fleet.counters["auto_registered"] == 1
            assert fleet.counters["rejected"] == 0
            agent.stop()
        finally:
            if name:
                control_plane.kubectl("delete", "edgedevice", name, "--ignore-not-found", check=False)
                wait_until(lambda: node_or_none(control_plane, name) is None, timeout=20, what="Node deleted")
            stop_registry_bridge(control_plane, fleet)


def test_missing_crd_is_a_clear_startup_error(control_plane, monkeypatch):
    """Without the CRD, only --auto-register may run (admitting all); else start() says what to install."""
    import kubernetes

    monkeypatch.setattr(registry_module, "CRD_NAME", "absentdevices.edgefleet.io")
    api = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig_path))
    try:
        with pytest.raises(CrdMissing, match=r"absentdevices\.edgefleet\.io is not installed.*--auto-register"):
            asyncio.run(DeviceRegistry(api).start())
        with pytest.raises(CrdMissing, match="is not installed"):
            asyncio.run(DeviceRegistry(api, use_crd=True, auto_register=True).start())
        admit_all = DeviceRegistry(api, auto_register=True)
        asyncio.run(admit_all.start())
        assert not admit_all.enabled
        hello = fp.NodeHello(
            node=fp.NodeInfo(os="linux", arch="amd64", kernel="6", hostname="h", cpus=1, memory_bytes=1, disk_bytes=1)
        )
        assert asyncio.run(admit_all.admit("anyone", hello)) is None
    finally:
        api.close()


def test_refusal_reaches_the_device_and_gates_its_other_streams(registry_fleet, edgedevice_crd):
    """At the protocol level: the control stream is reset with FORBIDDEN and a reason naming the fix, and a
    stream the unadmitted device opens itself (a cluster Service connection) is refused the same way."""
    broker = registry_fleet.broker

    async def scenario() -> tuple[StreamResetError, StreamResetError]:
        config = BrokerConfig(host=broker.host, port=broker.port, reconnect_min=0.05, reconnect_max=0.5)
        async with device_endpoint(f"edge-raw-{secrets.token_hex(3)}", config, session_config=FAST) as device:
            control = await device.open_stream(fp.ControlOpen().to_metadata())
            info = fp.NodeInfo(os="linux", arch="amd64", kernel="6", hostname="h", cpus=1, memory_bytes=1, disk_bytes=1)
            control.write(fp.frame(fp.NodeHello(node=info)))
            with pytest.raises(StreamResetError) as refused:
                async with asyncio.timeout(20):
                    while await control.read(65536):
                        pass
            service = await device.open_stream(
                fp.ServiceOpen(namespace="default", service="db", port=5432).to_metadata()
            )
            with pytest.raises(StreamResetError) as gated:
                async with asyncio.timeout(20):
                    while await service.read(65536):
                        pass
            return refused.value, gated.value

    refused, gated = asyncio.run(scenario())
    assert refused.code == fp.AppError.FORBIDDEN
    assert "is not registered" in refused.reason and "EdgeDevice" in refused.reason
    assert gated.code == fp.AppError.FORBIDDEN and "not admitted" in gated.reason


def test_nodes_whose_edgedevice_went_away_are_pruned_at_start(control_plane, bridge_pki, edgedevice_crd):
    """An EdgeDevice deleted while the bridge was down: the bridge removes that Node when it
    starts, but only its own Nodes (by the ``edgefleet.io/bridge`` annotation)."""
    owner = f"prune-{secrets.token_hex(3)}"
    mine, theirs, kept = (f"{kind}-{secrets.token_hex(3)}" for kind in ("ghost", "foreign", "admitted"))
    for name, node_owner in ((mine, owner), (theirs, "another-bridge"), (kept, owner)):
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {LABEL_DEVICE: name}, "annotations": {ANNOTATION_OWNER: node_owner}},
        }
        control_plane.kubectl("create", "-f", "-", input=json.dumps(node))
    device = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeDevice", "metadata": {"name": kept}}
    control_plane.kubectl("create", "-f", "-", input=json.dumps(device))
    try:
        with Broker("mosquitto") as broker:
            fleet = start_registry_bridge(control_plane, bridge_pki, broker, owner=owner)
            try:
                wait_until(lambda: node_or_none(control_plane, mine) is None, timeout=20, what="the orphan Node pruned")
                assert node_or_none(control_plane, theirs) is not None  # another bridge's: not ours to judge
                assert node_or_none(control_plane, kept) is not None  # its EdgeDevice exists
            finally:
                stop_registry_bridge(control_plane, fleet)
    finally:
        for name in (mine, theirs, kept):
            control_plane.kubectl("delete", "node", name, "--ignore-not-found", check=False)
        control_plane.kubectl("delete", "edgedevice", kept, "--ignore-not-found", check=False)
