"""``--kubelet-hostname-suffix``: Nodes advertise ``<device><suffix>`` as their Hostname
address, the apiserver's node proxy connects to that name, and the Host header tells the
bridge which device a node-scoped request (``/stats/summary``) is for: no per-node ports.

Its own kube-apiserver, with the default preferred address types (Hostname first) and a
private ``/etc/hosts`` (a mount namespace of its own) that resolves the device names to
this machine's routable address; the bridge's serving cert is a wildcard for the suffix.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.bridge.conftest import BridgePki
from tests.fleet.conftest import fleet_bridge_config, start_device_agent, stop_device_agent, wait_until
from tests.fleet.harness import BridgeThread
from tests.support.brokers import Broker
from tests.support.kube import ControlPlane

SUFFIX = ".edge.test"


def private_hosts_prefix(hosts_file: Path) -> list[str]:
    """Run a command in its own mount namespace with ``hosts_file`` at /etc/hosts."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to give the apiserver its own /etc/hosts"
    return [
        unshare,
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$0" /etc/hosts && exec "$@"',
        str(hosts_file),
    ]


@pytest.fixture(scope="module")
def suffix_setup(
    bridge_pki: BridgePki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ControlPlane, Path, str]]:
    if len(bridge_pki.ips) < 2:
        pytest.skip("this machine has no non-loopback IPv4; the apiserver's node proxy refuses loopback")
    address = bridge_pki.ips[1]
    workdir = tmp_path_factory.mktemp("suffix")
    hosts = workdir / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n")  # device names are added as devices appear
    hosts.chmod(0o644)
    args = [f"--kubelet-certificate-authority={bridge_pki.ca.cert_path}"]  # default address types: Hostname first
    with ControlPlane(kubeconfig=None, apiserver_args=args, apiserver_prefix=private_hosts_prefix(hosts)) as cp:
        yield cp, hosts, address


def test_node_scoped_requests_find_the_device_by_host_name(
    suffix_setup: tuple[ControlPlane, Path, str], bridge_pki: BridgePki, docker_host: str, tmp_path: Path
) -> None:
    cp, hosts, address = suffix_setup
    wildcard = bridge_pki.ca.issue(
        "kubelet-wildcard",
        "edgefleet-bridge",
        client=False,
        server=True,
        dns_names=[f"*{SUFFIX}"],
        ip_addresses=[address],
    )
    with Broker("mosquitto") as broker:
        base = fleet_bridge_config(cp, bridge_pki, broker)
        assert base.kubelet is not None
        config = replace(
            base,
            nodes=replace(base.nodes, kubelet_address=address, hostname_suffix=SUFFIX),
            kubelet=replace(base.kubelet, cert_file=wildcard.cert_path, key_file=wildcard.key_path),
        )
        bridge = BridgeThread(config, str(cp.kubeconfig_path)).start()
        node, agent = start_device_agent(broker, docker_host, tmp_path)
        try:
            stranger = f"stranger{SUFFIX}"  # a name the bridge does not serve
            with hosts.open("a") as handle:  # in place: the bind mount shows the same inode
                # Before the apiserver looks up any of them: no DNS query leaves this machine.
                handle.write(f"{address}\t{node}{SUFFIX}\n{address}\t{stranger}\n")
            node_obj = wait_until(
                lambda: (n := cp.kubectl_json("get", "node", node))["status"].get("addresses") and n,
                timeout=30,
                what=f"node {node} with addresses",
            )
            addresses = node_obj["status"]["addresses"]
            assert addresses[0] == {"type": "Hostname", "address": f"{node}{SUFFIX}"}
            assert {"type": "InternalIP", "address": address} in addresses
            assert node_obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == config.kubelet.port

            errors: list[str] = []

            def summary() -> dict | None:
                out = cp.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/stats/summary", check=False)
                errors.append(out.stderr.strip())
                return json.loads(out.stdout) if out.returncode == 0 else None

            try:
                doc = wait_until(summary, timeout=30, what="/stats/summary through the Hostname address")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; kubectl said: {errors[-1:]}") from None
            assert doc["node"]["nodeName"] == node and doc["node"]["cpu"]["usageCoreNanoSeconds"] > 0
            metrics = cp.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/metrics/resource").stdout
            assert "node_cpu_usage_seconds_total" in metrics and "scrape_error 0" in metrics

            # A Node whose Hostname the bridge does not serve: the request names no device of ours.
            fake = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": "stranger"},
            }
            cp.kubectl("apply", "-f", "-", input=json.dumps(fake))
            try:
                status = {
                    "status": {
                        "addresses": [{"type": "Hostname", "address": stranger}],
                        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet.port}},
                    }
                }
                cp.kubectl(
                    "patch", "node", "stranger", "--subresource=status", "--type=merge", "-p", json.dumps(status)
                )
                refused = cp.kubectl("get", "--raw", "/api/v1/nodes/stranger/proxy/stats/summary", check=False)
                assert refused.returncode != 0 and f"no device of this bridge goes by '{stranger}'" in refused.stderr, (
                    refused.stderr
                )
            finally:
                cp.kubectl("delete", "node", "stranger", "--ignore-not-found", check=False)
        finally:
            stop_device_agent(docker_host, node, agent)
            bridge.stop()
