"""The test control plane itself: real kube-apiserver, real kubectl."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.kube import (
    ENV_EXTERNAL_KUBECONFIG,
    ControlPlane,
    ControlPlaneError,
    KubectlError,
)

local_only = pytest.mark.skipif(
    bool(os.environ.get(ENV_EXTERNAL_KUBECONFIG)),
    reason=f"starts its own control plane; {ENV_EXTERNAL_KUBECONFIG} selects an external cluster",
)


def node_manifest(name: str) -> dict:
    """A virtual node as the bridge will register it (no kubelet behind it)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "type": "edgefleet-device",
            },
        },
        "spec": {
            "taints": [{"key": "edgefleet.io/device", "value": "true", "effect": "NoSchedule"}],
        },
    }


NODE_STATUS = {
    "status": {
        "capacity": {"cpu": "4", "memory": "2Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "2Gi", "pods": "110"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "EdgeAgentReady",
                "message": "test",
                "lastHeartbeatTime": "2025-01-01T00:00:00Z",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    }
}


def pod_manifest(name: str, namespace: str, node: str | None) -> dict:
    spec: dict = {
        "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}],
        "tolerations": [{"key": "edgefleet.io/device", "operator": "Exists", "effect": "NoSchedule"}],
    }
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": spec,
    }


@pytest.fixture
def edge_node(control_plane: ControlPlane):
    name = f"edge-test-{secrets.token_hex(3)}"
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(node_manifest(name)))
    yield name
    control_plane.kubectl("delete", "node", name, "--wait=false", check=False)


# --- basics --------------------------------------------------------------------------


