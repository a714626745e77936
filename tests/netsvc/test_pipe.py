"""``seqstream.mqtt.tcp.pipe`` over a real mosquitto: half-close both ways, and aborts mapped both ways
(a stream RESET becomes a TCP RST; a TCP RST becomes a stream RESET with the given code)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from seqstream import StreamResetError
from seqstream.mqtt import Endpoint, Stream, cloud_endpoint, device_endpoint
from seqstream.mqtt.tcp import pipe
from tests.agent_core.cloud import FAST, broker_config
from tests.support.brokers import Broker

pytestmark = pytest.mark.timeout(120)
CODE = 0x502


@pytest.fixture(scope="module")
def broker():
    with Broker("mosquitto") as b:
        yield b


@contextlib.asynccontextmanager
async def pair(broker: Broker) -> AsyncIterator[tuple[Endpoint, Endpoint]]:
    config = broker_config(broker)
    async with (
        cloud_endpoint(config, replica="pipe-test", session_config=FAST) as cloud,
        device_endpoint("pipe-dev", config, session_config=FAST) as device,
    ):
        await device.session().wait_established(15)
        yield device, cloud


async def tcp_pair() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter]:
    """Two ends of one loopback TCP connection: (reader, writer) of the server side, then the client side."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )
    server = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.open_connection("127.0.0.1", port)
    inner = await asyncio.wait_for(accepted, 10)
    server.close()
    return (*inner, *client)


async def test_half_close_both_ways(broker: Broker) -> None:
    async with pair(broker) as (device, cloud):
        app_r, app_w, pipe_r, pipe_w = await tcp_pair()  # the "program" and the socket the pipe owns
        stream = await device.open_stream({"kind": "test"})
        far = await asyncio.wait_for(cloud.accept(), 10)
        task = asyncio.create_task(pipe(stream, pipe_r, pipe_w, tcp_error_code=CODE))
        app_w.write(b"request" * 1000)
        app_w.write_eof()  # the program half-closes: the far end sees FIN after every byte
        assert await asyncio.wait_for(far.readall(), 10) == b"request" * 1000
        far.write(b"answer")  # and can still answer
        far.write_eof()
        assert await asyncio.wait_for(app_r.read(), 10) == b"answer"
        result = await asyncio.wait_for(task, 10)
        assert result.clean and result.to_stream == 7000 and result.to_socket == 6
        app_w.close()


async def test_stream_reset_becomes_tcp_rst(broker: Broker) -> None:
    async with pair(broker) as (device, cloud):
        app_r, app_w, pipe_r, pipe_w = await tcp_pair()
        stream = await device.open_stream({"kind": "test"})
        far = await asyncio.wait_for(cloud.accept(), 10)
        task = asyncio.create_task(pipe(stream, pipe_r, pipe_w, tcp_error_code=CODE))
        app_w.write(b"x")
        assert await asyncio.wait_for(far.readexactly(1), 10) == b"x"
        far.reset(0x503, "no endpoint")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(app_r.read(), 10)
        result = await asyncio.wait_for(task, 10)
        assert result.reset is not None and result.reset.code == 0x503
        app_w.close()


async def test_tcp_rst_becomes_stream_reset(broker: Broker) -> None:
    async with pair(broker) as (device, cloud):
        _, app_w, pipe_r, pipe_w = await tcp_pair()
        stream: Stream = await device.open_stream({"kind": "test"})
        far = await asyncio.wait_for(cloud.accept(), 10)
        task = asyncio.create_task(pipe(stream, pipe_r, pipe_w, tcp_error_code=CODE))
        app_w.write(b"x")
        assert await asyncio.wait_for(far.readexactly(1), 10) == b"x"
        sock = app_w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        app_w.transport.abort()  # the program dies: RST
        with pytest.raises(StreamResetError) as info:
            await asyncio.wait_for(far.readall(), 10)
        assert info.value.code == CODE
        result = await asyncio.wait_for(task, 10)
        assert result.socket_error is not None
