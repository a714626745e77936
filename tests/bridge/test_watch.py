"""ChangeWatch against the real apiserver: wakes on a change, re-watches, and closes fast."""

from __future__ import annotations

import asyncio
import time
import uuid

import kubernetes

from cloud_bridge.watch import WATCH_SECONDS, ChangeWatch
from tests.support.kube import ControlPlane


def test_watch_wakes_on_change_and_closes_promptly(control_plane: ControlPlane) -> None:
    api = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig_path))
    core = kubernetes.client.CoreV1Api(api)
    ns = f"watch-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})

    async def scenario() -> tuple[bool, bool, bool, float, int]:
        watch = ChangeWatch(lambda **kw: core.list_namespaced_config_map(ns, **kw), "configmaps")
        watch.start()
        try:
            # The initial watch reports what exists (here: the namespace's root CA ConfigMap, maybe).
            await watch.wait(2)
            idle = await watch.wait(0.5)  # nothing changes: no wake-up
            await asyncio.to_thread(core.create_namespaced_config_map, ns, {"metadata": {"name": "one"}})
            created = await watch.wait(10)
            await asyncio.to_thread(core.delete_namespaced_config_map, "one", ns)
            deleted = await watch.wait(10)
        finally:
            started = time.monotonic()
            await watch.close()
            closed_in = time.monotonic() - started
        return idle, created, deleted, closed_in, watch.errors

    try:
        idle, created, deleted, closed_in, errors = asyncio.run(scenario())
    finally:
        core.delete_namespace(ns)
    assert not idle
    assert created and deleted
    assert closed_in < min(3.0, WATCH_SECONDS / 2), closed_in
    assert errors == 0
