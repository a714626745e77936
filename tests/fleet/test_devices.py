"""A real agent joins through mosquitto and becomes a Node; stopping it makes the Node NotReady."""

from __future__ import annotations

import signal
import time

from tests.fleet.conftest import wait_until


def ready_status(control_plane, node: str) -> str:
    obj = control_plane.kubectl_json("get", "node", node)
    return next(c["status"] for c in obj["status"]["conditions"] if c["type"] == "Ready")


def test_agent_becomes_ready_node_then_not_ready(control_plane, fleet_bridge, start_agent):
    node, agent = start_agent()
    wait_until(lambda: ready_status(control_plane, node) == "True", timeout=30, what="node Ready")
    row = control_plane.kubectl("get", "node", node, "--no-headers").stdout
    assert " Ready " in f" {row} "
    lease = control_plane.kubectl_json("get", "lease", "-n", "kube-node-lease", node)
    assert lease["spec"]["holderIdentity"] == node
    agent.stop()
    wait_until(lambda: ready_status(control_plane, node) == "False", timeout=20, what="node NotReady")
    assert "NotReady" in control_plane.kubectl("get", "node", node, "--no-headers").stdout


def test_killed_agent_goes_not_ready_and_comes_back(control_plane, fleet_bridge, start_agent):
    """SIGKILL: no goodbye; the broker's will (or the session's idle timeout) must still bring NotReady."""
    node, agent = start_agent()
    wait_until(lambda: ready_status(control_plane, node) == "True", timeout=30, what="node Ready")
    agent.stop(signal.SIGKILL)
    started = time.monotonic()
    wait_until(lambda: ready_status(control_plane, node) == "False", timeout=45, what="node NotReady after SIGKILL")
    print(f"NotReady {time.monotonic() - started:.1f}s after SIGKILL")
    agent.start()
    wait_until(lambda: ready_status(control_plane, node) == "True", timeout=30, what="node Ready again")