def test_get_namespaces(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl("get", "ns").stdout
    assert out.splitlines()[0].split()[:2] == ["NAME", "STATUS"]
    names = {item["metadata"]["name"] for item in control_plane.kubectl_json("get", "ns")["items"]}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names


def test_server_version_and_admin_identity(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("get", "--raw", "/version").stdout)
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.")
    if not control_plane.external:
        assert control_plane.server_url.startswith("https://127.0.0.1:")
        whoami = control_plane.kubectl_json("auth", "whoami")
        assert whoami["status"]["userInfo"]["username"] == "admin"
        assert "system:masters" in whoami["status"]["userInfo"]["groups"]


def test_kubectl_error_carries_output(control_plane: ControlPlane) -> None:
    with pytest.raises(KubectlError) as info:
        control_plane.kubectl("get", "namespace", "no-such-namespace-here")
    assert info.value.returncode != 0
    assert "NotFound" in str(info.value) or "not found" in str(info.value)


# --- nodes and pods --------------------------------------------------------------------


def test_node_and_bound_pod_are_stored(control_plane: ControlPlane, namespace: str, edge_node: str) -> None:
    node = control_plane.kubectl_json("get", "node", edge_node)
    assert node["metadata"]["labels"]["type"] == "edgefleet-device"
    assert node["spec"]["taints"][0]["key"] == "edgefleet.io/device"

    # What the bridge will do: write node status through the status subresource.
    control_plane.kubectl(
        "patch",
        "node",
        edge_node,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(NODE_STATUS),
    )
    node = control_plane.kubectl_json("get", "node", edge_node)
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"

    pod = pod_manifest("hello", namespace, edge_node)
    applied = control_plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    assert "pod/hello created" in applied.stdout

    stored = control_plane.kubectl_json("get", "pod", "hello", "-n", namespace)
    assert stored["spec"]["nodeName"] == edge_node
    assert stored["metadata"]["uid"]
    assert stored["status"].get("phase") == "Pending"  # no kubelet (yet): nobody runs it

    # The bridge's view: pods bound to its node, across namespaces.
    listed = control_plane.kubectl_json("get", "pods", "-A", f"--field-selector=spec.nodeName={edge_node}")["items"]
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in listed] == [(namespace, "hello")]
    other = control_plane.kubectl_json("get", "pods", "-A", "--field-selector=spec.nodeName=elsewhere")
    assert other["items"] == []

    # Applying the same manifest again changes nothing (kubectl may still say
    # "configured": the admission-defaulted tolerations make it send a no-op
    # patch); nodeName is immutable.
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    again = control_plane.kubectl_json("get", "pod", "hello", "-n", namespace)
    assert again["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    moved = pod_manifest("hello", namespace, "some-other-node")
    rejected = control_plane.kubectl("apply", "-f", "-", input=json.dumps(moved), check=False)
    assert rejected.returncode != 0
    assert "Forbidden" in rejected.stderr or "forbidden" in rejected.stderr
    stored = control_plane.kubectl_json("get", "pod", "hello", "-n", namespace)
    assert stored["spec"]["nodeName"] == edge_node


# --- users and RBAC -----------------------------------------------------------------------


def test_created_user_identity(control_plane: ControlPlane) -> None:
    user = control_plane.create_user("edge-bridge-test", groups=["edgefleet:bridges", "testers"])
    assert user.kubeconfig_path.is_file()
    info = control_plane.kubectl_json("auth", "whoami", user=user)["status"]["userInfo"]
    assert info["username"] == "edge-bridge-test"
    assert {"edgefleet:bridges", "testers", "system:authenticated"} <= set(info["groups"])
    assert "system:masters" not in info["groups"]


def test_limited_user_is_denied_until_rbac_allows(control_plane: ControlPlane, namespace: str) -> None:
    viewer = control_plane.create_user(f"viewer-{secrets.token_hex(3)}", groups=["edgefleet:viewers"])

    def can_i(*args: str) -> bool:
        proc = control_plane.kubectl("auth", "can-i", *args, "-n", namespace, user=viewer, check=False)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), proc
        assert (proc.returncode == 0) == (answer == "yes"), proc
        return answer == "yes"

    assert not can_i("list", "pods")
    denied = control_plane.kubectl("get", "pods", "-n", namespace, user=viewer, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower() and viewer.name in denied.stderr

    # The admin (really) can; so the denial above is RBAC, not a broken cluster.
    assert control_plane.kubectl("auth", "can-i", "create", "pods", "-n", namespace).stdout.strip() == "yes"

    control_plane.kubectl("create", "role", "pod-reader", "-n", namespace, "--verb=get,list,watch", "--resource=pods")
    control_plane.kubectl(
        "create",
        "rolebinding",
        "viewers-read-pods",
        "-n",
        namespace,
        "--role=pod-reader",
        "--group=edgefleet:viewers",
    )
    deadline = time.monotonic() + 10  # the RBAC authorizer's informer catches up
    while not can_i("list", "pods") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert can_i("list", "pods")
    assert control_plane.kubectl("get", "pods", "-n", namespace, user=viewer).returncode == 0
    assert not can_i("create", "pods")
    assert not can_i("delete", "pods")
    assert not can_i("list", "secrets")
    # A namespaced grant does not reach other namespaces or cluster-scoped objects.
    assert (
        control_plane.kubectl("auth", "can-i", "list", "pods", "-n", "default", user=viewer, check=False).stdout.strip()
        == "no"
    )
    assert control_plane.kubectl("auth", "can-i", "list", "nodes", user=viewer, check=False).stdout.strip() == "no"

    pod = pod_manifest("sneaky", namespace, "edge-somewhere")
    create = control_plane.kubectl("create", "-f", "-", input=json.dumps(pod), user=viewer, check=False)
    assert create.returncode != 0
    assert "forbidden" in create.stderr.lower()
    assert control_plane.kubectl("get", "pod", "sneaky", "-n", namespace, check=False).returncode != 0


def test_kubeconfig_works_with_python_client(control_plane: ControlPlane) -> None:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(control_plane.kubeconfig_path))
    with api_client:
        items = client.CoreV1Api(api_client).list_namespace().items
    names = {ns.metadata.name for ns in items if ns.metadata}
    assert "kube-system" in names


# --- the harness itself (local control planes only) ------------------------------------------


