"""The intake's PUBLISH fast path agrees with paho's own decoder, byte for byte.

Packets are encoded here by the MQTT 5.0 spec (section 3.3) and decoded twice: by
``_BufferedClient.take_publishes`` and by paho's ``decode_publish``. What the fast path
leaves (another packet type, QoS 2, a packet cut by the end of the buffer) must stay in the
buffer, untouched, for paho's reader.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.receive import _BufferedClient


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_parts(
    topic: str, payload: bytes, qos: int, mid: int, props: bytes, *, retain: bool = False
) -> tuple[int, bytes]:
    """The fixed header's first byte and the packet's body (variable header and payload)."""
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name
    if qos:
        body += struct.pack("!H", mid)
    body += varint(len(props)) + props + payload
    return 0x30 | qos << 1 | int(retain), body


def publish(topic: str, payload: bytes, qos: int, mid: int, props: bytes, *, retain: bool = False) -> bytes:
    header, body = publish_parts(topic, payload, qos, mid, props, retain=retain)
    return bytes([header]) + varint(len(body)) + body


def user_properties(pairs: list[tuple[str, str]]) -> bytes:
    if not pairs:
        return b""
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = pairs
    packed: bytes = props.pack()
    return packed[len(varint(len(packed) - 1)) :] if packed else b""  # pack() prefixes the length


def client() -> _BufferedClient:
    return _BufferedClient(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )


def take(c: _BufferedClient, data: bytes) -> list[tuple[bytes, bytes, int, int]]:
    c._rdata, c._rpos = data, 0
    out: list[tuple[bytes, bytes, int, int]] = []
    c.take_publishes(lambda *m: out.append(m))
    return out


def paho_decode(header: int, body: bytes) -> tuple[bytes, bytes, int, int]:
    r = _packet.decode_publish(header, bytearray(body), MQTTProtocolVersion.MQTTv5)
    return r.topic, r.payload, r.mid if r.qos else 0, r.qos


utf8 = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")  # MQTT-1.5.4-2
messages = st.lists(
    st.tuples(
        st.text(utf8, min_size=1, max_size=80),
        st.binary(max_size=400),
        st.sampled_from([0, 1]),
        st.integers(1, 65535),
        st.lists(st.tuples(st.text(utf8, max_size=8), st.text(utf8, max_size=300)), max_size=3),
        st.booleans(),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_the_fast_path_decodes_what_paho_decodes(msgs):
    parts = [publish_parts(t, p, q, m, user_properties(u), retain=r) for t, p, q, m, u, r in msgs]
    packets = [bytes([h]) + varint(len(b)) + b for h, b in parts]
    assert take(client(), b"".join(packets)) == [paho_decode(h, b) for h, b in parts]


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_a_packet_cut_by_the_end_of_the_buffer_is_left_for_paho(msgs, data):
    parts = [publish_parts(t, p, q, m, user_properties(u)) for t, p, q, m, u, _ in msgs]
    packets = [bytes([h]) + varint(len(b)) + b for h, b in parts]
    whole = b"".join(packets)
    cut = data.draw(st.integers(0, len(whole) - 1))
    c = client()
    got = take(c, whole[:cut])
    assert got == [paho_decode(h, b) for h, b in parts[: len(got)]]
    assert sum(len(pk) for pk in packets[: len(got)]) == c._rpos <= cut  # complete ones only
    assert len(got) < len(packets)


def test_other_packets_and_qos_2_stop_the_fast_path_where_they_begin():
    first = publish("a/b", b"one", 1, 7, b"")
    puback = struct.pack("!BBH", 0x40, 2, 9)
    qos2 = publish("a/b", b"two", 2, 8, b"")
    for stopper in (puback, qos2, b"\xd0\x00"):  # PUBACK, QoS 2 PUBLISH, PINGRESP
        c = client()
        assert take(c, first + stopper + first) == [(b"a/b", b"one", 7, 1)]
        assert c._rpos == len(first)


def test_lengths_that_do_not_add_up_are_left_for_paho_to_refuse():
    bad_topic_len = b"\x32\x06\x00\x40ab\x00\x01"  # topic length 64 in a 6-byte body
    bad_varint = b"\x30\xff\xff\xff\xff\x01"  # a remaining length of five bytes
    for bad in (bad_topic_len, bad_varint):
        c = client()
        assert take(c, bad) == []
        assert c._rpos == 0


def test_acks_for_many_messages_go_out_as_one_write():
    c = client()
    c.ack_many([1, 2, 300])
    (queued,) = list(c._out_packet)
    assert queued["packet"] == b"\x40\x02\x00\x01" + b"\x40\x02\x00\x02" + b"\x40\x02\x01\x2c"
