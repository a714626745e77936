"""The shipped mosquitto ACL confines each device to its own topics."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import aiomqtt
import pytest

from seqstream import SessionConfig
from seqstream.mqtt import BrokerConfig, cloud_endpoint, device_endpoint
from seqstream.topics import TopicLayout
from tests.support.brokers import CONFIG, Broker

pytestmark = pytest.mark.broker
LAYOUT = TopicLayout()


@pytest.fixture
def acl_broker(tmp_path):
    passwd = tmp_path / "passwords"
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd (Debian package mosquitto) is needed"
    for user in ("dev-a", "dev-b", "edgefleet-bridge"):
        flag = ["-c"] if not passwd.exists() else []
        subprocess.run([tool, "-b", *flag, str(passwd), user, f"{user}-secret"], check=True)
    passwd.chmod(0o600)
    extra = f"password_file {passwd}\nacl_file {CONFIG / 'mosquitto' / 'acl.conf'}\n"
    with Broker("mosquitto", extra_config=extra, anonymous=False) as broker:
        yield broker


def creds(user: str) -> dict:
    return {"username": user, "password": f"{user}-secret"}


async def test_device_cannot_touch_other_devices_topics(acl_broker):
    host, port = acl_broker.host, acl_broker.port
    async with (
        aiomqtt.Client(host, port, identifier="a", **creds("dev-a")) as dev_a,
        aiomqtt.Client(host, port, identifier="b", **creds("dev-b")) as dev_b,
        aiomqtt.Client(host, port, identifier="bridge", **creds("edgefleet-bridge")) as bridge,
    ):
        await bridge.subscribe(LAYOUT.all_up)
        await dev_b.subscribe(LAYOUT.down("dev-b"))
        # dev-a tries to read dev-b's commands and to speak for dev-b: both denied
        await dev_a.subscribe(LAYOUT.down("dev-b"))
        await dev_a.publish(LAYOUT.up("dev-b"), b"forged")
        await dev_a.publish(LAYOUT.up("dev-a"), b"mine")
        await bridge.publish(LAYOUT.down("dev-b"), b"for b only")
        got_bridge = await asyncio.wait_for(anext(bridge.messages), 5)
        assert (str(got_bridge.topic), got_bridge.payload) == (LAYOUT.up("dev-a"), b"mine")
        got_b = await asyncio.wait_for(anext(dev_b.messages), 5)
        assert got_b.payload == b"for b only"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(dev_a.messages), 0.5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(bridge.messages), 0.5)  # the forged packet never arrived


async def test_wrong_password_is_refused_with_a_clear_error(acl_broker):
    with pytest.raises(aiomqtt.MqttError, match=r"(?i)not authori[sz]ed|bad user name or password"):
        async with aiomqtt.Client(acl_broker.host, acl_broker.port, username="dev-a", password="wrong"):
            pass


async def test_seqstream_works_under_the_acl(acl_broker):
    base = BrokerConfig(host=acl_broker.host, port=acl_broker.port)
    config = SessionConfig(min_rto=0.02, initial_rtt=0.02)
    from dataclasses import replace

    cloud = cloud_endpoint(replace(base, **creds("edgefleet-bridge")), session_config=config)
    device = device_endpoint("dev-a", replace(base, **creds("dev-a")), session_config=config)
    async with cloud, device:
        await asyncio.wait_for(device.session().established.wait(), 10)
        stream = await cloud.open_stream({"kind": "x"}, peer="dev-a")
        stream.write(b"over the ACL")
        stream.write_eof()
        incoming = await asyncio.wait_for(device.accept(), 10)
        assert await asyncio.wait_for(incoming.readall(), 10) == b"over the ACL"
