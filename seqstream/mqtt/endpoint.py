"""An endpoint: one MQTT connection carrying the sessions of one side.

A device endpoint has one session, to the cloud. A cloud endpoint has one
session per device that talks to it, all over the same connection and the
same two wildcard subscriptions, so a fleet costs one connection, not one per
device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack

from ..config import SessionConfig
from ..errors import ErrorCode
from ..session import Role, Session
from ..topics import TopicLayout, validate_name
from .config import BrokerConfig
from .link import ConnectionInfo, Message, MqttLink
from .peer import PeerSession
from .stream import Stream

log = logging.getLogger("seqstream.mqtt")

CLOUD_PEER = "cloud"


def new_epoch() -> int:
    """Microseconds since 1970: grows across restarts as long as the clock does."""
    return time.time_ns() // 1000


def presence(online: bool, epoch: int) -> bytes:
    return msgpack.packb({"online": online, "epoch": epoch})


class Endpoint:
    def __init__(
        self,
        *,
        role: Role,
        name: str,
        broker: BrokerConfig,
        session_config: SessionConfig | None = None,
        layout: TopicLayout | None = None,
        epoch: int | None = None,
        accept_peer: Callable[[str], bool] | None = None,
        offline_grace: float = 15.0,
    ) -> None:
        self.role = role
        self.name = validate_name(name, "device name" if role is Role.DEVICE else "replica name")
        self.broker = broker
        self.session_config = session_config or SessionConfig()
        self.layout = layout or TopicLayout()
        self.epoch = epoch or new_epoch()
        self.offline_grace = offline_grace
        self.stats: Counter[str] = Counter()
        self._accept_peer = accept_peer or (lambda name: True)
        self._peers: dict[str, PeerSession] = {}
        self._presence: dict[str, bool] = {}
        self._offline_timers: dict[str, asyncio.TimerHandle] = {}
        self._dirty: dict[str, PeerSession] = {}
        self._routes: dict[str, PeerSession] = {}  # topic -> session, for the hot path
        self._flush_scheduled = False
        self._incoming: asyncio.Queue[Stream] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        layout_ = self.layout
        if role is Role.DEVICE:
            status = layout_.device_status(self.name)
            subscriptions = [layout_.down(self.name), layout_.all_cloud_status]
            client_id = f"edgefleet-dev-{self.name}"
        else:
            status = layout_.cloud_status(self.name)
            subscriptions = [layout_.all_up, layout_.all_device_status]
            client_id = f"edgefleet-cloud-{self.name}"
        self._status_topic = status
        self.link = MqttLink(
            config=broker,
            client_id=client_id,
            subscriptions=subscriptions,
            on_message=self._on_message,
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
            on_batch_end=self._flush_now,
            will=Message(status, presence(False, self.epoch), retain=True),
            birth=Message(status, presence(True, self.epoch), retain=True),
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Endpoint:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self.link.run(), name=f"seqstream-link-{self.name}")
        self._task.add_done_callback(self._link_done)
        if self.role is Role.DEVICE:
            self.session()  # the device starts its handshake right away
        return self

    async def close(self) -> None:
        """Close every session, say goodbye (offline presence), disconnect."""
        for peer in list(self._peers.values()):
            peer.close()
        self._peers.clear()
        for handle in self._offline_timers.values():
            handle.cancel()
        await asyncio.sleep(0)  # let the send loop take the CLOSE packets
        await self.link.close(Message(self._status_topic, presence(False, self.epoch), retain=True))
        task, self._task = self._task, None
        for _ in range(3):  # bounded: a cancel can be lost in a race (see MqttLink.close)
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        if task is not None and not task.done():
            log.error("MQTT link task of %s did not stop", self.name)

    async def __aenter__(self) -> Endpoint:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.link.connected.wait(), timeout)

    # ------------------------------------------------------------------ sessions and streams

    def session(self, peer: str | None = None) -> PeerSession:
        """The session to ``peer`` (a device name; the cloud for a device endpoint)."""
        if self.role is Role.DEVICE:
            peer = CLOUD_PEER
        elif peer is None:
            raise ValueError("a cloud endpoint needs the device name")
        existing = self._peers.get(peer)
        if existing is not None:
            return existing
        validate_name(peer)
        core = Session(role=self.role, epoch=self.epoch, config=self.session_config)
        topic = self.layout.up(self.name) if self.role is Role.DEVICE else self.layout.down(peer)
        session = PeerSession(self, peer, core, topic)
        session.online = self._presence.get(peer)
        self._peers[peer] = session
        if self.link.info is not None and self.link.connected.is_set():
            core.set_transport_limit(self.link.info.max_packet - len(topic) if self.link.info.max_packet else None)
        return session

    @property
    def sessions(self) -> list[PeerSession]:
        return list(self._peers.values())

    async def open_stream(self, metadata: dict[str, Any], *, peer: str | None = None) -> Stream:
        return await self.session(peer).open_stream(metadata)

    async def accept(self) -> Stream:
        """The next stream a peer opened."""
        return await self._incoming.get()

    def incoming(self, stream: Stream) -> None:
        self.stats["streams_accepted"] += 1
        self._incoming.put_nowait(stream)

    def forget(self, peer: PeerSession) -> None:
        if self._peers.get(peer.name) is peer:
            del self._peers[peer.name]
        for topic in [t for t, p in self._routes.items() if p is peer]:
            del self._routes[topic]

    # ------------------------------------------------------------------ flushing

    def schedule_flush(self, peer: PeerSession) -> None:
        self._dirty[peer.name] = peer
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush_now(self) -> None:
        """End of a burst of incoming messages: answer now rather than a loop turn later."""
        if self._dirty:
            self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        # Bounded: a flush may dirty peers again (events wake streams), which
        # schedules the next round instead of looping here.
        dirty, self._dirty = self._dirty, {}
        for peer in dirty.values():
            try:
                peer.flush()
            except Exception:
                self.stats["flush_errors"] += 1
                log.exception("session with %s failed to flush; resetting its streams", peer.name)
                peer.abort_streams(ErrorCode.INTERNAL_ERROR, "internal error")
        if dirty:
            self.link.write_now()

    # ------------------------------------------------------------------ MQTT callbacks

    def _on_message(self, message: Message) -> None:
        route = self._routes.get(message.topic)
        if route is not None:
            route.receive(message.payload)
            return
        parsed = self.layout.parse(message.topic)
        if parsed is None:
            self.stats["foreign_topics"] += 1
            return
        scope, name, kind = parsed
        if kind == "status":
            self._on_presence(scope, name, message.payload)
            return
        if self.role is Role.DEVICE:
            if scope == "dev" and name == self.name and kind == "down":
                self._routes[message.topic] = self.session()
                self.session().receive(message.payload)
                return
        elif scope == "dev" and kind == "up":
            peer = self._peers.get(name)
            if peer is None:
                try:
                    validate_name(name)
                except ValueError:
                    self.stats["bad_peer_names"] += 1
                    return
                if not self._accept_peer(name):
                    self.stats["refused_peers"] += 1
                    return
                peer = self.session(name)
            self._routes[message.topic] = peer
            peer.receive(message.payload)
            return
        self.stats["foreign_topics"] += 1

    def _on_presence(self, scope: str, name: str, payload: bytes) -> None:
        if (self.role is Role.DEVICE) != (scope == "cloud"):
            return  # our own kind's presence
        try:
            info = msgpack.unpackb(payload) if payload else {"online": False}
            online = bool(info["online"])
        except Exception:
            self.stats["bad_presence"] += 1
            return
        peer_name = CLOUD_PEER if self.role is Role.DEVICE else name
        self.stats["presence_online" if online else "presence_offline"] += 1
        self._presence[peer_name] = online
        peer = self._peers.get(peer_name)
        if peer is not None:
            peer.online = online
        timer = self._offline_timers.pop(peer_name, None)
        if timer is not None:
            timer.cancel()
        if not online and peer is not None and peer.streams and self._loop is not None:
            self._offline_timers[peer_name] = self._loop.call_later(self.offline_grace, self._peer_gone, peer_name)

    def _peer_gone(self, name: str) -> None:
        self._offline_timers.pop(name, None)
        peer = self._peers.get(name)
        if peer is not None and peer.online is False:
            log.warning("%s stayed offline for %.0fs; resetting its streams", name, self.offline_grace)
            peer.abort_streams(ErrorCode.PEER_OFFLINE, f"{name} went offline")

    def _on_connected(self, info: ConnectionInfo) -> None:
        for peer in self._peers.values():
            peer.transport_up(info.max_packet)

    def _on_disconnected(self) -> None:
        self.stats["disconnects"] += 1

    def _link_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("MQTT link task died: %r", task.exception())
