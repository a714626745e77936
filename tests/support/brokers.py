"""Start real MQTT brokers on free loopback ports with the project's configs.

Used by the integration tests and the benchmarks. Every broker is a child
process this module started; ``stop`` kills it, ``restart`` brings it back on
the same port (to test resume across a broker restart).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "broker-config"


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it if the test process dies."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Broker:
    """A broker child process; ``kind`` is ``mosquitto`` or ``amqtt``."""

    def __init__(self, kind: str, *, port: int | None = None, extra_config: str = "", anonymous: bool = True) -> None:
        if kind not in ("mosquitto", "amqtt"):
            raise ValueError(f"unknown broker kind {kind!r}")
        self.kind = kind
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra_config = extra_config
        self.anonymous = anonymous
        self.workdir = Path(tempfile.mkdtemp(prefix=f"edgefleet-{kind}-"))
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / "broker.log"

    def _command(self) -> list[str]:
        if self.kind == "mosquitto":
            exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            if not Path(exe).exists():
                raise RuntimeError("mosquitto is not installed (Debian package 'mosquitto'); .ci/run installs it")
            conf = self.workdir / "mosquitto.conf"
            # As root, mosquitto would switch to user 'mosquitto' and lose access to test files.
            run_as = "user root\n" if os.geteuid() == 0 else ""
            conf.write_text(
                f"listener {self.port} 127.0.0.1\n"
                f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
                "persistence false\n"
                f"{run_as}{self.extra_config}\n"
                f"include_dir {CONFIG / 'mosquitto' / 'conf.d'}\n"
            )
            return [exe, "-c", str(conf)]
        template = (CONFIG / "amqtt" / "amqtt.yaml").read_text()
        conf = self.workdir / "amqtt.yaml"
        conf.write_text(template.replace("127.0.0.1:1883", f"127.0.0.1:{self.port}") + self.extra_config)
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]

    def start(self) -> Broker:
        if self.proc is not None and self.proc.poll() is None:
            return self
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            self._command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        try:
            wait_for_port(self.port, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.kind} did not start; log:\n{self.log.read_text()[-2000:]}") from None
        return self

    def stop(self, *, hard: bool = True) -> None:
        """Kill the broker (SIGKILL by default: a crash, not a clean shutdown)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
