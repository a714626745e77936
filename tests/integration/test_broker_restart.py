"""Kill the broker in the middle of transfers: every byte still arrives, once."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from tests.integration.conftest import pair
from tests.support.brokers import Broker

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
async def test_transfer_survives_broker_restart(kind):
    with Broker(kind) as broker:
        async with pair(broker) as (cloud, dev):
            data = os.urandom(16 * 1024 * 1024)
            streams = [await cloud.open_stream({"kind": "echo"}, peer=dev.name) for _ in range(3)]

            async def transfer(stream) -> bytes:
                async def writer():
                    for pos in range(0, len(data), 64 * 1024):
                        stream.write(data[pos : pos + 64 * 1024])
                        await stream.drain()
                    stream.write_eof()

                task = asyncio.create_task(writer())
                echoed = await stream.readall()
                await task
                return echoed

            transfers = [asyncio.create_task(transfer(s)) for s in streams]
            # Let data flow, then crash the broker (SIGKILL) and bring it back.
            while sum(s._peer.core.send_buffered(s.stream_id) for s in streams) == 0:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in transfers), "transfers ended before the broker went down"
            await asyncio.to_thread(broker.restart, 1.0)
            results = await asyncio.wait_for(asyncio.gather(*transfers), 120)
            digest = hashlib.sha256(data).digest()
            assert all(hashlib.sha256(r).digest() == digest for r in results)
            assert cloud.stats["disconnects"] >= 1 and dev.stats["disconnects"] >= 1
            core = cloud.session(dev.name).core
            assert core.stats["retransmitted_bytes"] > 0, "nothing was lost: the restart missed the transfer"
