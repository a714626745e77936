"""The agent's TLS settings against a real mosquitto that demands client certificates."""

from __future__ import annotations

import dataclasses
import ssl

import pytest

import fleetproto as fp
from edge_agent.config import BrokerSettings
from tests.agent_core.agents import agent_config, running_agent
from tests.agent_core.cloud import broker_config, fake_cloud
from tests.support.brokers import Broker
from tests.support.kube import CertificateAuthority

pytestmark = pytest.mark.broker


async def test_mutual_tls(node, tmp_path, docker_host) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("server", "localhost", client=False, server=True, ip_addresses=["127.0.0.1"])
    device = ca.issue("device", node)
    cloud = ca.issue("cloud", "cloud")
    tls = f"cafile {ca.cert_path}\ncertfile {server.cert_path}\nkeyfile {server.key_path}\nrequire_certificate true\n"
    with Broker("mosquitto", extra_config=tls) as broker:
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        context.load_cert_chain(str(cloud.cert_path), str(cloud.key_path))
        cloud_config = dataclasses.replace(broker_config(broker), tls=context)
        base = agent_config(broker, node, tmp_path / "agent", docker_host)
        settings = BrokerSettings(
            urls=(f"mqtts://127.0.0.1:{broker.port}",),
            ca_file=ca.cert_path,
            cert_file=device.cert_path,
            key_file=device.key_path,
            reconnect_max_seconds=0.5,
        )
        async with fake_cloud(broker, cloud_config) as fake, running_agent(dataclasses.replace(base, broker=settings)):
            control = await fake.control()
            hello = await control.wait_for(lambda m: isinstance(m, fp.NodeHello))
            assert hello.node.runtime.name == "docker"

        # Without the client certificate the broker refuses the device: no control stream ever comes.
        no_cert = dataclasses.replace(settings, cert_file=None, key_file=None)
        async with (
            fake_cloud(broker, cloud_config) as fake,
            running_agent(dataclasses.replace(base, broker=no_cert)) as agent,
        ):
            with pytest.raises(TimeoutError):
                await fake.control(timeout=3)
            assert not agent.endpoint.link.connected.is_set()
