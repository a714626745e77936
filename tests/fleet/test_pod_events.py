"""Events on pods that run on devices: unsupported fields and image pull errors are not silent."""

from __future__ import annotations

import secrets

from tests.fleet.conftest import wait_until
from tests.fleet.test_pods import IMAGE, create_pod, pod_json


def events(control_plane, namespace: str, uid: str) -> list[dict]:
    found = control_plane.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.uid={uid}"
    )
    return found["items"]


def test_unsupported_fields_and_pull_errors_become_warning_events(control_plane, fleet_bridge, start_agent):
    node, _agent = start_agent()
    ns = f"events-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    probed = {
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sleep", "3600"],
        "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
    }
    create_pod(control_plane, ns, node, "probed", [probed])
    pod = wait_until(
        lambda: (p := pod_json(control_plane, ns, "probed"))["status"].get("phase") == "Running" and p,
        timeout=60,
        what="probed pod Running",
    )
    uid = pod["metadata"]["uid"]
    warnings = wait_until(
        lambda: [e for e in events(control_plane, ns, uid) if e["reason"] == "UnsupportedFields"],
        timeout=20,
        what="UnsupportedFields event",
    )
    assert warnings[0]["type"] == "Warning"
    assert "spec.containers[0].livenessProbe" in warnings[0]["message"]
    assert warnings[0]["source"]["host"] == node
    # Once per pod: later status reports (the pod keeps running) add no more.
    control_plane.kubectl("exec", "-n", ns, "probed", "--", "true")
    assert len([e for e in events(control_plane, ns, uid) if e["reason"] == "UnsupportedFields"]) == 1

    missing = {"name": "main", "image": "edgefleet/absent:none", "imagePullPolicy": "Never"}
    create_pod(control_plane, ns, node, "missing", [missing])
    uid = wait_until(lambda: pod_json(control_plane, ns, "missing")["metadata"]["uid"], timeout=10, what="pod")
    failed = wait_until(
        lambda: [e for e in events(control_plane, ns, uid) if e["reason"] == "Failed"],
        timeout=30,
        what="Failed (ErrImagePull) event",
    )
    assert failed[0]["type"] == "Warning" and "edgefleet/absent:none" in failed[0]["message"]
    plain = [e for e in events(control_plane, ns, uid) if e["reason"] == "UnsupportedFields"]
    assert plain == []  # nothing unsupported in this one
    control_plane.kubectl("delete", "pod", "--all", "-n", ns, "--wait=true", "--timeout=60s", timeout=90)
