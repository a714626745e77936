"""attach, port-forward, cp and logs with real kubectl through the real apiserver."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import socket
import threading
import time

from tests.bridge.harness import ServerThread
from tests.bridge.kubetools import Background, kubectl_bytes
from tests.support.kube import ControlPlane


def test_attach_echoes_stdin(control_plane: ControlPlane, namespace: str, pod: str) -> None:
    data = b"hello attach\n" * 1000
    proc = kubectl_bytes(control_plane, "attach", "-i", pod, "-n", namespace, "-c", "main", input=data, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data


def _forward(port: int, payload: bytes, results: dict[int, bytes], slot: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        received = bytearray()

        def reader() -> None:
            while chunk := sock.recv(65536):
                received.extend(chunk)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        t.join(30)
        results[slot] = bytes(received)


def test_port_forward_carries_concurrent_connections(
    control_plane: ControlPlane, namespace: str, pod: str, bridge: ServerThread
) -> None:
    bridge.call(bridge.provider.ports.__setitem__, 7000, bridge.echo_port)
    with Background(control_plane, "port-forward", "-n", namespace, f"pod/{pod}", ":7000") as pf:
        line = pf.line()
        match = re.match(rb"Forwarding from 127\.0\.0\.1:(\d+) -> 7000", line)
        assert match, line
        local = int(match.group(1))

        payloads = [os.urandom(256 * 1024 + i) for i in range(6)]
        results: dict[int, bytes] = {}
        threads = [
            threading.Thread(target=_forward, args=(local, p, results, i), daemon=True) for i, p in enumerate(payloads)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for i, p in enumerate(payloads):
            assert hashlib.sha256(results.get(i, b"")).digest() == hashlib.sha256(p).digest(), f"connection {i}"

        # And one more afterwards on the same kubectl session.
        again: dict[int, bytes] = {}
        _forward(local, b"ping", again, 0)
        assert again[0] == b"ping"
        assert pf.proc.poll() is None, pf.stderr


def test_cp_both_ways(control_plane: ControlPlane, namespace: str, pod: str, bridge: ServerThread, tmp_path) -> None:
    remote_dir = bridge.workdir / "cp"
    remote_dir.mkdir(exist_ok=True)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(2 * 1024 * 1024 + 17))
    control_plane.kubectl("cp", str(upload), f"{namespace}/{pod}:{remote_dir}/uploaded.bin", "-c", "main")
    assert (remote_dir / "uploaded.bin").read_bytes() == upload.read_bytes()

    (remote_dir / "download.bin").write_bytes(os.urandom(1024 * 1024 + 3))
    target = tmp_path / "downloaded.bin"
    control_plane.kubectl("cp", f"{namespace}/{pod}:{remote_dir}/download.bin", str(target), "-c", "main")
    assert target.read_bytes() == (remote_dir / "download.bin").read_bytes()


def test_logs_with_options(control_plane: ControlPlane, namespace: str, pod: str, bridge: ServerThread) -> None:
    p = bridge.provider
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    bridge.call(p.append_log, namespace, pod, "main", b"old line\n", old)
    for i in range(1, 6):
        bridge.call(p.append_log, namespace, pod, "main", f"line {i}\n".encode())

    def logs(*args: str) -> str:
        return control_plane.kubectl("logs", pod, "-n", namespace, "-c", "main", *args).stdout

    assert logs() == "old line\n" + "".join(f"line {i}\n" for i in range(1, 6))
    assert logs("--tail=2") == "line 4\nline 5\n"
    assert logs("--since=1h") == "".join(f"line {i}\n" for i in range(1, 6))
    assert logs("--limit-bytes=10") == "old line\nl"
    stamped = logs("--timestamps", "--tail=1").splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z line 5", stamped[0]), stamped


def test_logs_follow(control_plane: ControlPlane, namespace: str, pod: str, bridge: ServerThread) -> None:
    p = bridge.provider
    bridge.call(p.append_log, namespace, pod, "sidecar", b"before\n")
    with Background(control_plane, "logs", "-f", pod, "-n", namespace, "-c", "sidecar") as follow:
        assert follow.line() == b"before\n"
        for i in range(3):
            time.sleep(0.1)
            bridge.call(p.append_log, namespace, pod, "sidecar", f"live {i}\n".encode())
            assert follow.line() == f"live {i}\n".encode()
        bridge.call(p.end_log, namespace, pod, "sidecar")
        assert follow.wait(20) == 0


def test_interrupted_logs_follow_releases_the_stream(
    control_plane: ControlPlane, namespace: str, pod: str, bridge: ServerThread
) -> None:
    p = bridge.provider
    bridge.call(p.append_log, namespace, pod, "main", b"tick\n")
    with Background(control_plane, "logs", "-f", "--tail=1", pod, "-n", namespace, "-c", "main") as follow:
        assert follow.line() == b"tick\n"
        assert bridge.call(lambda: p.followers) == 1
    deadline = time.monotonic() + 15
    while bridge.call(lambda: p.followers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bridge.call(lambda: p.followers) == 0
