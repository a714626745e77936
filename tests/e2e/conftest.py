"""End-to-end tests against a real kube-apiserver (see tests/support/kube.py).

The session-scoped ``control_plane`` fixture starts etcd + kube-apiserver once
(about 3 s with cached binaries) or, with ``EDGEFLEET_KUBECONFIG`` set, uses
that existing cluster. A missing binary fails the session; nothing is skipped.

On a cold machine ``hack/k8s-bins.sh`` has to build the binaries (minutes) and
``hack/kube-tools.sh`` to fetch kubectl/helm: that happens once, after
collection, so that it does not count against any test's timeout.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kube import (
    ENV_EXTERNAL_KUBECONFIG,
    K8S_BINS_SCRIPT,
    ControlPlane,
    ControlPlaneError,
    find_binaries,
    find_tools,
)

HERE = Path(__file__).resolve().parent
_prepare_errors: list[ControlPlaneError] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    if not any(HERE in Path(str(item.path)).parents for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(msg: str) -> None:
        if reporter is not None:
            reporter.write_line(msg)

    t0 = time.monotonic()
    try:
        if not os.environ.get(ENV_EXTERNAL_KUBECONFIG):
            check = ["bash", str(K8S_BINS_SCRIPT), "--check"]
            if subprocess.run(check, capture_output=True, check=False).returncode != 0:
                say("e2e: building kube-apiserver/etcd (hack/k8s-bins.sh; minutes, once a machine)")
            find_binaries(build=True)
        find_tools()
    except ControlPlaneError as exc:
        # Not raised here (that would be a pytest INTERNALERROR): every e2e
        # test fails with this reason instead, without trying again.
        _prepare_errors.append(exc)
        say(f"e2e: cannot prepare the control plane: {exc}")
        return
    if time.monotonic() - t0 > 5:
        say(f"e2e: binaries and tools ready in {time.monotonic() - t0:.0f}s")


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    if _prepare_errors:
        raise _prepare_errors[0]
    with ControlPlane() as cp:
        yield cp


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace per test (no namespace controller runs locally, so
    deletion only matters on an external cluster)."""
    name = f"e2e-{secrets.token_hex(4)}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
