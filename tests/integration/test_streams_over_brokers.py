"""seqstream over real brokers: mosquitto (MQTT 5) and the embedded amqtt (3.1.1)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random

import aiomqtt
import pytest

from seqstream import ErrorCode, StreamResetError
from seqstream.mqtt import PeerOfflineError
from tests.integration.conftest import broker_config, pair

pytestmark = pytest.mark.broker


async def test_echo_round_trip_and_half_close(broker):
    async with pair(broker) as (cloud, dev):
        stream = await cloud.open_stream({"kind": "echo"}, peer=dev.name)
        stream.write(b"hello ")
        stream.write(b"world")
        assert await asyncio.wait_for(stream.readexactly(11), 10) == b"hello world"
        stream.write_eof()
        assert await asyncio.wait_for(stream.read(), 10) == b""
        await asyncio.wait_for(stream.wait_closed(), 10)
        assert cloud.session(dev.name).core.stream_ids == []


async def test_negotiated_protocol(broker):
    async with pair(broker) as (cloud, dev):
        expected = "5" if broker.kind == "mosquitto" else "3.1.1"
        assert cloud.link.info.protocol == expected
        assert dev.link.info.protocol == expected


async def test_large_transfer_is_byte_exact(broker):
    data = os.urandom(8 * 1024 * 1024)
    async with pair(broker) as (cloud, dev):
        stream = await cloud.open_stream({"kind": "echo"}, peer=dev.name)

        async def writer():
            view = memoryview(data)
            for pos in range(0, len(data), 100_000):
                stream.write(view[pos : pos + 100_000])
                await stream.drain()
            stream.write_eof()

        task = asyncio.create_task(writer())
        echoed = await asyncio.wait_for(stream.readall(), 120)
        await task
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()


async def test_an_idle_link_leaves_no_write_readiness_callback_behind(broker):
    """After a bulk transfer both MQTT sockets have no writer registered in the event
    loop: a writer left behind with nothing to write would run on every loop turn."""
    import selectors

    data = os.urandom(4 * 1024 * 1024)
    async with pair(broker) as (cloud, dev):
        stream = await cloud.open_stream({"kind": "echo"}, peer=dev.name)
        for pos in range(0, len(data), 256 * 1024):
            stream.write(data[pos : pos + 256 * 1024])
            await stream.drain()
        stream.write_eof()
        assert len(await asyncio.wait_for(stream.readall(), 60)) == len(data)
        await asyncio.sleep(0.3)  # acks settle
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        for endpoint in (cloud, dev):
            paho = endpoint.link._client._client
            assert not paho.want_write()
            key = selector.get_map().get(paho.socket().fileno())
            assert key is not None and not key.events & selectors.EVENT_WRITE, (
                f"{endpoint.name}: writer left registered"
            )


async def test_many_concurrent_streams(broker):
    rng = random.Random(5)
    async with pair(broker) as (cloud, dev):

        async def one(i: int) -> None:
            payload = rng.randbytes(rng.randint(0, 200_000))
            stream = await cloud.open_stream({"kind": "echo", "i": i}, peer=dev.name)
            stream.write(payload)
            stream.write_eof()
            assert await asyncio.wait_for(stream.readall(), 120) == payload

        await asyncio.gather(*(one(i) for i in range(60)))
        assert cloud.session(dev.name).core.stream_ids == []


async def test_device_opens_streams_too(broker):
    async with pair(broker) as (cloud, dev):

        async def cloud_side():
            stream = await cloud.accept()
            assert stream.peer_name == dev.name and stream.metadata == {"kind": "upload"}
            data = await stream.readall()
            stream.write(hashlib.sha256(data).digest())
            stream.write_eof()

        server = asyncio.create_task(cloud_side())
        payload = os.urandom(300_000)
        stream = await dev.open_stream({"kind": "upload"})
        stream.write(payload)
        stream.write_eof()
        assert await asyncio.wait_for(stream.readall(), 30) == hashlib.sha256(payload).digest()
        await server


async def test_reset_carries_code_and_reason(broker):
    async with pair(broker) as (cloud, dev):
        stream = await cloud.open_stream({"kind": "reject"}, peer=dev.name)
        with pytest.raises(StreamResetError) as info:
            await asyncio.wait_for(stream.read(), 10)
        assert info.value.code == 0x155 and info.value.reason == "no such thing" and info.value.remote
        # the session is still fine for other streams
        echo = await cloud.open_stream({"kind": "echo"}, peer=dev.name)
        echo.write(b"still here")
        assert await asyncio.wait_for(echo.readexactly(10), 10) == b"still here"


async def test_garbage_on_the_device_topic_is_counted_not_fatal(broker):
    async with pair(broker) as (cloud, dev):
        stream = await cloud.open_stream({"kind": "sink"}, peer=dev.name)
        payload = os.urandom(2_000_000)
        topic = cloud.layout.up(dev.name)
        async with aiomqtt.Client(broker.host, broker.port, identifier="vandal") as vandal:
            for i in range(40):
                stream.write(payload[i * 50_000 : (i + 1) * 50_000])
                await stream.drain()
                await vandal.publish(topic, os.urandom(random.randint(0, 300)) if i % 2 else b"\x01" * 31)
        stream.write_eof()
        assert await asyncio.wait_for(stream.readall(), 30) == str(len(payload)).encode()
        core = cloud.session(dev.name).core
        assert core.stats["malformed_packets"] + core.stats["stale_epoch"] + core.stats["unknown_epoch"] >= 20


async def test_offline_device_fails_fast(broker):
    async with pair(broker) as (cloud, dev):
        await dev.close()  # clean shutdown publishes offline presence
        for _ in range(100):
            if cloud.session(dev.name).online is False:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(PeerOfflineError, match="offline"):
            await cloud.open_stream({"kind": "echo"}, peer=dev.name)


async def test_device_restart_resets_old_streams(broker):
    async with pair(broker) as (cloud, dev):
        stream = await cloud.open_stream({"kind": "echo"}, peer=dev.name)
        stream.write(b"x")
        assert await asyncio.wait_for(stream.readexactly(1), 10) == b"x"
        from seqstream.mqtt import device_endpoint

        await dev.close()
        reborn = device_endpoint(dev.name, broker_config(broker), session_config=dev.session_config)
        await reborn.start()
        try:
            with pytest.raises(StreamResetError) as info:
                await asyncio.wait_for(stream.read(), 20)
            assert info.value.code in (ErrorCode.PEER_RESTARTED, ErrorCode.SESSION_CLOSED)
        finally:
            await reborn.close()


async def test_qos1_mode(fresh_mosquitto):
    async with pair(fresh_mosquitto, qos=1) as (cloud, dev):
        stream = await cloud.open_stream({"kind": "echo"}, peer=dev.name)
        payload = os.urandom(1_000_000)
        stream.write(payload)
        stream.write_eof()
        assert await asyncio.wait_for(stream.readall(), 30) == payload


async def test_mqtt311_forced_on_mosquitto(fresh_mosquitto):
    async with pair(fresh_mosquitto, protocol="3.1.1") as (cloud, dev):
        assert cloud.link.info.protocol == "3.1.1"
        stream = await cloud.open_stream({"kind": "echo"}, peer=dev.name)
        stream.write(b"v3")
        stream.write_eof()
        assert await asyncio.wait_for(stream.readall(), 10) == b"v3"


async def test_will_announces_a_device_that_vanished(broker):
    """Cut the device's TCP connection without DISCONNECT: the broker publishes
    its will, the cloud sees it offline, and the reconnecting device comes back
    online with its streams intact."""
    import socket

    async with pair(broker, will_delay=0) as (cloud, dev):
        stream = await cloud.open_stream({"kind": "echo"}, peer=dev.name)
        stream.write(b"before")
        assert await asyncio.wait_for(stream.readexactly(6), 10) == b"before"
        offline_before = cloud.stats["presence_offline"]
        dev.link._client._client.socket().shutdown(socket.SHUT_RDWR)  # a crash, as the broker sees it
        for _ in range(200):
            if cloud.stats["presence_offline"] > offline_before:
                break
            await asyncio.sleep(0.05)
        assert cloud.stats["presence_offline"] > offline_before, "no will message arrived"
        stream.write(b"after")
        assert await asyncio.wait_for(stream.readexactly(5), 20) == b"after"
        assert dev.stats["disconnects"] >= 1
