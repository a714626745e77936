"""The QoS 0 PUBLISH short path agrees with paho's own decoder, or declines."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from seqstream.mqtt._fastpath import parse_plain_publish

topics = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"), min_size=1, max_size=40)


def publish_body(topic: bytes, payload: bytes, *, qos: int, v5: bool, expiry: int | None = None) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += (7).to_bytes(2, "big")  # packet id
    if v5:
        if expiry is None:
            body += b"\x00"
        else:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = expiry
            body += props.pack()
    return body + payload


@given(topics, st.binary(max_size=2000), st.booleans(), st.booleans())
def test_plain_publish_matches_paho(topic: str, payload: bytes, retain: bool, v5: bool) -> None:
    command = 0x30 | (0x01 if retain else 0)
    body = publish_body(topic.encode(), payload, qos=0, v5=v5)
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    theirs = _packet.decode_publish(command, body, protocol)
    ours = parse_plain_publish(command, bytearray(body), v5)
    assert ours == (theirs.topic.decode(), theirs.payload, theirs.retain)


@given(topics, st.binary(max_size=200), st.integers(1, 2), st.integers(0, 1000))
def test_declines_what_paho_must_handle(topic: str, payload: bytes, qos: int, expiry: int) -> None:
    body = publish_body(topic.encode(), payload, qos=qos, v5=True)
    assert parse_plain_publish(0x30 | qos << 1, body, True) is None  # QoS 1/2: acks are paho's job
    with_props = publish_body(topic.encode(), payload, qos=0, v5=True, expiry=expiry)
    assert parse_plain_publish(0x30, with_props, True) is None  # properties present
    assert parse_plain_publish(0x30, b"\x00\x00\x00" + payload, True) is None  # topic alias
    assert parse_plain_publish(0x90, body, True) is None  # not a PUBLISH


@given(st.binary(max_size=64))
def test_garbage_never_raises(data: bytes) -> None:
    for v5 in (True, False):
        result = parse_plain_publish(0x30, data, v5)
        assert result is None or isinstance(result[1], bytes)
