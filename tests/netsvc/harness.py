"""A device in its own network namespace, a "cluster pod" address on the host, and servers behind it.

* ``DeviceNetns``: ``ip netns`` + a veth pair on a private /30 (10.250.N.0/30,
  host .1, device .2). The device has no default route: it reaches nothing
  on the host but the broker listener on the veth address, so whatever it
  gets from the cluster came through MQTT. ``/etc/netns/<name>/hosts`` is the
  device's ``/etc/hosts`` (``ip netns exec`` bind-mounts it there).
* ``HostAddress``: an interface on the host holding 10.251.N.1/32, the
  address the Service's Endpoints point at (the apiserver refuses loopback
  endpoints).
* ``TcpServers``: echo and greeting servers on that address (threads).
* ``NetnsAgent``: ``ip netns exec <ns> python -m edge_agent`` (or on the host).

Everything is removed in ``close()``, also after a failed test.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from tests.support.waiting import wait_until  # noqa: F401 - re-exported for the tests here

REPO = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("client.py")


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


def _used_octets(prefix: str) -> set[int]:
    out = sh("ip", "-4", "-o", "addr", "show").stdout
    used = set()
    for line in out.splitlines():
        for word in line.split():
            if word.startswith(prefix):
                with contextlib.suppress(ValueError, IndexError):
                    used.add(int(word[len(prefix) :].split(".")[0]))
    return used


class DeviceNetns:
    def __init__(self) -> None:
        tag = os.urandom(3).hex()
        self.name = f"efdev-{tag}"
        self.host_if = f"efh-{tag}"
        self.dev_if = f"efd-{tag}"
        free = sorted(set(range(1, 255)) - _used_octets("10.250."))
        octet = random.choice(free)
        self.host_ip = f"10.250.{octet}.1"
        self.device_ip = f"10.250.{octet}.2"
        self.etc = Path("/etc/netns") / self.name
        self.hosts_file = self.etc / "hosts"

    def open(self) -> DeviceNetns:
        try:
            sh("ip", "netns", "add", self.name)
            sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.dev_if)
            sh("ip", "link", "set", self.dev_if, "netns", self.name)
            sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            sh("ip", "link", "set", self.host_if, "up")
            self.run("ip", "addr", "add", f"{self.device_ip}/30", "dev", self.dev_if)
            self.run("ip", "link", "set", self.dev_if, "up")
            self.run("ip", "link", "set", "lo", "up")
            self.etc.mkdir(parents=True, exist_ok=True)
            self.hosts_file.write_text("127.0.0.1\tlocalhost\n")
        except BaseException:
            self.close()
            raise
        return self

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *args, check=check, timeout=timeout)

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def links(self) -> str:
        return self.run("ip", "-o", "link", "show").stdout

    def close(self) -> None:
        # Deleting the namespace deletes the veth end inside it, and with it the pair.
        sh("ip", "netns", "delete", self.name, check=False)
        sh("ip", "link", "delete", self.host_if, check=False)
        shutil.rmtree(self.etc, ignore_errors=True)

    def __enter__(self) -> DeviceNetns:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


class HostAddress:
    """A link on the host with one /32: where the "pods" behind a Service listen."""

    def __init__(self) -> None:
        self.ifname = f"efc-{os.urandom(3).hex()}"
        free = sorted(set(range(1, 255)) - _used_octets("10.251."))
        self.ip = f"10.251.{random.choice(free)}.1"

    def __enter__(self) -> HostAddress:
        try:
            # An empty bridge, not a dummy: some kernels (this CI's) have no dummy driver.
            sh("ip", "link", "add", self.ifname, "type", "bridge")
            sh("ip", "addr", "add", f"{self.ip}/32", "dev", self.ifname)
            sh("ip", "link", "set", self.ifname, "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        sh("ip", "link", "delete", self.ifname, check=False)

    def __exit__(self, *exc: object) -> None:
        self.close()


GREETING = b"hello from the cluster\n"


class TcpServers:
    """``echo`` (bytes back until EOF, then close), ``greet`` (one line, then close) and ``sink``
    (count until EOF, answer the count) on ``host``."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.connections: dict[str, int] = {"echo": 0, "greet": 0}
        self.open_connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.echo_port = self._listen(self._echo)
        self.greet_port = self._listen(self._greet)
        self.sink_port = self._listen(self._sink)

    def _listen(self, handler: object) -> int:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(128)
        sock.settimeout(0.2)
        self._listeners.append(sock)
        thread = threading.Thread(target=self._accept_loop, args=(sock, handler), daemon=True)
        thread.start()
        self._threads.append(thread)
        return sock.getsockname()[1]

    def _accept_loop(self, sock: socket.socket, handler: object) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=self._run, args=(conn, handler), daemon=True).start()

    def _run(self, conn: socket.socket, handler: object) -> None:
        with self._lock:
            self.open_connections.add(conn)
        try:
            handler(conn)  # type: ignore[operator]
        except OSError:
            pass
        finally:
            with self._lock:
                self.open_connections.discard(conn)
            conn.close()

    def _echo(self, conn: socket.socket) -> None:
        self.connections["echo"] += 1
        while data := conn.recv(256 * 1024):
            conn.sendall(data)

    def _sink(self, conn: socket.socket) -> None:
        """Count bytes until EOF, answer with the count in ASCII."""
        total = 0
        while data := conn.recv(1024 * 1024):
            total += len(data)
        conn.sendall(str(total).encode())

    def _greet(self, conn: socket.socket) -> None:
        self.connections["greet"] += 1
        conn.sendall(GREETING)

    def open_count(self) -> int:
        with self._lock:
            return len(self.open_connections)

    def close(self) -> None:
        self._stop.set()
        for sock in self._listeners:
            sock.close()
        with self._lock:
            for conn in list(self.open_connections):
                with contextlib.suppress(OSError):
                    conn.close()
        for thread in self._threads:
            thread.join(5)


