"""A short path for the messages that make up almost all traffic: QoS 0 PUBLISH.

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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

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
