"""One MQTT connection that stays up: connect, subscribe, reconnect with backoff.

The link knows nothing about sessions. It hands every message to
``on_message`` and reports connects and disconnects; ``publish`` never blocks
and drops while the broker is away (seqstream retransmits; presence messages
are re-sent on every connect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import _fastpath as fastpath
from .config import BrokerConfig

log = logging.getLogger("seqstream.mqtt")

_UNSUPPORTED_PROTOCOL = {1, 132}  # CONNACK codes of 3.1.1 and MQTT 5 for "unsupported version"
_TOPIC_OVERHEAD = 64  # fixed header, topic length, properties


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    protocol: str  # "5" or "3.1.1"
    max_packet: int | None  # broker's Maximum Packet Size (MQTT 5 only)


def _reason_value(rc: Any) -> int | None:
    """aiomqtt passes paho ReasonCode objects or plain ints."""
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else None


def _no_delay(client: aiomqtt.Client) -> None:
    """TCP_NODELAY: a small packet right after another (an ack, then data) must not wait for the
    broker's delayed ACK under Nagle - that cost 40-90 ms per request/response exchange."""
    sock: Any = client._client.socket()
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Client(aiomqtt.Client):
    """aiomqtt with two additions seqstream needs.

    * CONNACK properties are kept (Maximum Packet Size).
    * Messages can be handed over directly as paho reads them: aiomqtt's
      iterator costs a task and a wait per message, a large share of the CPU
      a packet costs at high rates.
    """

    connack_properties: Properties | None = None
    deliver: Callable[[Message], None] | None = None

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        self.connack_properties = properties
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if self.deliver is None:
            super()._on_message(client, userdata, message)
            return
        try:
            self.deliver(Message(message.topic, message.payload, message.retain, message.qos))
        except Exception:  # never let a handler bug tear down the connection
            log.exception("handling a message on %s failed", message.topic)

    async def until_disconnected(self) -> None:
        """Returns on a clean disconnect; raises MqttError when the link broke."""
        await self._disconnected