def agent_toml(
    *,
    name: str,
    data_dir: Path,
    broker_url: str,
    interface: str,
    hosts_file: Path,
    log_level: str = "debug",
    runtime: str = "process",
    runtime_socket: str | None = None,
) -> str:
    socket_line = f'socket = "{runtime_socket}"' if runtime_socket else ""
    return f"""
[device]
name = "{name}"
data_dir = "{data_dir}"
heartbeat_seconds = 1
log_level = "{log_level}"
[broker]
urls = ["{broker_url}"]
reconnect_max_seconds = 0.5
[runtime]
kind = "{runtime}"
{socket_line}
[pods]
backoff_initial_seconds = 1
poll_seconds = 0.5
[services]
enabled = true
interface = "{interface}"
hosts_file = "{hosts_file}"
"""


class NetnsAgent:
    """A real ``python -m edge_agent`` with services enabled, in ``netns`` (None: the host)."""

    def __init__(
        self,
        *,
        name: str,
        workdir: Path,
        broker_url: str,
        interface: str,
        hosts_file: Path,
        netns: DeviceNetns | None = None,
        log_level: str = "debug",
        runtime: str = "process",
        runtime_socket: str | None = None,
    ) -> None:
        """``runtime``/``runtime_socket``: ``[runtime] kind`` and ``socket`` (docker: pods get their own hosts file)."""
        self.name = name
        self.netns = netns
        self.interface = interface
        self.hosts_file = hosts_file
        data = self.data_dir = workdir / name
        data.mkdir(parents=True, exist_ok=True)
        self.config = workdir / f"{name}.toml"
        self.config.write_text(
            agent_toml(
                name=name,
                data_dir=data,
                broker_url=broker_url,
                interface=interface,
                hosts_file=hosts_file,
                log_level=log_level,
                runtime=runtime,
                runtime_socket=runtime_socket,
            )
        )
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NetnsAgent:
        prefix = self.netns.prefix() if self.netns else []
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "edge_agent", "--config", str(self.config)],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            # ``ip netns exec`` execs the command, so the pid is the agent's own.
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        code = self.proc.returncode
        self.proc = None
        return code

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def client(netns: DeviceNetns | None, *args: str, timeout: float = 60) -> dict[str, object]:
    """Run tests/netsvc/client.py (in ``netns``) and return its JSON answer."""
    prefix = netns.prefix() if netns else []
    proc = subprocess.run(
        [*prefix, sys.executable, str(CLIENT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"client {args} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)
