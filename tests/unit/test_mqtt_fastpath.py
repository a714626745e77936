"""The QoS 0 PUBLISH short path agrees with paho's own decoder, or declines."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from seqstream.mqtt._fastpath import Publisher, parse_plain_publish, publish_header

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


def queued_bytes(v5: bool, publish) -> bytes:
    """What a paho client (not connected; writes only queued) has queued after ``publish(client)``."""
    from paho.mqtt.client import Client
    from paho.mqtt.enums import CallbackAPIVersion

    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    client = Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    client._sock = object()  # "connected": paho queues instead of refusing
    client.on_socket_register_write = lambda *args: None  # and leaves the writing to a loop
    try:
        publish(client)
        return b"".join(bytes(entry["packet"]) for entry in client._out_packet)
    finally:
        client._sock = None


@given(
    topics,
    st.one_of(st.binary(max_size=300), st.binary(min_size=16 * 1024, max_size=20 * 1024)),
    st.booleans(),
    st.booleans(),
)
def test_publisher_queues_what_paho_would_send(topic: str, payload: bytes, retain: bool, v5: bool) -> None:
    theirs = queued_bytes(v5, lambda c: c.publish(topic, payload, 0, retain))
    ours = queued_bytes(v5, lambda c: Publisher(c).publish(topic, payload, retain))
    assert ours == theirs


def test_publisher_declines_without_a_connection_and_fits_this_paho() -> None:
    from paho.mqtt.client import Client
    from paho.mqtt.enums import CallbackAPIVersion

    client = Client(CallbackAPIVersion.VERSION2)
    assert Publisher.fits(client)
    assert Publisher(client).publish("t", b"x", False) is False
    assert not client._out_packet


@given(st.integers(0, 268_435_455 - 64))
def test_publish_header_length_field_round_trips(size: int) -> None:
    head = publish_header(b"t", size, retain=False, v5=True)
    value, shift, pos = 0, 0, 1
    while True:
        byte = head[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            break
    assert value == 2 + 1 + 1 + size
    assert head[pos:] == b"\x00\x01t\x00"
