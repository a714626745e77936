"""Real kubectl -> real kube-apiserver -> (SPDY) -> the bridge -> local processes."""

from __future__ import annotations

import hashlib
import os
import time

from tests.bridge.harness import ServerThread
from tests.bridge.kubetools import Background, PtyKubectl, kubectl_bytes
from tests.support.kube import ControlPlane


def test_exit_code_propagates_and_stderr_stays_separate(control_plane: ControlPlane, namespace: str, pod: str) -> None:
    script = "echo out; echo err >&2; exit 3"
    proc = control_plane.kubectl("exec", pod, "-n", namespace, "-c", "main", "--", "sh", "-c", script, check=False)
    assert proc.returncode == 3, proc
    assert proc.stdout == "out\n"
    assert "err\n" in proc.stderr and "out" not in proc.stderr
    assert "command terminated with exit code 3" in proc.stderr

    ok = control_plane.kubectl("exec", pod, "-n", namespace, "-c", "sidecar", "--", "echo", "hello")
    assert ok.stdout == "hello\n"


def test_large_output_arrives_intact(
    control_plane: ControlPlane, namespace: str, pod: str, bridge: ServerThread
) -> None:
    data = os.urandom(5 * 1024 * 1024)
    (bridge.workdir / "big.bin").write_bytes(data)
    proc = kubectl_bytes(control_plane, "exec", pod, "-n", namespace, "-c", "main", "--", "cat", "big.bin")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) == len(data)
    assert hashlib.sha256(proc.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


def test_stdin_is_piped_through(control_plane: ControlPlane, namespace: str, pod: str) -> None:
    data = os.urandom(3 * 1024 * 1024)
    proc = kubectl_bytes(control_plane, "exec", "-i", pod, "-n", namespace, "-c", "main", "--", "cat", input=data)
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(proc.stdout).digest() == hashlib.sha256(data).digest()

    # More than the per-stream buffer, into a consumer that only answers at EOF.
    big = os.urandom(9 * 1024 * 1024)
    proc = kubectl_bytes(control_plane, "exec", "-i", pod, "-n", namespace, "-c", "main", "--", "sha256sum", input=big)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0].decode() == hashlib.sha256(big).hexdigest()


def test_interactive_tty_with_resize(
    control_plane: ControlPlane, namespace: str, pod: str, bridge: ServerThread
) -> None:
    term = PtyKubectl(control_plane, "exec", "-it", pod, "-n", namespace, "-c", "main", "--", "sh", rows=30, cols=100)
    try:
        term.send(b"echo hi-$((6*7))\r")
        term.expect(rb"hi-42")
        term.send(b"stty size\r")
        term.expect(rb"30 100")

        term.resize(40, 120)
        for _ in range(20):  # the resize travels asynchronously: ask until it shows
            term.send(b"stty size | tr ' ' x\r")
            if term.expect(rb"(\d+)x(\d+)").group(0) == b"40x120":
                break
        else:
            raise AssertionError("the resize never reached the remote terminal")
        assert (120, 40) in {(s.width, s.height) for s in bridge.call(lambda: list(bridge.provider.resizes))}

        term.send(b"exit 7\r")
        assert term.proc.wait(20) == 7
    finally:
        term.close()


def test_interrupted_kubectl_stops_the_remote_command(
    control_plane: ControlPlane, namespace: str, pod: str, bridge: ServerThread
) -> None:
    provider = bridge.provider
    with Background(control_plane, "exec", pod, "-n", namespace, "-c", "main", "--", "sleep", "300") as kubectl:
        wait_until(lambda: bridge.call(lambda: len(provider.running)) == 1, "the command to start")
        kubectl.stop()  # SIGTERM, like Ctrl-C
    wait_until(lambda: bridge.call(lambda: len(provider.running)) == 0, "the command to be killed")


def wait_until(probe, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
