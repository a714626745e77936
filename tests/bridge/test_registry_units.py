"""The pure parts of the device registry: EdgeDevice parsing, taint merging, node patches,
host pod shapes and unsupported-field detection."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fleetproto as fp
from cloud_bridge.events import event_object, reported_unsupported, unsupported_pod_fields
from cloud_bridge.hostpods import HOST_CONTAINER, host_pod_object, host_pod_status
from cloud_bridge.nodes import (
    ANNOTATION_MANAGED,
    TAINT_EDGE,
    TAINT_UNREACHABLE,
    NodeSettings,
    merge_taints,
    node_object,
    node_patch,
    offline_taints,
)
from cloud_bridge.pods import LABEL_HOST_POD
from cloud_bridge.registry import device_config, status_patch

INFO = fp.NodeInfo(os="linux", arch="amd64", kernel="6.1", hostname="d", cpus=2, memory_bytes=1, disk_bytes=1)
SETTINGS = NodeSettings(kubelet_address="10.0.0.1", kubelet_port=10250)


def test_device_config_reads_the_agreed_fields() -> None:
    obj = {
        "metadata": {"name": "pi-1", "uid": "u1"},
        "spec": {
            "node": {
                "labels": {"site": "a"},
                "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}, {"key": "j", "effect": "NoExecute"}],
            },
            "features": {"hostExec": True},
            "credentials": {"secretRef": {"name": "pi-1-mqtt", "namespace": "edge"}},
            "services": [{"name": "db", "namespace": "prod"}],
        },
    }
    c = device_config(obj)
    assert (c.name, c.uid, c.labels) == ("pi-1", "u1", {"site": "a"})
    assert c.taints == ({"key": "k", "value": "v", "effect": "NoSchedule"}, {"key": "j", "effect": "NoExecute"})
    assert c.host_exec and not c.host_port_forward
    assert c.secret_ref == ("edge", "pi-1-mqtt")
    empty = device_config({"metadata": {"name": "x"}})
    assert empty.labels == {} and empty.taints == () and not empty.host_exec and empty.secret_ref is None


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"node": {"labels": {"a": 1}}}, "labels"),
        ({"node": {"taints": [{"key": "k", "effect": "Sometimes"}]}}, "taints[0]"),
        ({"node": {"taints": [{"effect": "NoSchedule"}]}}, "taints[0]"),
        ({"credentials": {"secretRef": {"namespace": "x"}}}, "secretRef"),
        ("nonsense", "spec"),
    ],
)
def test_device_config_rejects_bad_shapes(spec, field) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        device_config({"metadata": {"name": "x"}, "spec": spec})


def test_host_exec_must_be_a_real_true() -> None:
    assert not device_config({"metadata": {"name": "x"}, "spec": {"features": {"hostExec": "yes"}}}).host_exec


def test_merge_taints_keeps_foreign_taints_and_time_added() -> None:
    current = [
        {"key": "user/own", "effect": "NoSchedule"},
        {"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"},
        {"key": "old/device", "value": "1", "effect": "NoSchedule"},
    ]
    wanted = [{"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-06-01T00:00:00Z"}]
    out = merge_taints(current, wanted, {"old/device", TAINT_UNREACHABLE})
    assert {"key": "user/own", "effect": "NoSchedule"} in out
    assert all(t["key"] != "old/device" for t in out)
    (unreachable,) = [t for t in out if t["key"] == TAINT_UNREACHABLE]
    assert unreachable["timeAdded"] == "2026-01-01T00:00:00Z"  # tolerationSeconds count from the first time


taint_st = st.fixed_dictionaries(
    {
        "key": st.sampled_from(["a", "b", "c", TAINT_EDGE, TAINT_UNREACHABLE]),
        "effect": st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"]),
    },
    optional={"value": st.sampled_from(["", "1", "2"])},
)


def _unique(taints: list[dict]) -> list[dict]:
    seen, out = set(), []
    for t in taints:
        if (t["key"], t["effect"]) not in seen:
            seen.add((t["key"], t["effect"]))
            out.append(t)
    return out


@given(
    st.lists(taint_st, max_size=8).map(_unique),
    st.lists(taint_st, max_size=5).map(_unique),
    st.sets(st.sampled_from(["a", "b", TAINT_EDGE, TAINT_UNREACHABLE])),
)
def test_merge_taints_properties(current, wanted, owned) -> None:
    out = merge_taints(current, wanted, owned)
    ids = [(t["key"], t["effect"]) for t in out]
    assert len(ids) == len(set(ids))  # never two taints with the same key and effect (the apiserver refuses that)
    for t in wanted:
        match = [o for o in out if (o["key"], o["effect"]) == (t["key"], t["effect"])]
        assert len(match) == 1 and (match[0].get("value") or "") == (t.get("value") or "")
    wanted_ids = {(t["key"], t["effect"]) for t in wanted}
    for t in current:
        if t["key"] not in owned and (t["key"], t["effect"]) not in wanted_ids:
            assert t in out  # someone else's taint is left alone
    for t in out:
        assert t["key"] not in owned or (t["key"], t["effect"]) in wanted_ids
    assert merge_taints(out, wanted, owned) == out  # idempotent


def test_node_object_adds_device_labels_and_taints() -> None:
    taint = {"key": "example.com/gpu", "value": "none", "effect": "PreferNoSchedule"}
    node = node_object("pi-1", INFO, SETTINGS, labels={"site": "a"}, taints=(taint,))
    assert node["metadata"]["labels"]["site"] == "a"
    assert node["metadata"]["labels"]["edgefleet.io/device"] == "pi-1"
    assert node["spec"]["taints"] == [{"key": TAINT_EDGE, "value": "true", "effect": "NoSchedule"}, taint]
    managed = json.loads(node["metadata"]["annotations"][ANNOTATION_MANAGED])
    assert managed == {"labels": ["site"], "taints": sorted([TAINT_EDGE, "example.com/gpu"])}
    # A device taint with the same key and effect as a default replaces it.
    override = {"key": TAINT_EDGE, "value": "gateway", "effect": "NoSchedule"}
    assert node_object("pi-1", INFO, SETTINGS, taints=(override,))["spec"]["taints"] == [override]


def test_node_patch_takes_back_what_the_edgedevice_dropped() -> None:
    before = node_object(
        "pi-1", INFO, SETTINGS, labels={"site": "a", "tier": "gold"}, taints=({"key": "x", "effect": "NoSchedule"},)
    )
    before["metadata"]["labels"]["user-label"] = "kept"
    before["spec"]["taints"] += [{"key": "user/taint", "effect": "NoSchedule"}, *offline_taints()]
    after = node_object("pi-1", INFO, SETTINGS, labels={"site": "b"})
    patch = node_patch(before, after)
    labels = patch["metadata"]["labels"]
    assert labels["site"] == "b" and labels["tier"] is None and "user-label" not in labels
    keys = {(t["key"], t["effect"]) for t in patch["spec"]["taints"]}
    assert keys == {(TAINT_EDGE, "NoSchedule"), ("user/taint", "NoSchedule")}  # x and unreachable removed


def test_offline_taints_are_those_of_the_node_lifecycle_controller() -> None:
    taints = offline_taints()
    assert {(t["key"], t["effect"]) for t in taints} == {
        (TAINT_UNREACHABLE, "NoSchedule"),
        (TAINT_UNREACHABLE, "NoExecute"),
    }
    assert next(t for t in taints if t["effect"] == "NoExecute")["timeAdded"].endswith("Z")


def test_status_patch() -> None:
    info = fp.NodeInfo(
        os="linux", arch="arm64", kernel="6", hostname="h", cpus=1, memory_bytes=1, disk_bytes=1, agent_version="1.2"
    )
    patch = status_patch(online=True, reason="DeviceConnected", message="m", info=info, node_name="pi-1")["status"]
    assert patch["online"] is True and patch["agentVersion"] == "1.2" and patch["nodeName"] == "pi-1"
    assert patch["conditions"][0]["type"] == "Online" and patch["conditions"][0]["status"] == "True"
    off = status_patch(online=False, reason="DeviceOffline", message="gone")["status"]
    assert off["online"] is False and "agentVersion" not in off and off["lastSeen"]


def test_host_pod_shape() -> None:
    pod = host_pod_object("pi-1", "edgefleet-system")
    assert pod["metadata"]["name"] == "host-pi-1" and pod["metadata"]["labels"][LABEL_HOST_POD] == "true"
    assert pod["spec"]["nodeName"] == "pi-1"
    assert pod["spec"]["tolerations"] == [{"operator": "Exists"}]  # every taint, unreachable included
    assert [c["name"] for c in pod["spec"]["containers"]] == [HOST_CONTAINER]
    assert host_pod_status(True)["status"]["phase"] == "Running"
    off = host_pod_status(False)["status"]
    assert off["phase"] == "Pending" and not off["containerStatuses"][0]["ready"]


def test_unsupported_pod_fields() -> None:
    pod = {
        "spec": {
            "initContainers": [{"name": "i"}],
            "securityContext": {},  # the apiserver's default: not a field the user set
            "containers": [
                {"name": "a", "livenessProbe": {"exec": {"command": ["true"]}}, "resources": {}},
                {"name": "b", "securityContext": {"privileged": True}},
                {"name": "c", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},  # honoured
                {"name": "d", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p"}}},
            ],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "c"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}},
                {"name": "kube-api-access-x1", "projected": {"sources": []}},
            ],
        }
    }
    assert unsupported_pod_fields(pod) == [
        "spec.initContainers",
        "spec.containers[0].livenessProbe",
        "spec.containers[1].securityContext.privileged",
        "spec.containers[3].securityContext.seccompProfile",
        "spec.volumes[1].persistentVolumeClaim",
    ]
    assert unsupported_pod_fields({"spec": {"containers": [{"name": "a", "image": "x"}]}}) == []


def test_reported_unsupported_and_event_shape() -> None:
    cond = fp.Condition(type="UnsupportedFields", status=fp.ConditionStatus.TRUE, reason="UnknownFields", message="x.y")
    report = fp.PodStatusReport(uid="u", namespace="ns", name="p", phase=fp.PodPhase.RUNNING, conditions=(cond,))
    assert reported_unsupported(report) == "x.y"
    plain = fp.PodStatusReport(uid="u", namespace="ns", name="p", phase=fp.PodPhase.RUNNING)
    assert reported_unsupported(plain) == ""
    event = event_object(namespace="ns", pod="p", uid="u", reason="UnsupportedFields", message="m" * 5000, host="d")
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": "ns", "name": "p", "uid": "u"}
    assert event["type"] == "Warning" and len(event["message"]) == 1024
    assert event["metadata"]["name"].startswith("p.")


def test_seccomp_profile_follows_the_kubelet_resolution() -> None:
    from cloud_bridge.pods import _seccomp

    def profile(kind: str) -> dict:
        return {"securityContext": {"seccompProfile": {"type": kind}}}

    assert _seccomp({}, {}) is fp.Seccomp.UNSET
    assert _seccomp(profile("Unconfined"), {}) is fp.Seccomp.UNCONFINED
    assert _seccomp(profile("RuntimeDefault"), {}) is fp.Seccomp.RUNTIME_DEFAULT
    # The container's own setting wins over the pod's.
    assert _seccomp(profile("RuntimeDefault"), profile("Unconfined")) is fp.Seccomp.UNCONFINED
    assert _seccomp(profile("Unconfined"), profile("RuntimeDefault")) is fp.Seccomp.RUNTIME_DEFAULT
    # No profile files on a device: Localhost runs confined (and is reported, above), never unconfined.
    assert _seccomp({}, profile("Localhost")) is fp.Seccomp.RUNTIME_DEFAULT
    assert unsupported_pod_fields({"spec": {**profile("Localhost"), "containers": [{"name": "a"}]}}) == [
        "spec.securityContext.seccompProfile"
    ]
