"""Host access through the virtual pod ``host-<device>``: kubectl exec runs on the device itself.

The pod exists only while the EdgeDevice has ``features.hostExec``; who may
``create pods/exec`` in its namespace may use it (RBAC through the real
apiserver), and the device must allow host exec too.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import subprocess
import threading
import time

from tests.fleet import edgedevices as ed
from tests.fleet.conftest import wait_until
from tests.fleet.edgedevices import node_or_none, ready
from tests.fleet.test_pods import node_containers
from tests.support.kube import kubectl_path

edgedevice_crd, edgedevices, registry_broker = ed.edgedevice_crd, ed.edgedevices, ed.registry_broker
registry_fleet, registry_agent = ed.registry_fleet, ed.registry_agent


def host_pod(control_plane, namespace: str, device: str) -> dict | None:
    proc = control_plane.kubectl(
        "get", "pod", f"host-{device}", "-n", namespace, "-o", "json", "--ignore-not-found", check=False
    )
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


def phase(pod: dict | None) -> str | None:
    return (pod or {}).get("status", {}).get("phase")


def set_host_exec(control_plane, device: str, on: bool) -> None:
    patch = {"spec": {"features": {"hostExec": on}}}
    control_plane.kubectl("patch", "edgedevice", device, "--type=merge", "-p", json.dumps(patch))


def test_kubectl_exec_runs_on_the_host_for_whom_rbac_allows(
    control_plane, registry_fleet, registry_agent, edgedevices, docker_host
):
    ns = registry_fleet.host_namespace
    device = edgedevices(f"edge-host-{secrets.token_hex(3)}", {"features": {"hostExec": True}})
    registry_agent(device, host_exec=True)
    pod = wait_until(
        lambda: (p := host_pod(control_plane, ns, device)) and phase(p) == "Running" and p,
        timeout=40,
        what="host pod Running",
    )
    assert pod["spec"]["nodeName"] == device
    assert pod["metadata"]["labels"]["edgefleet.io/host-pod"] == "true"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["host"]

    out = control_plane.kubectl("exec", "-n", ns, f"host-{device}", "--", "uname", "-a").stdout
    assert out == subprocess.run(["uname", "-a"], capture_output=True, text=True, check=True).stdout
    echoed = control_plane.kubectl("exec", "-i", "-n", ns, f"host-{device}", "--", "cat", input="over stdin\n")
    assert echoed.stdout == "over stdin\n"
    failed = control_plane.kubectl("exec", "-n", ns, f"host-{device}", "--", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3, failed.stderr
    assert node_containers(docker_host, device) == []  # PodSync never sent the virtual pod to the device

    user = control_plane.create_user(f"operator-{secrets.token_hex(3)}")
    denied = control_plane.kubectl("exec", "-n", ns, f"host-{device}", "--", "true", user=user, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower(), denied.stderr

    control_plane.kubectl(
        "create", "role", "host-exec", "-n", ns, "--verb=get", "--resource=pods", "--resource-name", f"host-{device}"
    )
    control_plane.kubectl("create", "role", "host-exec-sub", "-n", ns, "--verb=create", "--resource=pods/exec")
    for role in ("host-exec", "host-exec-sub"):
        control_plane.kubectl("create", "rolebinding", role, "-n", ns, f"--role={role}", f"--user={user.name}")

    def allowed() -> str:
        proc = control_plane.kubectl(
            "exec", "-n", ns, f"host-{device}", "--", "echo", "granted", user=user, check=False
        )
        return proc.stdout

    assert wait_until(allowed, timeout=15, what="exec allowed after the RoleBinding") == "granted\n"


def test_host_pod_follows_the_feature_and_the_device(control_plane, registry_fleet, registry_agent, edgedevices):
    ns = registry_fleet.host_namespace
    device = edgedevices(f"edge-feat-{secrets.token_hex(3)}")
    _name, agent = registry_agent(device, host_exec=True)
    wait_until(lambda: ready(node_or_none(control_plane, device)) == "True", timeout=40, what="node Ready")
    time.sleep(2)  # two registry polls: a host pod would have appeared by now
    assert host_pod(control_plane, ns, device) is None

    set_host_exec(control_plane, device, True)
    wait_until(lambda: phase(host_pod(control_plane, ns, device)) == "Running", timeout=20, what="host pod")
    set_host_exec(control_plane, device, False)
    wait_until(lambda: host_pod(control_plane, ns, device) is None, timeout=20, what="host pod deleted")
    gone = control_plane.kubectl("exec", "-n", ns, f"host-{device}", "--", "true", check=False)
    assert gone.returncode != 0 and "not found" in gone.stderr.lower(), gone.stderr

    set_host_exec(control_plane, device, True)
    wait_until(lambda: phase(host_pod(control_plane, ns, device)) == "Running", timeout=20, what="host pod again")
    agent.stop()
    wait_until(lambda: phase(host_pod(control_plane, ns, device)) == "Pending", timeout=30, what="host pod offline")
    offline = control_plane.kubectl("exec", "-n", ns, f"host-{device}", "--", "true", check=False)
    assert offline.returncode != 0 and "offline" in offline.stderr, offline.stderr
    agent.start()
    wait_until(lambda: phase(host_pod(control_plane, ns, device)) == "Running", timeout=40, what="host pod back")

    control_plane.kubectl("delete", "edgedevice", device)
    wait_until(lambda: host_pod(control_plane, ns, device) is None, timeout=20, what="host pod gone with the device")


def test_device_that_does_not_allow_host_exec_refuses_it(control_plane, registry_fleet, registry_agent, edgedevices):
    ns = registry_fleet.host_namespace
    device = edgedevices(f"edge-nohost-{secrets.token_hex(3)}", {"features": {"hostExec": True}})
    registry_agent(device, host_exec=False)
    wait_until(lambda: phase(host_pod(control_plane, ns, device)) == "Running", timeout=40, what="host pod")
    refused = control_plane.kubectl("exec", "-n", ns, f"host-{device}", "--", "true", check=False)
    assert refused.returncode != 0
    assert "host_exec is not allowed" in refused.stderr, refused.stderr


def test_port_forward_to_the_host_pod_reaches_the_device_loopback(
    control_plane, registry_fleet, registry_agent, edgedevices
):
    """The agent runs on this machine, so the device's loopback is ours: a listener here is "on the device"."""
    ns = registry_fleet.host_namespace
    device = edgedevices(f"edge-hpf-{secrets.token_hex(3)}", {"features": {"hostExec": True, "hostPortForward": True}})
    registry_agent(device, host_pf=True)
    wait_until(lambda: phase(host_pod(control_plane, ns, device)) == "Running", timeout=40, what="host pod")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    target = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"from-the-host:" + conn.recv(100))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    cmd = [kubectl_path(), f"--kubeconfig={control_plane.kubeconfig_path}", "port-forward", "-n", ns,
           f"host-{device}", f":{target}"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=control_plane.kubectl_env()
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+) ->", line)
        assert match, line
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=20) as s:
            s.settimeout(20)
            s.sendall(b"ping")
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(100):
                got += chunk
        assert got == b"from-the-host:ping"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        listener.close()
        server.join(timeout=10)
