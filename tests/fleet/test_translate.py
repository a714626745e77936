"""Pure translations: v1 Pod -> DesiredPod, PodStatusReport -> PodStatus patch."""

from __future__ import annotations

import fleetproto as fp
from cloud_bridge.devices import pod_status_patch
from cloud_bridge.pods import desired_pod


class FakeResolver:
    def __init__(self) -> None:
        self.data = {
            ("configMap", "cfg"): {"a.conf": b"A", "b.conf": b"B"},
            ("secret", "sec"): {"token": b"s3cret"},
        }

    def source(self, ns: str, ref: dict, kind: str) -> dict[str, bytes]:
        if (kind, ref["name"]) not in self.data:
            if ref.get("optional"):
                return {}
            raise KeyError(ref["name"])
        return self.data[(kind, ref["name"])]


POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "0f0e-11", "resourceVersion": "7"},
    "spec": {
        "nodeName": "dev-1",
        "restartPolicy": "OnFailure",
        "terminationGracePeriodSeconds": 5,
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "command": ["sh"],
                "args": ["-c", "true"],
                "env": [
                    {"name": "PLAIN", "value": "x"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
                    {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "1"}},
                "volumeMounts": [{"name": "conf", "mountPath": "/etc/conf", "readOnly": True}],
            }
        ],
        "volumes": [
            {"name": "conf", "configMap": {"name": "cfg", "items": [{"key": "a.conf", "path": "x/a.conf"}]}},
            {"name": "creds", "secret": {"secretName": "sec", "defaultMode": 0o400}},
            {"name": "missing", "secret": {"secretName": "nope", "optional": True}},
        ],
    },
}


def test_desired_pod_resolves_env_and_volume_files():
    pod = desired_pod(POD, FakeResolver())  # type: ignore[arg-type]
    assert (pod.uid, pod.resource_version, pod.restart_policy) == ("0f0e-11", "7", fp.RestartPolicy.ON_FAILURE)
    assert pod.termination_grace_seconds == 5
    c = pod.containers[0]
    env = {e.name: e.value for e in c.env}
    assert env == {"CFG_a.conf": "A", "CFG_b.conf": "B", "PLAIN": "x", "TOKEN": "s3cret", "ME": "p"}
    assert c.resources.cpu_limit == 0.5 and c.resources.memory_limit_bytes == 64 * 2**20
    assert c.resources.cpu_request == 1.0
    assert pod.files == {"conf/x/a.conf": fp.PodFile(b"A", 0o644), "creds/token": fp.PodFile(b"s3cret", 0o400)}
    assert c.volume_mounts[0].read_only
    # What the bridge sends must survive the device's own validation.
    assert fp.decode(fp.encode(fp.PodUpsert(pod=pod, generation=1)), sender="cloud").pod == pod


def test_status_patch_copies_phase_conditions_and_containers():
    report = fp.PodStatusReport(
        uid="u",
        namespace="ns",
        name="p",
        phase=fp.PodPhase.RUNNING,
        conditions=(fp.Condition(type="Ready", status=fp.ConditionStatus.TRUE, last_transition=0.0),),
        container_statuses=(
            fp.ContainerStatus(
                name="main",
                state=fp.ContainerState(kind=fp.StateKind.RUNNING, started_at=1.5),
                last_state=fp.ContainerState(kind=fp.StateKind.TERMINATED, exit_code=2, reason="Error"),
                ready=True,
                started=True,
                restart_count=1,
                image="busybox",
                container_id="docker://abc",
            ),
        ),
        pod_ip="10.0.0.5",
        start_time=0.0,
    )
    status = pod_status_patch(report)["status"]
    assert status["phase"] == "Running" and status["podIP"] == "10.0.0.5"
    assert status["startTime"] == "1970-01-01T00:00:00Z"
    assert status["conditions"] == [{"type": "Ready", "status": "True", "lastTransitionTime": "1970-01-01T00:00:00Z"}]
    cs = status["containerStatuses"][0]
    assert cs["state"] == {"running": {"startedAt": "1970-01-01T00:00:01Z"}}
    assert cs["lastState"] == {"terminated": {"exitCode": 2, "reason": "Error"}}
    assert (cs["restartCount"], cs["containerID"], cs["ready"]) == (1, "docker://abc", True)