class MqttLink:
    def __init__(
        self,
        *,
        config: BrokerConfig,
        client_id: str,
        subscriptions: list[str],
        on_message: Callable[[Message], None],
        on_connected: Callable[[ConnectionInfo], None] = lambda info: None,
        on_disconnected: Callable[[], None] = lambda: None,
        on_batch_end: Callable[[], None] = lambda: None,
        will: Message | None = None,
        birth: Message | None = None,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.on_batch_end = on_batch_end
        self.will = will
        self.birth = birth
        self.connected = asyncio.Event()
        self.info: ConnectionInfo | None = None
        self.last_error: str | None = None
        self.stats = {
            "connects": 0,
            "connect_failures": 0,
            "published": 0,
            "dropped_offline": 0,
            "received": 0,
            "internal_errors": 0,
            "dropped_by_filter": 0,
            "publish_errors": 0,
        }
        self._protocol = config.protocol
        self._client: _Client | None = None
        self._publisher: fastpath.Publisher | None = None
        self._write_scheduled = False
        self._message_expiry: Properties | None = None
        self.connected_once = False
        self._stopping = False
        self._batch_pending = False
        self.outbound_filter: Callable[[Message], bool] | None = None
        """Fault injection for tests and benchmarks: return False to drop a message."""

    # ------------------------------------------------------------------ public

    def publish(self, topic: str, payload: bytes, *, qos: int | None = None, retain: bool = False) -> bool:
        """Hand a message to the MQTT client without waiting; False if it was dropped.

        Goes straight to paho's non-blocking publish (what aiomqtt's ``publish``
        wraps) because awaiting a confirmation per packet would cost an event
        loop round per packet; seqstream does its own acknowledgement.
        """
        client = self._client
        if client is None or not self.connected.is_set():
            self.stats["dropped_offline"] += 1
            return False
        qos = self.config.qos if qos is None else qos
        if self.outbound_filter is not None and not self.outbound_filter(Message(topic, payload, retain, qos)):
            self.stats["dropped_by_filter"] += 1
            return True
        if qos == 0 and self._publisher is not None:
            if not self._publisher.publish(topic, payload, retain):
                self.stats["publish_errors"] += 1
                return False
            if not self._write_scheduled:  # a safety net: a flush normally writes at its end
                self._write_scheduled = True
                asyncio.get_running_loop().call_soon(self.write_now)
            self.stats["published"] += 1
            return True
        props = self._message_expiry if qos > 0 and not retain else None
        info = client._client.publish(topic, payload, qos, retain, props)
        if info.rc != 0:
            self.stats["publish_errors"] += 1
            return False
        self.stats["published"] += 1
        return True

    def write_now(self) -> None:
        """Hand queued packets to the socket at once.

        aiomqtt writes when the event loop next reports the socket writable,
        a loop turn later, behind whatever else that turn runs (on a busy
        bridge: TLS, SPDY, other streams). Called at the end of a flush, this
        makes a stream's OPEN or a keystroke leave right away. What the socket
        does not take makes paho register for writability; while it is
        registered, writing is left to that callback: aiomqtt adds the writer a
        loop turn late but removes it at once, so writing here meanwhile could
        leave a writer registered with nothing to write, woken on every turn.
        """
        self._write_scheduled = False
        client = self._client
        if client is None:
            return
        paho = client._client
        if paho.want_write() and not getattr(paho, "_registered_write", True):
            try:
                paho.loop_write()
            except Exception as exc:  # as aiomqtt's own writer: the connection is broken
                self.stats["write_errors"] += 1
                log.debug("writing to the broker failed: %s", exc)

    async def run(self) -> None:
        """Connect and reconnect until cancelled."""
        delay = self.config.reconnect_min
        while not self._stopping:
            try:
                await self._session()
                delay = self.config.reconnect_min
            except asyncio.CancelledError:
                raise
            except MqttConnectError as exc:
                self.stats["connect_failures"] += 1
                self._note_failure(f"broker {self.config.url} refused the connection: {exc}")
            except (aiomqtt.MqttError, OSError) as exc:
                self.stats["connect_failures"] += 1
                self._note_failure(f"connection to {self.config.url} lost: {exc}")
            except Exception:
                self.stats["internal_errors"] += 1
                log.exception("MQTT link to %s failed unexpectedly; reconnecting", self.config.url)
            finally:
                self._went_down()
            if self._stopping:
                return
            # Full jitter (AWS architecture blog): spread reconnects of a fleet.
            await asyncio.sleep(random.uniform(self.config.reconnect_min, delay))
            delay = min(delay * 2, self.config.reconnect_max)

    # ------------------------------------------------------------------ internals

    def _note_failure(self, text: str) -> None:
        if text != self.last_error:
            log.warning("%s", text)
        self.last_error = text

    def _went_down(self) -> None:
        if self.connected.is_set():
            self.connected.clear()
            self.on_disconnected()

    def _make_client(self) -> _Client:
        v5 = self._protocol == "5"
        cfg = self.config
        will = None
        if self.will is not None:
            props = None
            if v5:
                props = Properties(PacketTypes.WILLMESSAGE)
                props.WillDelayInterval = cfg.will_delay
            will = aiomqtt.Will(self.will.topic, self.will.payload, 1, True, props)
        persistent = cfg.qos > 0
        connect_props = None
        if v5 and persistent:
            connect_props = Properties(PacketTypes.CONNECT)
            connect_props.SessionExpiryInterval = cfg.session_expiry
        return _Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=will,
            clean_session=None if v5 else not persistent,
            clean_start=(not persistent) if v5 else 3,  # 3 = paho's MQTT_CLEAN_START_FIRST_ONLY
            keepalive=cfg.keepalive,
            timeout=cfg.connect_timeout,
            tls_context=cfg.tls,
            properties=connect_props,
            max_queued_outgoing_messages=0,
        )

    async def _probe_protocol(self) -> None:
        """Settle ``auto``: a bare MQTT 5 CONNECT, since some 3.1.1-only brokers
        (amqtt) hang up without a CONNACK on an MQTT 5 CONNECT that has a will."""
        cfg = self.config
        probe = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            tls_context=cfg.tls,
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=cfg.connect_timeout,
            identifier=f"{self.client_id}-probe",
        )
        try:
            async with probe:
                self._protocol = "5"
        except MqttConnectError as exc:
            if _reason_value(exc.rc) not in _UNSUPPORTED_PROTOCOL:
                raise
            self._protocol = "3.1.1"
        log.info("broker %s speaks MQTT %s", cfg.url, self._protocol)

    async def _session(self) -> None:
        if self._protocol == "auto":
            await self._probe_protocol()
        client = self._make_client()
        client.deliver = self._deliver
        async with client:
            self._client = client
            _no_delay(client)
            fastpath.install(client._client, self._deliver_plain)
            self._publisher = fastpath.Publisher(client._client) if fastpath.Publisher.fits(client._client) else None
            qos = self.config.qos
            for topic in self.subscriptions:
                await client.subscribe(topic, qos=qos)
            protocol = "5" if client._client.protocol == 5 else "3.1.1"
            max_packet = None
            props = client.connack_properties
            if props is not None and hasattr(props, "MaximumPacketSize"):
                max_packet = int(props.MaximumPacketSize) - _TOPIC_OVERHEAD
            self.info = ConnectionInfo(protocol, max_packet)
            if self.birth is not None:
                await client.publish(self.birth.topic, self.birth.payload, qos=1, retain=True)
            self.stats["connects"] += 1
            self.connected_once = True
            self.last_error = None
            log.info("connected to %s (MQTT %s) as %s", self.config.url, protocol, self.client_id)
            if protocol == "5" and self.config.qos > 0:
                self._message_expiry = Properties(PacketTypes.PUBLISH)
                self._message_expiry.MessageExpiryInterval = 60  # stale stream packets are useless
            if self._stopping:
                return
            self.connected.set()
            self.on_connected(self.info)
            try:
                await client.until_disconnected()
            finally:
                self._client = None
                self._publisher = None

    def _deliver_plain(self, topic: str, payload: bytes, retain: bool) -> None:
        self._deliver(Message(topic, payload, retain, 0))

    def _deliver(self, message: Message) -> None:
        self.stats["received"] += 1
        self.on_message(message)
        if not self._batch_pending:
            # paho hands over every message of one socket read before the loop
            # runs callbacks again: the end of that burst is the next loop turn.
            self._batch_pending = True
            asyncio.get_running_loop().call_soon(self._end_batch)

    def _end_batch(self) -> None:
        self._batch_pending = False
        self.on_batch_end()

    async def close(self, final: Message | None = None) -> None:
        """Publish ``final`` (e.g. an offline status) if connected, then disconnect.

        Stopping does not rely on cancellation alone: Python 3.11's
        ``asyncio.wait_for`` can swallow a cancel that races with completion,
        so the run loop also checks a flag and the connection is closed.
        """
        self._stopping = True
        client = self._client
        if client is not None and final is not None and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                await asyncio.wait_for(
                    client.publish(final.topic, final.payload, qos=1, retain=final.retain), timeout=2.0
                )
        if client is not None:
            client._client.disconnect()