def wait_for(what: str, probe, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


@local_only
def test_scheduler_binds_pod_to_edge_node() -> None:
    with ControlPlane(scheduler=True, kubeconfig=None) as cp:
        assert cp.components["kube-scheduler"].alive()
        cp.kubectl("apply", "-f", "-", input=json.dumps(node_manifest("edge-sched")))
        cp.kubectl(
            "patch",
            "node",
            "edge-sched",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(NODE_STATUS),
        )
        # The TaintNodesByCondition admission plugin taints every new node
        # not-ready; kube-controller-manager's node lifecycle controller (not
        # run here) would lift it once the node reports Ready.
        taints = cp.kubectl_json("get", "node", "edge-sched")["spec"]["taints"]
        assert {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"} in taints
        cp.kubectl("apply", "-f", "-", input=json.dumps(pod_manifest("unbound", "default", None)))

        def scheduled_condition():
            status = cp.kubectl_json("get", "pod", "unbound")["status"]
            return next((c for c in status.get("conditions", []) if c["type"] == "PodScheduled"), None)

        cond = wait_for("the scheduler to try the pod", scheduled_condition)
        assert (cond["status"], cond["reason"]) == ("False", "Unschedulable"), cond
        assert "untolerated taint" in cond["message"]

        cp.kubectl("taint", "node", "edge-sched", "node.kubernetes.io/not-ready:NoSchedule-")
        node_name = wait_for(
            "the scheduler to bind the pod",
            lambda: cp.kubectl_json("get", "pod", "unbound")["spec"].get("nodeName"),
        )
        assert node_name == "edge-sched", cp.log_tail("kube-scheduler")
        workdir = cp.workdir
        procs = [c.proc for c in cp.components.values()]
    assert workdir is not None and (cp.keep_workdir or not workdir.exists())
    assert len(procs) == 3 and all(p is not None and p.poll() is not None for p in procs)


@local_only
def test_startup_failure_is_loud_and_leaves_nothing() -> None:
    cp = ControlPlane(kubeconfig=None, apiserver_args=["--no-such-flag=1"])
    with pytest.raises(ControlPlaneError) as info:
        cp.start()
    message = str(info.value)
    assert "kube-apiserver exited" in message
    assert "unknown flag: --no-such-flag" in message  # the apiserver's own words, from its log
    assert cp.workdir is not None and (cp.keep_workdir or not cp.workdir.exists())
    assert all(c.proc is not None and c.proc.poll() is not None for c in cp.components.values())


@local_only
def test_port_taken_between_pick_and_bind_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """free_port() releases the port it found; if someone takes it before the
    apiserver binds, the control plane picks new ports and tries again."""
    import tests.support.kube as kube

    real_free_port = kube.free_port
    calls = []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]

        def free_port() -> int:
            calls.append(1)
            # calls 1-2: etcd client+peer; call 3: the apiserver's first try
            return busy if len(calls) == 3 else real_free_port()

        monkeypatch.setattr(kube, "free_port", free_port)
        with ControlPlane(kubeconfig=None) as cp:
            assert cp.server_url != f"https://127.0.0.1:{busy}"
            assert "address already in use" in cp.log_paths["kube-apiserver"].read_text()
            assert cp.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    assert len(calls) == 4


@local_only
def test_missing_binary_fails_with_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "kube-apiserver"
    monkeypatch.setenv("KUBE_APISERVER_BIN", str(missing))
    with pytest.raises(ControlPlaneError, match="is not an executable file") as info:
        ControlPlane(kubeconfig=None).start()
    assert str(missing) in str(info.value)


def test_helm_talks_to_the_cluster(control_plane: ControlPlane, namespace: str) -> None:
    assert control_plane.helm("version", "--short").stdout.startswith("v4.")
    releases = json.loads(control_plane.helm("list", "-n", namespace, "-o", "json").stdout)
    assert releases == []
    # helm reads release records (Secrets) with the caller's identity: RBAC applies.
    nobody = control_plane.create_user(f"nobody-{secrets.token_hex(3)}")
    denied = control_plane.helm("list", "-n", namespace, user=nobody, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


def test_kube_tools_script_is_idempotent() -> None:
    script = Path(__file__).resolve().parents[2] / "hack" / "kube-tools.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600, check=True)
    values = {k: shlex.split(v)[0] for k, v in (line.split("=", 1) for line in proc.stdout.splitlines())}
    assert set(values) == {"KUBECTL", "HELM"}
    helm = subprocess.run(
        [values["HELM"], "version", "--short"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert helm.stdout.startswith("v4.")
    kubectl = subprocess.run(
        [values["KUBECTL"], "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(kubectl.stdout)["clientVersion"]["major"] == "1"
