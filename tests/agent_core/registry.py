"""A real image registry for pull tests: Debian's ``docker-registry`` (distribution 2.x) on loopback.

Listens on ``127.0.0.1:<free port>`` with its own storage directory; dockerd
treats 127.0.0.0/8 registries as insecure, so plain HTTP works with no daemon
configuration. ``hack/setup --all`` installs the package.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker

REGISTRY_BINARIES = ("docker-registry", "registry")


class RegistryUnavailable(RuntimeError):
    """The registry could not be started; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary() -> str:
    for name in REGISTRY_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise RegistryUnavailable("no docker-registry binary on PATH (Debian package docker-registry; hack/setup --all)")


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/v2/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def running_registry(workdir: Path, *, timeout: float = 30.0) -> Iterator[str]:
    """Run a registry until the block ends; yields its address ``127.0.0.1:<port>``."""
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log_path = workdir / "registry.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([_binary(), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RegistryUnavailable(
                    f"registry on 127.0.0.1:{port} did not come up (exit code {proc.poll()}):\n{log_path.read_text()}"
                )
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def push_unique_image(docker_host: str, base: str, ref: str, *, blob_bytes: int = 4_000_000) -> None:
    """Build ``base`` plus a layer of random bytes as ``ref``, push it, and remove it locally.

    The random layer exists nowhere else, so a later pull really downloads it
    (and reports byte progress) instead of finding every layer already present.
    """
    dockerfile = f"FROM {base}\nCOPY blob /blob\n".encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile), ("blob", os.urandom(blob_bytes))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    api = docker.APIClient(base_url=docker_host, timeout=120)
    try:
        repo, _, tag = ref.rpartition(":")
        for message in api.build(fileobj=context, custom_context=True, tag=ref, rm=True, forcerm=True, decode=True):
            if "error" in message:
                raise RuntimeError(f"building {ref} failed: {message['error']}")
        for message in api.push(repo, tag=tag, stream=True, decode=True):
            if "error" in message:
                raise RuntimeError(f"pushing {ref} failed: {message['error']}")
        api.remove_image(ref, force=True)
    finally:
        api.close()
