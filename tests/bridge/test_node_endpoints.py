"""/healthz, /pods, /stats/summary, /metrics/resource through the apiserver's
node proxy (what metrics-server and `kubectl get --raw` use)."""

from __future__ import annotations

import json

from tests.support.kube import ControlPlane


def test_node_proxy_reaches_the_bridge(control_plane: ControlPlane, proxy_node: str, pod: str, namespace: str) -> None:
    base = f"/api/v1/nodes/{proxy_node}/proxy"
    assert control_plane.kubectl("get", "--raw", f"{base}/healthz").stdout == "ok"
    pods = json.loads(control_plane.kubectl("get", "--raw", f"{base}/pods").stdout)
    assert pods["kind"] == "PodList"
    assert {"namespace": namespace, "name": pod} in [
        {"namespace": p["metadata"]["namespace"], "name": p["metadata"]["name"]} for p in pods["items"]
    ]
    summary = json.loads(control_plane.kubectl("get", "--raw", f"{base}/stats/summary").stdout)
    assert summary["node"]["nodeName"] == "edgefleet-bridge"
    metrics = control_plane.kubectl("get", "--raw", f"{base}/metrics/resource").stdout
    assert "node_cpu_usage_seconds_total 12.5" in metrics
    missing = control_plane.kubectl("get", "--raw", f"{base}/no/such/thing", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr
