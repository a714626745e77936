"""A test stand-in for the cloud bridge: a seqstream cloud endpoint speaking fleetproto.

It accepts the device's control streams, decodes every message into a
history the tests can wait on, sends control messages, and opens exec /
logs / port-forward / stats streams the way the bridge will.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import fleetproto as fp
from seqstream import SessionConfig, StreamResetError
from seqstream.mqtt import BrokerConfig, Endpoint, Stream, cloud_endpoint
from tests.support.brokers import Broker

FAST = SessionConfig(min_rto=0.02, initial_rtt=0.02, ping_interval=2.0, idle_timeout=30.0)
WAIT = 30.0


def broker_config(broker: Broker) -> BrokerConfig:
    return BrokerConfig(host=broker.host, port=broker.port, reconnect_min=0.05, reconnect_max=0.5)


class ControlPeer:
    """The cloud's end of one control stream."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.messages: list[Any] = []
        self.bad: list[Exception] = []
        self.ended: BaseException | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(), name=f"test-control-{stream.stream_id}")

    async def _read(self) -> None:
        decoder = fp.MessageDecoder()
        try:
            async for chunk in self.stream:
                decoder.feed(chunk)
                while True:
                    try:
                        raw = decoder.next_message()
                        if raw is None:
                            break
                        self.messages.append(fp.decode(raw, sender="device"))
                    except fp.MessageError as exc:
                        self.bad.append(exc)
                    self._changed.set()
            self.ended = EOFError("control stream closed by the device")
        except Exception as exc:
            self.ended = exc
        self._changed.set()

    def send(self, message: Any) -> None:
        self.stream.write(fp.frame(message))

    def send_raw(self, data: bytes) -> None:
        self.stream.write(data)

    async def wait_for(
        self, match: Callable[[Any], bool], *, timeout: float = WAIT, what: str = "message", start: int = 0
    ) -> Any:
        """The first message from index ``start`` of the history on for which ``match`` is true."""
        seen = start
        async with asyncio.timeout(timeout):
            while True:
                for message in self.messages[seen:]:
                    if match(message):
                        return message
                seen = max(seen, len(self.messages))
                if self.ended is not None:
                    raise AssertionError(f"control stream ended ({self.ended!r}) before {what}")
                self._changed.clear()
                await self._changed.wait()

    async def wait_new(self, match: Callable[[Any], bool], *, timeout: float = WAIT, what: str = "message") -> Any:
        """Like ``wait_for``, but only messages arriving from now on."""
        return await self.wait_for(match, timeout=timeout, what=what, start=len(self.messages))

    async def status(
        self, uid: str, match: Callable[[fp.PodStatusReport], bool], *, timeout: float = WAIT, what: str = "status"
    ) -> fp.PodStatusReport:
        return await self.wait_for(
            lambda m: isinstance(m, fp.PodStatusReport) and m.uid == uid and match(m), timeout=timeout, what=what
        )

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class FakeCloud:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.controls: asyncio.Queue[ControlPeer] = asyncio.Queue()
        self.all_controls: list[ControlPeer] = []
        self.other_streams: list[Stream] = []
        self._task = asyncio.create_task(self._accept(), name="test-cloud-accept")

    async def _accept(self) -> None:
        while True:
            stream = await self.endpoint.accept()
            if stream.metadata.get("kind") == "control":
                fp.parse_open(stream.metadata)  # the device's metadata must validate
                peer = ControlPeer(stream)
                self.all_controls.append(peer)
                self.controls.put_nowait(peer)
            else:
                self.other_streams.append(stream)
                stream.reset(fp.AppError.BAD_REQUEST, "the cloud accepts only control streams")

    async def control(self, timeout: float = WAIT) -> ControlPeer:
        """The next control stream the device opens."""
        async with asyncio.timeout(timeout):
            return await self.controls.get()

    async def open(self, device: str, request: Any) -> Stream:
        return await self.endpoint.open_stream(request.to_metadata(), peer=device)

    async def close(self) -> None:
        self._task.cancel()
        for peer in self.all_controls:
            await peer.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def fake_cloud(broker: Broker, config: BrokerConfig | None = None) -> AsyncIterator[FakeCloud]:
    config = config or broker_config(broker)
    endpoint = cloud_endpoint(config, replica=f"r-{uuid.uuid4().hex[:6]}", session_config=FAST)
    await endpoint.start()
    cloud = FakeCloud(endpoint)
    try:
        yield cloud
    finally:
        await cloud.close()
        await endpoint.close()


# ------------------------------------------------------------------ stream clients


class ExecResult:
    def __init__(self) -> None:
        self.stdout = b""
        self.stderr = b""
        self.status: fp.ExitStatus | None = None


async def read_exec(stream: Stream, *, timeout: float = WAIT) -> ExecResult:
    """Read channel frames until FIN: output and the final status."""
    result = ExecResult()
    decoder = fp.ChannelDecoder()
    async with asyncio.timeout(timeout):
        async for chunk in stream:
            decoder.feed(chunk)
            while (frame := decoder.next_frame()) is not None:
                if frame.channel is fp.Channel.STDOUT:
                    result.stdout += frame.payload
                elif frame.channel is fp.Channel.STDERR:
                    result.stderr += frame.payload
                elif frame.channel is fp.Channel.STATUS:
                    result.status = fp.ExitStatus.decode(frame.payload)
        decoder.eof()
    return result


async def exec_in(cloud: FakeCloud, device: str, request: Any, stdin: bytes | None = None) -> ExecResult:
    stream = await cloud.open(device, request)
    if stdin:
        stream.write(fp.encode_frame(fp.Channel.STDIN, stdin))
    stream.write_eof()
    return await read_exec(stream)


async def expect_reset(stream: Stream, *, timeout: float = WAIT) -> StreamResetError:
    async with asyncio.timeout(timeout):
        try:
            await stream.readall()
        except StreamResetError as exc:
            return exc
    raise AssertionError("the stream ended without a reset")
