"""``python -m cloud_bridge``: run the bridge until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable
from dataclasses import replace
from pathlib import Path

from seqstream.mqtt import BrokerConfig

from .app import Bridge, BridgeConfig
from .kubelet import ServerConfig
from .leader import LeaderElection
from .node_ports import parse_range
from .nodes import NodeSettings
from .registry import CrdMissing


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cloud_bridge", description="edge devices as Kubernetes nodes over MQTT")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster config)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port or mqtts://")
    p.add_argument(
        "--broker-password-file", type=Path, help="file holding the broker password (a mounted Secret), not in the URL"
    )
    p.add_argument("--kubelet-address", default="127.0.0.1", help="address the apiserver reaches the kubelet API at")
    p.add_argument("--kubelet-bind", default="0.0.0.0")
    p.add_argument("--kubelet-port", type=int, default=10250)
    p.add_argument(
        "--kubelet-node-ports",
        type=parse_range,
        metavar="FIRST-LAST",
        help="also listen on these ports, one per node, so /stats/summary and /metrics/resource "
        "(kubectl top) know the node; the range bounds how many devices this bridge serves",
    )
    p.add_argument(
        "--authentication-token-webhook",
        action="store_true",
        help="kubelet API: also accept bearer tokens, checked with TokenReview and SubjectAccessReview on "
        "nodes/stats, nodes/metrics, nodes/proxy (how metrics-server and Prometheus scrape kubelets)",
    )
    p.add_argument(
        "--kubelet-hostname-suffix",
        metavar=".SUFFIX",
        help="nodes also advertise the Hostname address <device>SUFFIX (the apiserver prefers it by default), "
        "and the node is found from the Host header; DNS must resolve those names to the bridge and "
        "--tls-cert cover them (e.g. a wildcard)",
    )
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--client-ca", type=Path)
    p.add_argument("--no-kubelet", action="store_true", help="do not serve the kubelet API")
    p.add_argument(
        "--leader-elect",
        action="store_true",
        help="run as one of several replicas: only the holder of a Lease serves (the others wait)",
    )
    p.add_argument("--leader-namespace", default=os.environ.get("POD_NAMESPACE", "edgefleet-system"))
    p.add_argument("--leader-lease", default="edgefleet-bridge", help="name of the leader-election Lease")
    p.add_argument(
        "--auto-register",
        action="store_true",
        help="admit devices without an EdgeDevice by creating one for them (without the CRD: admit every device)",
    )
    p.add_argument(
        "--bridge-name",
        default="edgefleet",
        help="written on this bridge's Nodes; at start it removes those of its Nodes whose EdgeDevice is gone",
    )
    p.add_argument(
        "--host-namespace",
        default="edgefleet-system",
        help="namespace of the host-<device> pods of EdgeDevices with hostExec (pods/exec there = host access)",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def api_client(kubeconfig: str | None):
    import kubernetes

    if kubeconfig:
        return kubernetes.config.new_client_from_config(config_file=kubeconfig)
    kubernetes.config.load_incluster_config()
    return kubernetes.client.ApiClient()


async def run(args: argparse.Namespace) -> None:
    kubelet = None
    if not args.no_kubelet:
        if not (args.tls_cert and args.tls_key and args.client_ca):
            raise SystemExit("--tls-cert, --tls-key and --client-ca are required (or --no-kubelet)")
        kubelet = ServerConfig(
            cert_file=args.tls_cert,
            key_file=args.tls_key,
            client_ca_file=args.client_ca,
            host=args.kubelet_bind,
            port=args.kubelet_port,
            node_ports=args.kubelet_node_ports,
        )
    broker = BrokerConfig.from_url(args.broker)
    if args.broker_password_file:
        broker = replace(broker, password=args.broker_password_file.read_text().strip())
    config = BridgeConfig(
        broker=broker,
        nodes=NodeSettings(
            kubelet_address=args.kubelet_address,
            kubelet_port=args.kubelet_port,
            kubelet_node_ports=args.kubelet_node_ports,
            hostname_suffix=args.kubelet_hostname_suffix,
            owner=args.bridge_name,
        ),
        kubelet=kubelet,
        auto_register=args.auto_register,
        host_namespace=args.host_namespace,
        token_webhook=args.authentication_token_webhook,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    api = api_client(args.kubeconfig)
    leader = None
    if args.leader_elect:
        identity = f"{socket.gethostname()}-{config.replica}"
        leader = LeaderElection(api, namespace=args.leader_namespace, name=args.leader_lease, identity=identity)
        if not await _first(leader.acquire(), stop.wait()):
            return
    try:
        async with Bridge(config, api):
            logging.getLogger("cloud_bridge").info("bridge running")
            if leader is not None and await _first(leader.lost.wait(), stop.wait()):
                raise SystemExit("lost the leader lease; exiting so a standby takes over")
            await stop.wait()
    except CrdMissing as exc:  # raised by the bridge's start, before it serves anything
        raise SystemExit(f"cloud_bridge: {exc}") from None
    finally:
        if leader is not None:
            await leader.release()


async def _first(ours: Awaitable[object], stop: Awaitable[object]) -> bool:
    """Run both; True if ``ours`` finished first (``stop`` cancels it)."""
    task, stopper = asyncio.ensure_future(ours), asyncio.ensure_future(stop)
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        return task.done() and not stopper.done()
    finally:
        for t in (task, stopper):
            t.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
