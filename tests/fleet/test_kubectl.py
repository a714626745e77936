"""Real kubectl -> real apiserver -> the bridge's kubelet API -> MQTT -> real agent -> docker."""

from __future__ import annotations

import os
import pty
import re
import secrets
import select
import socket
import subprocess
import time

import pytest

from tests.fleet.conftest import wait_until
from tests.fleet.test_pods import IMAGE, create_pod, pod_json
from tests.support.kube import kubectl_path


@pytest.fixture
def device_pod(control_plane, fleet_bridge, start_agent):
    node, agent = start_agent()
    wait_until(lambda: control_plane.kubectl_json("get", "node", node), timeout=30, what="node")
    ns = f"fleet-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    control_plane.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=greeting=hello-cm")
    container = {
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": [
            "sh",
            "-c",
            "mkdir -p /www; echo served-by-httpd > /www/index.html; echo log-$GREETING; httpd -f -p 8080 -h /www",
        ],
        "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}}],
        "ports": [{"containerPort": 8080}],
    }
    create_pod(control_plane, ns, node, "app", [container])
    wait_until(
        lambda: pod_json(control_plane, ns, "app")["status"].get("phase") == "Running", timeout=60, what="Running"
    )
    return ns, "app", agent


def test_logs(control_plane, device_pod):
    ns, pod, _ = device_pod
    out = wait_until(lambda: control_plane.kubectl("logs", pod, "-n", ns).stdout, timeout=20, what="logs")
    assert "log-hello-cm" in out


def test_exec_exit_code_and_stdin(control_plane, device_pod):
    ns, pod, _ = device_pod
    proc = control_plane.kubectl("exec", pod, "-n", ns, "--", "sh", "-c", "echo hi; exit 3", check=False)
    assert proc.stdout == "hi\n"
    assert proc.returncode == 3, proc.stderr
    data = "".join(f"line {i}\n" for i in range(2000))
    proc = control_plane.kubectl("exec", "-i", pod, "-n", ns, "--", "cat", input=data)
    assert proc.stdout == data


def test_port_forward_round_trip(control_plane, device_pod):
    ns, pod, _ = device_pod
    cmd = [kubectl_path(), f"--kubeconfig={control_plane.kubeconfig_path}", "port-forward", "-n", ns, pod, ":8080"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=control_plane.kubectl_env()
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+) ->", line)
        assert match, line
        port = int(match.group(1))
        for _ in range(2):  # two connections through one port-forward session
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                s.settimeout(20)
                s.sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
                body = b""
                while chunk := s.recv(65536):
                    body += chunk
            assert b"200" in body.split(b"\r\n")[0] and b"served-by-httpd" in body
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_exec_on_offline_device_fails_clearly(control_plane, device_pod):
    ns, pod, agent = device_pod
    agent.stop()
    # The node goes NotReady once the bridge sees the device gone.
    wait_until(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "False"
            for c in control_plane.kubectl_json("get", "node", pod_json(control_plane, ns, pod)["spec"]["nodeName"])[
                "status"
            ]["conditions"]
        ),
        timeout=20,
        what="NotReady",
    )
    started = time.monotonic()
    proc = control_plane.kubectl("exec", pod, "-n", ns, "--", "true", check=False, timeout=30)
    assert time.monotonic() - started < 10, "an offline device must fail fast"
    assert proc.returncode != 0
    assert "offline" in proc.stderr, proc.stderr


def test_device_not_found_reset_is_kubelet_not_found(control_plane, device_pod):
    """No previous container instance: the device RESETs 0x404, kubectl sees a 404 error."""
    ns, pod, _ = device_pod
    proc = control_plane.kubectl("logs", "--previous", pod, "-n", ns, check=False)
    assert proc.returncode != 0
    assert "NotFound" in proc.stderr or "not found" in proc.stderr.lower(), proc.stderr


def test_logs_follow_streams_until_the_client_leaves(control_plane, device_pod):
    ns, pod, _ = device_pod
    cmd = [kubectl_path(), f"--kubeconfig={control_plane.kubeconfig_path}", "logs", "-f", "-n", ns, pod]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=control_plane.kubectl_env()
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "log-hello-cm\n"
        time.sleep(0.5)
        assert proc.poll() is None, "follow must keep the stream open while the container runs"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_attach_with_stdin(control_plane, device_pod):
    """kubectl attach -i to a ``cat`` main process (stdinOnce): input echoes back, then it exits."""
    ns, pod, _ = device_pod
    node = pod_json(control_plane, ns, pod)["spec"]["nodeName"]
    cat = {"name": "main", "image": IMAGE, "imagePullPolicy": "Never", "command": ["cat"], "stdin": True}
    cat["stdinOnce"] = True
    create_pod(control_plane, ns, node, "att", [cat], restartPolicy="OnFailure")
    wait_until(lambda: pod_json(control_plane, ns, "att")["status"].get("phase") == "Running", timeout=60, what="att")
    proc = control_plane.kubectl("attach", "-i", "att", "-n", ns, input="ping\n", check=False, timeout=60)
    assert "ping" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)


def test_exec_with_tty(control_plane, device_pod):
    """kubectl exec -it on a real pty: the command runs on a TTY (the terminal size is not checked)."""
    ns, pod, _ = device_pod
    master, slave = pty.openpty()
    cmd = [kubectl_path(), f"--kubeconfig={control_plane.kubeconfig_path}", "exec", "-it", "-n", ns, pod, "--"]
    cmd += ["sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty"]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=control_plane.kubectl_env())
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the pty
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=10) == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
    text = out.decode(errors="replace").replace("\r", "")
    assert "on-a-tty\n" in text, text
