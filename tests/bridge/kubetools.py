"""Helpers to drive real kubectl (binary I/O, long-running processes, ptys) and
raw TLS clients against the bridge, every wait bounded."""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

from tests.support.kube import ControlPlane, kubectl_path


def kubectl_argv(cp: ControlPlane, *args: str) -> list[str]:
    return [kubectl_path(), f"--kubeconfig={cp.kubeconfig_path}", *args]


def kubectl_bytes(
    cp: ControlPlane, *args: str, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        kubectl_argv(cp, *args),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env=cp.kubectl_env(),
        check=False,
    )


class Background:
    """A long-running kubectl whose stdout lines are collected by a thread."""

    def __init__(self, cp: ControlPlane, *args: str) -> None:
        self.proc = subprocess.Popen(
            kubectl_argv(cp, *args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cp.kubectl_env(),
            start_new_session=True,
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.stderr = b""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def _read_err(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        while chunk := os.read(stream.fileno(), 4096):
            self.stderr += chunk

    def line(self, timeout: float = 20) -> bytes:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no output within {timeout}s; stderr: {self.stderr.decode(errors='replace')}"
            ) from None

    def wait(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtyKubectl:
    """kubectl on a pseudo-terminal, as a person would run it."""

    def __init__(self, cp: ControlPlane, *args: str, rows: int = 24, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        set_winsize(slave, rows, cols)
        self.proc = subprocess.Popen(
            kubectl_argv(cp, *args),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**cp.kubectl_env(), "TERM": "xterm"},
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.output = b""

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, pattern: bytes, timeout: float = 15) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.output)
            if match:
                self.output = self.output[match.end() :]
                return match
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen within {timeout}s; output so far: {self.output[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: kubectl exited and closed the terminal
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"kubectl exited ({self.proc.returncode}) before {pattern!r}: {self.output!r}")
                self.output += chunk

    def resize(self, rows: int, cols: int) -> None:
        set_winsize(self.master, rows, cols)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGWINCH)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        with contextlib.suppress(OSError):
            os.close(self.master)


def tls_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def raw_exchange(port: int, ctx: ssl.SSLContext, data: bytes, timeout: float = 10, until_close: bool = False) -> bytes:
    """Send ``data`` over TLS; read until the server closes (or a complete
    Content-Length response arrives); return what came back."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = tls.recv(65536)
            except (TimeoutError, ssl.SSLError, ConnectionError):
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length: *(\d+)", head)
            if not until_close and sep and m and len(body) >= int(m.group(1)):
                break
        return out


def status_code(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    assert m, f"not an HTTP response: {response[:200]!r}"
    return int(m.group(1))
