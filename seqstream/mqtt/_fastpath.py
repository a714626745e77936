"""A short path for the messages that make up almost all traffic: QoS 0 PUBLISH.

Receiving:

paho decodes every PUBLISH into an ``MQTTMessage``: the payload is copied
four times while the packet is split (``struct.unpack`` of ``{n}s``, then
slices), and with MQTT 5 a ``Properties`` object - two dictionaries of 27
entries built per instance - is made even when the packet carries none.
Profiling the bridge moving a port-forward showed paho's publish handling at
about a fifth of its CPU. For QoS 0 packets without properties (what
seqstream sends by default) we parse the packet ourselves, copy the payload
once and hand it straight to the link. Everything else (QoS 1/2, properties,
topic aliases, anything malformed) goes through paho's own handler, so its
behaviour is unchanged there.

Sending: paho's ``publish`` builds each packet in a bytearray (one copy of the
payload) and writes it with ``packet[pos:]``, which copies a bytearray again
even at position 0; it also makes a ``ReasonCode`` and a ``Properties`` per
packet for its ``on_publish`` callback. ``Publisher`` queues the few header
bytes and the payload as two entries of paho's own output queue (the wire
carries them back to back, one PUBLISH), the payload as a memoryview so
partial writes cost no copy, and under a command value paho attaches no
callback to. Small payloads are joined with their header instead: one write.
The entries are only queued: the caller writes them (``MqttLink.write_now``),
which avoids a write-readiness registration per flush.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

_JOIN_BELOW = 16 * 1024
"""Payloads shorter than this go out as one joined packet (one write beats a copy saved)."""
_QUIET = 0
"""The command value of our queue entries: paho runs no callback when one is written."""

log = logging.getLogger("seqstream.mqtt")

_PUBLISH = 0x30


def parse_plain_publish(command: int, packet: bytes | bytearray, v5: bool) -> tuple[str, bytes, bool] | None:
    """``(topic, payload, retain)`` of a QoS 0 PUBLISH with no properties; None for
    anything else (left to paho). ``packet`` is what follows the fixed header."""
    if command & 0xF0 != _PUBLISH or command & 0x06:
        return None
    if len(packet) < 2:
        return None
    topic_len = (packet[0] << 8) | packet[1]
    pos = 2 + topic_len
    if topic_len == 0 or pos > len(packet):
        return None  # an empty topic means a topic alias (MQTT 5) or a malformed packet
    if v5:
        if pos >= len(packet) or packet[pos] != 0:
            return None  # properties present (or truncated): paho's decoder handles them
        pos += 1
    try:
        topic = bytes(packet[2 : 2 + topic_len]).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return topic, bytes(memoryview(packet)[pos:]), bool(command & 0x01)


def install(paho_client: Any, deliver: Callable[[str, bytes, bool], None]) -> bool:
    """Route plain QoS 0 publishes of ``paho_client`` to ``deliver``; False if this
    paho does not look like the one this was written for (then nothing changes)."""
    original = getattr(paho_client, "_handle_publish", None)
    if original is None or not hasattr(paho_client, "_in_packet") or not hasattr(paho_client, "protocol"):
        return False

    def handle_publish() -> Any:
        packet = paho_client._in_packet
        parsed = parse_plain_publish(packet["command"], packet["packet"], paho_client.protocol == 5)
        if parsed is None:
            return original()
        try:
            deliver(*parsed)
        except Exception:  # never let a handler bug tear down the connection
            log.exception("handling a message on %s failed", parsed[0])
        return 0  # MQTT_ERR_SUCCESS

    paho_client._handle_publish = handle_publish
    return True


def publish_header(topic: bytes, payload_len: int, *, retain: bool, v5: bool) -> bytes:
    """Fixed header, topic and (MQTT 5) empty properties of a QoS 0 PUBLISH."""
    remaining = 2 + len(topic) + (1 if v5 else 0) + payload_len
    head = bytearray((_PUBLISH | (0x01 if retain else 0),))
    while True:  # the Remaining Length variable byte integer
        byte, remaining = remaining & 0x7F, remaining >> 7
        head.append(byte | 0x80 if remaining else byte)
        if not remaining:
            break
    head += len(topic).to_bytes(2, "big") + topic
    if v5:
        head.append(0)
    return bytes(head)


class Publisher:
    """QoS 0 publishes without properties, queued on a connected paho client."""

    def __init__(self, paho_client: Any) -> None:
        self._client = paho_client

    @staticmethod
    def fits(paho_client: Any) -> bool:
        """True if this paho has the queue this was written for."""
        return all(hasattr(paho_client, name) for name in ("_out_packet", "_sock", "_registered_write", "protocol"))

    def publish(self, topic: str, payload: bytes, retain: bool) -> bool:
        """Queue one PUBLISH; False if the client has no connection (as paho's NO_CONN)."""
        client = self._client
        if client._sock is None:
            return False
        head = publish_header(topic.encode(), len(payload), retain=retain, v5=client.protocol == 5)
        parts = (head + payload,) if len(payload) < _JOIN_BELOW else (head, memoryview(payload))
        for part in parts:
            client._out_packet.append(
                {"command": _QUIET, "mid": 0, "qos": 0, "pos": 0, "to_process": len(part), "packet": part, "info": None}
            )
        return True
