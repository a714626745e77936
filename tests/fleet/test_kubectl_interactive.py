"""``kubectl exec -it`` on a real pty and ``kubectl cp`` both ways, end to end:
real kubectl -> real apiserver -> the bridge's kubelet API (SPDY) -> MQTT ->
real agent -> docker (edgefleet/busybox:test, busybox ``sh``/``tar``)."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from pathlib import Path

import pytest

from tests.fleet.conftest import wait_until
from tests.fleet.test_pods import IMAGE, create_pod, pod_json
from tests.support.kube import kubectl_path
from tests.support.terminal import PtyProcess

PROMPT = re.compile(rb"/\S* # ")
"""busybox ash's root prompt (it is followed by terminal queries/redraws, so no end anchor)."""
SIZE = re.compile(rb"\r\n(\d+) (\d+)\r\n")


@pytest.fixture
def shell_pod(control_plane, fleet_bridge, start_agent):
    """A running pod (one ``sleep`` container) on a fresh device; (namespace, pod)."""
    node, _agent = start_agent()
    wait_until(lambda: control_plane.kubectl_json("get", "node", node), timeout=30, what="node")
    ns = f"fleet-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    container = {"name": "main", "image": IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}
    create_pod(control_plane, ns, node, "box", [container])
    wait_until(
        lambda: pod_json(control_plane, ns, "box")["status"].get("phase") == "Running", timeout=60, what="Running"
    )
    return ns, "box"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under ``root``."""
    return {str(p.relative_to(root)): sha256(p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def pod_digests(control_plane, ns: str, pod: str, root: str) -> dict[str, str]:
    """The same, computed inside the pod with busybox ``find``/``sha256sum``."""
    script = f"cd {root} && find . -type f -exec sha256sum {{}} +"
    out = control_plane.kubectl("exec", pod, "-n", ns, "--", "sh", "-c", script).stdout
    digests = {}
    for line in out.splitlines():
        digest, name = line.split(maxsplit=1)
        digests[name.removeprefix("./")] = digest
    return digests


def kubectl_cp(control_plane, src: str, dst: str) -> None:
    control_plane.kubectl("cp", src, dst, timeout=180)


def stty_size(term: PtyProcess, want: tuple[int, int], timeout: float) -> tuple[int, int]:
    """Run ``stty size`` until it reports ``want`` (a resize travels asynchronously); the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        # No check of the echo here: a resize makes ash redraw the line, maybe mid-word.
        term.write(b"stty size\r")
        match = term.expect(SIZE, 10)
        term.expect(PROMPT, 10)
        seen = (int(match.group(1)), int(match.group(2)))
        if seen == want or time.monotonic() > deadline:
            return seen
        time.sleep(0.3)


def test_exec_interactive_shell_on_a_pty(control_plane, shell_pod):
    """Typing, echo, a window resize seen by ``stty size`` inside, and ``exit 3`` as kubectl's exit code."""
    ns, pod = shell_pod
    cmd = [kubectl_path(), f"--kubeconfig={control_plane.kubeconfig_path}", "exec", "-it", "-n", ns, pod, "--", "sh"]
    with PtyProcess(cmd, env=control_plane.kubectl_env(), rows=30, cols=100) as term:
        term.expect(PROMPT, 30)
        # kubectl sends the pty's size when the session starts; it reaches the shell asynchronously.
        assert stty_size(term, (30, 100), timeout=15) == (30, 100), "the initial window size must reach the pod"

        term.write(b"echo marker-$((6*7))\r")
        term.expect(b"echo marker-$((6*7))", 10)  # the remote TTY echoes what we typed
        term.expect(b"\r\nmarker-42\r\n", 10)  # ... then the command's output (CRLF: a TTY's onlcr)
        term.expect(PROMPT, 10)

        term.resize(50, 140)
        assert stty_size(term, (50, 140), timeout=15) == (50, 140), "a resize must reach the pod"

        term.write(b"exit 3\r")
        term.expect(b"exit 3", 10)
        term.read_until_eof(30)
        assert term.wait(30) == 3, bytes(term.output)


def test_cp_file_and_directory_into_the_pod(control_plane, shell_pod, tmp_path):
    ns, pod = shell_pod
    blob = os.urandom(3 * 1024 * 1024 + 12345)
    (tmp_path / "blob.bin").write_bytes(blob)
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    files = {
        "a.bin": os.urandom(200_000),
        "empty": b"",
        "text.txt": b"line one\nline two\n",
        "sub/b.bin": os.urandom(1024 * 1024),
        "sub/deeper/c.bin": os.urandom(7),
        "sub/deeper/all-bytes": bytes(range(256)) * 64,
    }
    for name, data in files.items():
        (tree / name).write_bytes(data)

    kubectl_cp(control_plane, str(tmp_path / "blob.bin"), f"{ns}/{pod}:/tmp/blob.bin")
    kubectl_cp(control_plane, str(tree), f"{ns}/{pod}:/tmp/tree")

    assert pod_digests(control_plane, ns, pod, "/tmp") == {
        "blob.bin": sha256(blob),
        **{f"tree/{name}": sha256(data) for name, data in files.items()},
    }
    size = control_plane.kubectl("exec", pod, "-n", ns, "--", "stat", "-c", "%s", "/tmp/blob.bin").stdout
    assert int(size) == len(blob)


def test_cp_file_and_directory_out_of_the_pod(control_plane, shell_pod, tmp_path):
    """Content made inside the pod (not a round trip of ours) arrives byte-exact."""
    ns, pod = shell_pod
    script = (
        "head -c 4000000 /dev/urandom > /tmp/gen.bin && mkdir -p /tmp/out/x/y && "
        "head -c 500000 /dev/urandom > /tmp/out/one && head -c 1 /dev/urandom > /tmp/out/x/two && "
        ": > /tmp/out/x/empty && head -c 1048576 /dev/urandom > /tmp/out/x/y/three"
    )
    control_plane.kubectl("exec", pod, "-n", ns, "--", "sh", "-c", script)
    expected_file = pod_digests(control_plane, ns, pod, "/tmp")["gen.bin"]
    expected_tree = pod_digests(control_plane, ns, pod, "/tmp/out")
    assert len(expected_tree) == 4

    kubectl_cp(control_plane, f"{ns}/{pod}:/tmp/gen.bin", str(tmp_path / "gen.bin"))
    kubectl_cp(control_plane, f"{ns}/{pod}:/tmp/out", str(tmp_path / "out"))

    got = (tmp_path / "gen.bin").read_bytes()
    assert len(got) == 4_000_000
    assert sha256(got) == expected_file
    assert tree_digests(tmp_path / "out") == expected_tree
