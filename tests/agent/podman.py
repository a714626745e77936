"""A private Podman API service for tests: its own socket, storage, run and config dirs.

``podman system service`` serves Podman's Docker-compatible API on
``unix://<dir>/podman.sock``; everything it stores lives under ``<dir>``, so
it neither sees nor touches a system podman. Settings (``containers.conf``),
and why:

* cgroup manager ``cgroupfs``, events to a file: there is no systemd here;
* storage driver ``vfs``: no mounts that could outlive the service (the
  busybox image is 2 MB, copying it per container is cheap);
* a network of our own (``edgefleet``: a CNI bridge ``efp<pid>x<n>`` with
  host-local addresses from a 172.30.x.0/24, no masquerading, firewall or
  portmap plugins) instead of podman's default (``cni-podman0`` plus iptables
  chains that would outlive the test); the bridge is deleted at the end;
* ``default_ulimits`` below the caller's hard limits: as root podman asks
  for nofile/nproc limits above them, which fails without CAP_SYS_RESOURCE
  ("error setting rlimit type 7: operation not permitted").

The test image is the busybox root filesystem of ``hack/test-images.sh
--rootfs``, ``podman import``ed as ``docker.io/edgefleet/busybox:test`` (the
compat API resolves the short name ``edgefleet/busybox:test`` to docker.io).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from edge_agent.runtime._docker_http import EngineClient

REPO = Path(__file__).resolve().parents[2]
IMAGE = "docker.io/edgefleet/busybox:test"


class PodmanUnavailable(RuntimeError):
    """Podman could not be started; the message says why."""


def _limit(kind: int, cap: int = 16384) -> str:
    # Podman lowers its own limits at start-up (nproc to 32768 here), so stay well below the caller's.
    hard = resource.getrlimit(kind)[1]
    value = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    return f"{value}:{value}"


_instances = itertools.count()


def _network_names() -> tuple[str, str]:
    """A bridge name and /24 prefix of our own: services of parallel test runs must not share them."""
    index = next(_instances)
    return f"efp{os.getpid()}x{index}"[:15], f"172.30.{(os.getpid() * 8 + index) % 200 + 20}"


def _conflist(base: Path, bridge: str, subnet: str) -> str:
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "edgefleet",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(base / "cni-ipam"),
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "ranges": [[{"subnet": f"{subnet}.0/24", "gateway": f"{subnet}.1"}]],
                    },
                }
            ],
        },
        indent=1,
    )


def _conf(base: Path) -> str:
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={_limit(resource.RLIMIT_NOFILE)}", "nproc={_limit(resource.RLIMIT_NPROC)}"]\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{base}/events.log"\n'
        "[network]\n"
        f'network_config_dir = "{base}/cni"\n'
        'default_network = "edgefleet"\n'
    )


class PodmanService:
    """``podman system service`` on its own socket; ``podman(...)`` runs the CLI on the same storage."""

    def __init__(self, base: Path, *, storage_driver: str = "vfs") -> None:
        self.base = base
        self.socket = base / "podman.sock"
        self.url = f"unix://{self.socket}"
        self.storage_driver = storage_driver
        self.bridge, self.subnet = _network_names()
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    def _flags(self) -> list[str]:
        return [
            "--root",
            str(self.base / "root"),
            "--runroot",
            str(self.base / "run"),
            "--storage-driver",
            self.storage_driver,
        ]

    def podman(self, *args: str, stdin: bytes | None = None, timeout: float = 120) -> str:
        done = subprocess.run(
            ["podman", *self._flags(), *args], input=stdin, capture_output=True, timeout=timeout, env=self.env
        )
        if done.returncode != 0:
            raise PodmanUnavailable(f"podman {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def start(self, timeout: float = 60) -> None:
        binary = shutil.which("podman")
        if binary is None:
            raise PodmanUnavailable("no podman on PATH (Debian package podman; hack/setup --all)")
        for sub in ("root", "run", "tmp", "cni"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        conf = self.base / "containers.conf"
        conf.write_text(_conf(self.base))
        (self.base / "cni" / "edgefleet.conflist").write_text(_conflist(self.base, self.bridge, self.subnet))
        self.env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.base),
            "CONTAINERS_CONF": str(conf),
            "TMPDIR": str(self.base / "tmp"),
        }
        log = (self.base / "service.log").open("wb")
        with log:
            self.proc = subprocess.Popen(
                [binary, *self._flags(), "system", "service", "--time=0", self.url],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        client = EngineClient(self.url, api_version="1.41", timeout=2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.call("GET", "/_ping", versioned=False)
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log_text = (self.base / "service.log").read_text(errors="replace")
                    self.stop()
                    raise PodmanUnavailable(f"podman service did not come up:\n{log_text}") from None
                time.sleep(0.1)

    def import_test_image(self) -> str:
        rootfs = subprocess.run(
            ["bash", str(REPO / "hack" / "test-images.sh"), "--rootfs"], capture_output=True, check=True, timeout=300
        ).stdout
        self.podman(
            "import",
            "-c",
            'CMD ["/bin/sh"]',
            "-c",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "-c",
            "LABEL org.edgefleet.test-image=busybox",
            "-",
            IMAGE,
            stdin=rootfs,
        )
        return IMAGE

    def remove_labelled(self, key: str, value: str) -> None:
        ids = self.podman("ps", "-aq", "--filter", f"label={key}={value}").split()
        if ids:
            self.podman("rm", "-f", "-v", *ids)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(PodmanUnavailable, subprocess.TimeoutExpired):
                self.podman("rm", "-af", "-t", "0", timeout=60)
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        # conmon of an exec session lingers for its --exit-delay (300 s) after the container is gone.
        for pid in self._leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if Path(f"/sys/class/net/{self.bridge}").exists():
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)

    def _leftover_pids(self) -> list[int]:
        """Processes (conmon, podman cleanup) whose command line names our directory."""
        marker = str(self.base).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
        return pids


@contextlib.contextmanager
def podman_service() -> Iterator[PodmanService]:
    """A started service in a fresh short directory (podman wants a runroot under 50 characters)."""
    with tempfile.TemporaryDirectory(prefix="efpodman-") as base:
        service = PodmanService(Path(base))
        service.start()
        try:
            yield service
        finally:
            service.stop()
