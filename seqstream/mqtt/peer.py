"""Drives one session core from the event loop: the only place that reads the clock.

Every input (packet, write, read, timer) lands in the core and asks the
endpoint for a flush; a flush turns core events into stream wake-ups, sends
what the core has queued and re-arms the one timer, as aioquic's protocol does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .. import events as ev
from ..errors import ErrorCode, SessionError
from ..session import Session
from .stream import Stream

if TYPE_CHECKING:
    from .endpoint import Endpoint

log = logging.getLogger("seqstream.mqtt")


class PeerOfflineError(SessionError):
    """The peer's presence says it is offline, so a new stream cannot reach it."""


class PeerSession:
    def __init__(self, endpoint: Endpoint, name: str, core: Session, topic: str) -> None:
        self.endpoint = endpoint
        self.name = name
        self.core = core
        self.topic = topic
        self.online: bool | None = None  # from retained presence; None = not heard yet
        self.established = asyncio.Event()
        self.high_water = core.config.stream_window
        self._streams: dict[int, Stream] = {}
        self._blocked_writers: set[Stream] = set()  # streams waiting in drain()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._timer_fired = False
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._rejected_logged = 0
        core.connect(self._loop.time())
        self.kick()

    def __repr__(self) -> str:
        return f"<PeerSession {self.name!r} {self.core.state.value} streams={len(self._streams)}>"

    # ------------------------------------------------------------------ application API

    async def open_stream(self, metadata: dict[str, Any]) -> Stream:
        if self.online is False:
            raise PeerOfflineError(f"{self.name} is offline (its presence says so); not opening a stream")
        sid = self.core.open_stream(metadata, now=self._loop.time())
        stream = Stream(self, sid, metadata, local=True)
        self._streams[sid] = stream
        self.kick()
        return stream

    async def ping(self, timeout: float = 10.0) -> float:
        """End-to-end round trip through the broker to the peer's session, in seconds."""
        ident = self.core.ping(now=self._loop.time())
        future: asyncio.Future[float] = self._loop.create_future()
        self._pings[ident] = future
        self.kick()
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pings.pop(ident, None)

    async def wait_established(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.established.wait(), timeout)

    @property
    def streams(self) -> list[Stream]:
        return list(self._streams.values())

    # ------------------------------------------------------------------ used by Stream

    def send(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        self.core.send_stream_data(stream_id, data, end_stream=end_stream, now=self._loop.time())
        if self.core.send_buffered(stream_id) == len(data) and self.endpoint.link.connected.is_set():
            self.flush()  # nothing else in flight: an interactive write goes out now
        else:
            self.kick()  # coalesce with the writes of this loop turn

    def reset(self, stream_id: int, code: int, reason: str) -> None:
        self.core.reset_stream(stream_id, code, reason)
        self._streams.pop(stream_id, None)
        self.kick()

    def consumed(self, stream_id: int, amount: int) -> None:
        if self.core.stream_consumed(stream_id, amount, now=self._loop.time()):
            self.kick()  # a credit update is due; small reads need no flush (timers cover acks)

    def backlog(self, stream_id: int) -> int:
        return self.core.send_buffered(stream_id)

    def wait_writable(self, stream: Stream) -> None:
        """Wake ``stream`` after the next flush (acks may have shrunk its backlog)."""
        self._blocked_writers.add(stream)

    # ------------------------------------------------------------------ used by the endpoint

    def receive(self, packet: bytes) -> None:
        self.core.receive_packet(packet, now=self._loop.time())
        if self.core.ack_urgent:
            self.flush()  # don't let a long burst of input delay the sender's acks
        else:
            self.kick()

    def kick(self) -> None:
        self.endpoint.schedule_flush(self)

    def transport_up(self, max_packet: int | None) -> None:
        self.core.set_transport_limit(max_packet - len(self.topic) if max_packet else None)
        self.core.resume(self._loop.time())
        self.kick()

    def abort_streams(self, code: int, reason: str) -> None:
        for stream in list(self._streams.values()):
            self.core.reset_stream(stream.stream_id, code, reason)
            stream._on_reset(code, reason, remote=False)
        self._streams.clear()
        self.kick()

    def flush(self) -> None:
        now = self._loop.time()
        if self._timer_fired:
            self._timer_fired = False
            self.core.handle_timer(now)
        self._dispatch_events()
        link = self.endpoint.link
        for packet in self.core.packets_to_send(now):
            link.publish(self.topic, packet)
        self._dispatch_events()
        if self._blocked_writers:
            blocked, self._blocked_writers = self._blocked_writers, set()
            for stream in blocked:
                stream._on_progress()
        self._arm_timer()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.core.close(ErrorCode.SESSION_CLOSED, "endpoint closing")
        self._dispatch_events()
        for packet in self.core.packets_to_send(self._loop.time()):
            self.endpoint.link.publish(self.topic, packet)

    # ------------------------------------------------------------------ internals

    def _arm_timer(self) -> None:
        when = self.core.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._timer_fired = True
        self.kick()

    def _dispatch_events(self) -> None:
        while (event := self.core.next_event()) is not None:
            if isinstance(event, ev.StreamDataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._on_data(event.data, event.end_stream)
                else:  # the app already dropped the stream: release the credit
                    self.core.stream_consumed(event.stream_id, len(event.data), now=self._loop.time())
            elif isinstance(event, ev.StreamOpened):
                stream = Stream(self, event.stream_id, event.metadata, local=False)
                self._streams[event.stream_id] = stream
                self.endpoint.incoming(stream)
            elif isinstance(event, ev.StreamReset):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    stream._on_reset(event.code, event.reason, event.remote)
            elif isinstance(event, ev.StreamFinished):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    stream._on_finished()
            elif isinstance(event, ev.HandshakeCompleted):
                log.debug("session with %s established (peer epoch %d)", self.name, event.peer_epoch)
                self.established.set()
            elif isinstance(event, ev.PeerRestarted):
                log.info(
                    "%s restarted (epoch %d -> %d); its streams were reset", self.name, event.old_epoch, event.new_epoch
                )
                self.established.clear()
            elif isinstance(event, ev.PongReceived):
                future = self._pings.get(event.ident)
                if future is not None and not future.done():
                    future.set_result(event.rtt)
            elif isinstance(event, ev.InputRejected):
                self.endpoint.stats["rejected_input"] += 1
                self._rejected_logged += 1
                if self._rejected_logged <= 10 or self._rejected_logged % 1000 == 0:
                    log.warning(
                        "from %s: dropped bad input (%d so far): %s", self.name, self._rejected_logged, event.reason
                    )
            elif isinstance(event, ev.SessionTimedOut):
                log.warning("session with %s timed out after %.1fs of silence", self.name, event.idle_for)
            elif isinstance(event, ev.SessionClosed):
                log.info("session with %s closed by %s: %s", self.name, "peer" if event.remote else "us", event.reason)
                self.established.clear()
                self.endpoint.forget(self)
