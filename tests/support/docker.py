"""A real Docker Engine for tests: ``hack/dockerd.sh`` starts it, ``hack/test-images.sh`` fills it.

Tests that need docker call ``ensure_dockerd()`` and ``ensure_test_images()``
(through fixtures). Both raise ``DockerUnavailable`` with the exact reason and
the script's output when they cannot deliver; fixtures turn that into a test
failure, never a skip: a machine where these tests silently skip would hide a
broken runtime layer.

``EDGEFLEET_DOCKER_HOST`` (or an explicit argument) points the tests at an
already running engine instead; nothing is started then.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERD_SCRIPT = REPO / "hack" / "dockerd.sh"
IMAGES_SCRIPT = REPO / "hack" / "test-images.sh"
BUSYBOX_IMAGE = "edgefleet/busybox:test"
START_TIMEOUT = 300.0  # may include apt-get install docker.io on a fresh machine


class DockerUnavailable(RuntimeError):
    """Docker could not be provided; the message says why, with the script output."""


def _run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except FileNotFoundError as exc:
        raise DockerUnavailable(f"cannot run {cmd[0]}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raw: str | bytes | None = exc.stderr
        stderr = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        raise DockerUnavailable(
            f"{' '.join(cmd)} did not finish within {timeout:.0f}s; stderr so far:\n{stderr}"
        ) from exc
    if done.returncode != 0:
        raise DockerUnavailable(
            f"{' '.join(cmd)} failed with exit code {done.returncode}\n"
            f"--- stderr ---\n{done.stderr.strip()}\n--- stdout ---\n{done.stdout.strip()}"
        )
    return done.stdout


def ensure_dockerd() -> str:
    """The DOCKER_HOST of a running engine, starting the private one if needed."""
    preset = os.environ.get("EDGEFLEET_DOCKER_HOST")
    if preset:
        return preset
    if os.geteuid() != 0:
        raise DockerUnavailable(
            f"starting dockerd needs root (uid {os.geteuid()}); run the tests as root or set "
            "EDGEFLEET_DOCKER_HOST to a running engine"
        )
    out = _run(["bash", str(DOCKERD_SCRIPT), "start"], timeout=START_TIMEOUT)
    for line in out.splitlines():
        if line.startswith("DOCKER_HOST="):
            return line.split("=", 1)[1].strip()
    raise DockerUnavailable(f"{DOCKERD_SCRIPT} start printed no DOCKER_HOST line:\n{out}")


def ensure_test_images(docker_host: str) -> list[str]:
    """Build the busybox test image(s) if missing; their names."""
    env = dict(os.environ, DOCKER_HOST=docker_host)
    out = _run(["bash", str(IMAGES_SCRIPT)], env=env, timeout=START_TIMEOUT)
    images = [line.strip() for line in out.splitlines() if line.strip()]
    if BUSYBOX_IMAGE not in images:
        raise DockerUnavailable(f"{IMAGES_SCRIPT} did not report {BUSYBOX_IMAGE}; it printed:\n{out}")
    return images
