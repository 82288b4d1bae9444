"""The MQTT intake: paho-mqtt driven by the asyncio loop, with acknowledgements after storage.

Why paho directly and not aiomqtt: aiomqtt 2.x hands each message through an asyncio queue
and a future, and acknowledges it on receipt (empicano/aiomqtt#345). Here paho's socket is
watched with ``loop.add_reader`` (as aiomqtt itself does), ``on_message`` appends to a plain
list in the loop thread, and the service takes the list as one batch: no task, future or
queue per message. paho's ``manual_ack_set(True)`` (public API in paho 2.x) withholds the
PUBACK until :meth:`MqttIntake.ack`; Mosquitto redelivers unacknowledged messages to the
persistent session (MQTT v5, ``clean_start=False``, a session expiry). The broker sends at most
``receive_maximum`` unacknowledged messages, which is the backpressure.

The fast path (:class:`_BufferedClient`: large socket reads, PUBLISH packets parsed straight from
the buffer, PUBACKs in one write) relies on five private paho names, listed in
:data:`FAST_PATH_NEEDS` and checked against the installed paho at start-up. If one is missing
(a paho release that renamed it), or ``[ingest] fast_path = false``, ingest uses paho's own
reader (``on_message``, one ``ack()`` per message) and logs ``mqtt.fast_path_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.validate import Incoming
from weijian.config import IngestSettings, MqttSettings
from weijian.errors import MqttLost, SessionTakenOver

__all__ = [
    "FAST_PATH_NEEDS",
    "MqttIntake",
    "MqttLost",
    "SessionTakenOver",
    "Subscription",
    "ack_tokens",
    "fast_path_problem",
]

log = logging.getLogger(__name__)

_MAX_READS_PER_WAKEUP = 512  # paho reads one packet per loop_read(); take a burst per wake-up
_PUBACK = struct.Struct("!BBH")


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


# (where, name): the paho internals the fast path reads, overrides or calls (paho 2.2.0).
FAST_PATH_NEEDS: tuple[tuple[str, str], ...] = (
    ("Client", "_sock_recv"),  # overridden: large reads, paho's small reads served from memory
    ("Client", "_packet_queue"),  # called: many PUBACKs in one write
    ("client", "_in_packet"),  # read: whether paho is part-way through a packet
    ("client", "_last_bytes_received"),  # set: what paho's keepalive check reads
    ("MQTTMessage", "_topic"),  # read: the raw topic bytes of paho's own messages
)


def fast_path_problem() -> str | None:
    """Which of :data:`FAST_PATH_NEEDS` the installed paho lacks (None: all are there)."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    objects = {"Client": mqtt.Client, "client": client, "MQTTMessage": mqtt.MQTTMessage()}
    missing = [f"{where}.{name}" for where, name in FAST_PATH_NEEDS if not hasattr(objects[where], name)]
    in_packet = getattr(client, "_in_packet", None)
    if isinstance(in_packet, dict) and "command" not in in_packet:
        missing.append("client._in_packet['command']")
    if missing:
        return f"paho-mqtt {getattr(mqtt, '__version__', '?')} lacks {', '.join(missing)}"
    return None


class _Client(mqtt.Client):
    """paho's client, handing each message straight to ``on_message``.

    paho looks every message up in its topic-filter matcher first (``message_callback_add``,
    which ingest never uses). The matcher's recursive closure leaves a reference cycle per
    message: tens of thousands of dead objects a second for the cyclic collector, whose young
    generation then took 30-85 ms per run and stalled the loop (alert latency). If a paho
    release renames ``_handle_on_message``, paho's own path runs instead: slower, never wrong.
    """

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        on_message = self.on_message
        if on_message is not None:
            on_message(self, None, message)


class _PlainClient(_Client):
    """paho's own reader, with the two hooks the intake calls doing what paho does."""

    has_buffered = False

    def take_publishes(self, sink: Callable[[bytes, bytes, int, int], None]) -> int:
        """Nothing: paho's ``on_message`` delivers every message."""
        return 0

    def ack_many(self, mids: list[int]) -> None:
        """One PUBACK per message, through paho's public ``ack()``."""
        for mid in mids:
            self.ack(mid, 1)


class _BufferedClient(_Client):
    """A paho client that reads the socket in large chunks.

    paho reads each packet with three or more ``recv()`` calls (command byte, length bytes,
    body). This reads up to 256 KiB per system call and serves paho's small reads from memory.
    It overrides paho's private ``_sock_recv`` (paho 2.1/2.2), so it lives here and nowhere else.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rdata = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rdata):
            data = super()._sock_recv(262_144)  # raises BlockingIOError when nothing is there
            if not data:
                return data  # the broker closed the connection
            self._rdata, self._rpos = data, 0
        chunk = self._rdata[self._rpos : self._rpos + bufsize]
        self._rpos += len(chunk)
        return chunk

    @property
    def has_buffered(self) -> bool:
        """Whether bytes already read from the socket wait to be parsed."""
        return self._rpos < len(self._rdata)

    def take_publishes(self, sink: Callable[[bytes, bytes, int, int], None]) -> int:
        """Parse the complete QoS 0/1 PUBLISH packets at the head of the read buffer.

        paho builds an ``MQTTMessage``, an MQTT v5 ``Properties`` object (and clears it) and
        looks up topic callbacks for every PUBLISH: about 20 us a message, half of ingest's
        budget. This reads the fixed header, topic, packet id and payload straight from the
        buffer and skips the properties (ingest needs none of them, and asks for no topic
        aliases). Anything else (another packet type, QoS 2, a packet cut by the end of the
        buffer, an inconsistent length) stops it, and paho's own reader takes over from that
        byte, so paho still sees every CONNACK, SUBACK, PUBACK, PINGRESP and DISCONNECT.

        Args:
            sink: called as ``sink(topic, payload, packet_id, qos)`` for each message.

        Returns:
            How many messages were taken.
        """
        if self._in_packet["command"]:
            return 0  # paho is part-way through a packet
        data, pos, end = self._rdata, self._rpos, len(self._rdata)
        taken = 0
        while pos < end:
            header = data[pos]
            qos = (header >> 1) & 3
            if header >> 4 != 3 or qos > 1:
                break
            length, i = _varint(data, pos + 1, end)
            if length < 0:
                break  # cut short, or malformed
            stop = i + length
            if stop > end or length < 2:
                break
            t = i + 2 + ((data[i] << 8) | data[i + 1])
            topic = data[i + 2 : t]
            mid = 0
            if qos:
                mid = (data[t] << 8) | data[t + 1] if t + 2 <= stop else -1
                t += 2
            plen, t = _varint(data, t, stop)  # MQTT v5 property length, then the properties
            if plen < 0:
                break
            t += plen
            if t > stop or mid < 0:
                break  # lengths that do not add up: paho reports the protocol error
            sink(topic, data[t:stop], mid, qos)
            pos = stop
            taken += 1
        if taken:
            self._rpos = pos
            self._last_bytes_received = time.monotonic()  # what paho's keepalive check reads
        return taken

    def ack_many(self, mids: list[int]) -> None:
        """Send the PUBACKs of ``mids`` in one write instead of one packet (and syscall) each."""
        if mids:
            packet = b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids])
            self._packet_queue(0x40, packet, 0, 0)


def ack_tokens(messages: list[Incoming]) -> list[int]:
    """What acknowledging each message needs, one int each: ``qos << 16 | mid``.

    For a caller that keeps messages long after handling them only to acknowledge them: the
    ints hold no payload or topic. MQTT packet ids are 16-bit, so the two never mix.
    """
    return [m.qos << 16 | m.mid for m in messages]


def _varint(data: bytes, i: int, end: int) -> tuple[int, int]:
    """The MQTT variable byte integer at ``data[i:end]`` and the index after it.

    Returns ``(-1, i)`` if it is cut short by ``end`` or longer than the four bytes allowed.
    """
    value = shift = 0
    while i < end and shift <= 21:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
    return -1, i


_fast_path_checked: str | bool | None = False  # False: not checked yet


def _use_fast_path(wanted: bool) -> bool:
    """Whether to use the fast path: asked for, and the installed paho has what it needs."""
    global _fast_path_checked
    if not wanted:
        return False
    if _fast_path_checked is False:
        _fast_path_checked = fast_path_problem()
        if _fast_path_checked is not None:
            log.warning("mqtt.fast_path_unavailable", extra={
                "problem": _fast_path_checked, "using": "paho's own reader (slower, equally correct)",
            })
    return _fast_path_checked is None


_SESSION_TAKEN_OVER = 0x8E
_SUBSCRIBE_CHUNK = 500  # topic filters per SUBSCRIBE packet

Subscription = tuple[str, SubscribeOptions]


class MqttIntake:
    """One MQTT v5 connection: subscribe, collect messages in batches, acknowledge, publish."""

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        ingest: IngestSettings,
        *,
        client_id: str,
        keep: Callable[[bytes], bool] | None = None,
        persistent: bool = True,
        max_pending: int | None = None,
    ) -> None:
        """Prepare a connection.

        Args:
            mqtt_settings: ``[mqtt]``.
            ingest: ``[ingest]`` (batch size, session expiry, receive maximum).
            client_id: the MQTT client id (a partition's session is keyed by it).
            keep: if given, messages whose topic it refuses are dropped unread (the
                unknown-site catcher's QoS 0 copy of the stream).
            persistent: a persistent session (``clean_start=False`` with an expiry), else a
                clean one.
            max_pending: stop reading the socket once this many messages wait (default two
                batches); a process with many sessions gives each a share.
        """
        self._mqtt = mqtt_settings
        self._ingest = ingest
        self._keep = keep
        self._persistent = persistent
        self._loop = asyncio.get_running_loop()
        client_class = _BufferedClient if _use_fast_path(ingest.fast_path) else _PlainClient
        self.fast_path = client_class is _BufferedClient
        client = client_class(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.manual_ack_set(True)
        if mqtt_settings.username:
            password = mqtt_settings.password.get_secret_value() if mqtt_settings.password else None
            client.username_pw_set(mqtt_settings.username, password)
        if mqtt_settings.tls_ca:
            client.tls_set(
                ca_certs=str(mqtt_settings.tls_ca),
                certfile=str(mqtt_settings.tls_cert) if mqtt_settings.tls_cert else None,
                keyfile=str(mqtt_settings.tls_key) if mqtt_settings.tls_key else None,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        self._client = client
        self._pending: list[Incoming] = []
        self._have_batch = asyncio.Event()
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._subscribed: asyncio.Future[None] = self._loop.create_future()
        self.lost: asyncio.Future[None] = self._loop.create_future()
        for fut in (self._connected, self._subscribed, self.lost):
            fut.add_done_callback(_retrieve)  # a normal disconnect leaves these unawaited
        self._published: dict[int, asyncio.Future[None]] = {}
        self._sock: socket.socket | None = None
        self._received = 0
        self._reading = False
        # Read no further ahead than this: whatever the broker's in-flight limit (Receive
        # Maximum is advisory to a broker configured with max_inflight_messages 0), at most two
        # batches wait in memory.
        self._max_pending = max_pending or 2 * ingest.batch_size
        self._have_any = asyncio.Event()  # something is pending (next_batch with idle_s)
        self._paused = False
        self._peek_timer: asyncio.TimerHandle | None = None
        self._peek_every_s = max(0.5, mqtt_settings.keepalive_s / 2)

    # --- paho callbacks, all called in the loop thread ---------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if self._connected.done():  # paho may report a connection more than once
            return
        if rc.is_failure:
            self._connected.set_exception(MqttLost(f"broker refused the connection: {rc}"))
        else:
            log.info("mqtt.connected", extra={"session_present": bool(flags.session_present)})
            self._connected.set_result(None)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        error = SessionTakenOver if getattr(rc, "value", None) == _SESSION_TAKEN_OVER else MqttLost
        for fut in (self._connected, self._subscribed, self.lost):
            if not fut.done():
                fut.set_exception(error(f"disconnected: {rc}"))
        for fut in self._published.values():
            if not fut.done():
                fut.set_exception(MqttLost(f"disconnected: {rc}"))
        self._have_batch.set()
        self._have_any.set()

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        bad = [str(c) for c in codes if c.is_failure]
        if self._subscribed.done():
            return
        if bad:
            self._subscribed.set_exception(MqttLost(f"subscription refused: {bad}"))
            if not self.lost.done():
                self.lost.set_exception(MqttLost(f"subscription refused: {bad}"))
        else:
            self._subscribed.set_result(None)

    def _take(self, topic: bytes, payload: bytes, mid: int, qos: int) -> None:
        self._received += 1
        if self._keep is not None and not self._keep(topic):
            return  # only the catcher filters, and it subscribes at QoS 0: nothing to acknowledge
        try:
            name = topic.decode()
        except UnicodeDecodeError:  # the broker checks UTF-8 topics; be safe anyway
            name = topic.decode("utf-8", "replace")
        self._pending.append(Incoming(name, payload, mid, qos))
        if len(self._pending) >= self._ingest.batch_size:
            self._have_batch.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._received += 1
        raw = getattr(message, "_topic", None)  # absent in a paho without the fast path's names
        try:
            topic = message.topic
        except UnicodeDecodeError:  # the broker checks UTF-8 topics; be safe anyway
            topic = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
        if self._keep is not None and not self._keep(raw if isinstance(raw, bytes) else topic.encode()):
            if message.qos:
                self._client.ack(message.mid, message.qos)
            return
        self._pending.append(Incoming(topic, bytes(message.payload), message.mid, message.qos))
        if len(self._pending) >= self._ingest.batch_size:
            self._have_batch.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        fut = self._published.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    # --- socket plumbing ----------------------------------------------------------------

    def _readable(self) -> None:
        if self._paused or not self._reading:
            return  # a call_soon() from before a pause
        try:
            self._read_burst()
        finally:
            if self._pending:
                self._have_any.set()

    def _read_burst(self) -> None:
        client = self._client
        for _ in range(_MAX_READS_PER_WAKEUP):
            if len(self._pending) >= self._max_pending:
                self._pause()  # TCP backpressure: the broker's sends wait in the socket buffers
                return
            before = self._received
            client.take_publishes(self._take)  # the fast path for what is already buffered
            rc = client.loop_read()  # one packet through paho, refilling the buffer if empty
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            if self._received == before and not self._client.has_buffered:
                break
        if self._client.has_buffered:  # the socket will not wake us for bytes we already hold
            self._loop.call_soon(self._readable)

    def _pause(self) -> None:
        if self._sock is not None and not self._paused:
            self._loop.remove_reader(self._sock)
            self._paused = True
            self._peek_timer = self._loop.call_later(self._peek_every_s, self._peek)

    def _peek(self) -> None:
        """While paused (storage stalled), read one chunk now and then.

        paho closes a connection that has received no byte for 1.5-2 keepalive periods, and
        the PINGRESP sits in the socket behind the messages. One chunk (at most 256 KiB) every
        half keepalive keeps the session alive through a long stall at little cost in memory.
        """
        self._peek_timer = None
        if not self._paused or self._sock is None:
            return
        client = self._client
        client.take_publishes(self._take)
        if client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            client.take_publishes(self._take)
        self._peek_timer = self._loop.call_later(self._peek_every_s, self._peek)

    def _resume(self) -> None:
        room = len(self._pending) < self._max_pending
        if self._paused and self._reading and self._sock is not None and room:
            self._paused = False
            self._cancel_peek()
            self._loop.add_reader(self._sock, self._readable)
            self._loop.call_soon(self._readable)  # for bytes already read into the buffer

    def _writable(self) -> None:
        self._client.loop_write()

    def _register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        self._loop.add_writer(sock, self._writable)

    def _unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        self._loop.remove_writer(sock)

    def _cancel_peek(self) -> None:
        if self._peek_timer is not None:
            self._peek_timer.cancel()
            self._peek_timer = None

    def _socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        self._cancel_peek()
        if sock.fileno() != -1:  # already closed (and unregistered) by close()
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        self._sock = None

    async def connect(self, subscriptions: list[Subscription]) -> None:
        """Connect (persistent session unless told otherwise) and subscribe.

        Raises:
            MqttLost: refused, unreachable or timed out (after ``[mqtt] timeout_s``).
        """
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._ingest.session_expiry_s if self._persistent else 0
        props.ReceiveMaximum = self._ingest.receive_maximum
        try:
            async with asyncio.timeout(self._mqtt.timeout_s):
                # paho's connect() blocks on the TCP (and TLS) handshake: run it off the loop.
                await asyncio.to_thread(
                    self._client.connect,
                    self._mqtt.host,
                    self._mqtt.port,
                    self._mqtt.keepalive_s,
                    clean_start=not self._persistent,
                    properties=props,
                )
                sock = self._client.socket()
                if not isinstance(sock, socket.socket):
                    raise MqttLost("no socket after connect")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                self._sock = sock
                self._client.on_socket_register_write = self._register_write
                self._client.on_socket_unregister_write = self._unregister_write
                self._client.on_socket_close = self._socket_close
                self._loop.add_reader(sock, self._readable)
                self._reading = True
                if self._client.want_write():
                    self._loop.add_writer(sock, self._writable)
                await asyncio.shield(self._connected)
                # Not waiting for the SUBACK: a resumed session's queue (up to receive_maximum
                # messages) arrives before it, and on a slow machine would outlast the timeout,
                # making a reconnect loop. A refused subscription fails the session instead.
                # Plain subscriptions in a persistent session: Mosquitto restores them from its
                # persistence file after a restart (it does not restore $share ones).
                for i in range(0, len(subscriptions), _SUBSCRIBE_CHUNK):
                    self._client.subscribe(subscriptions[i : i + _SUBSCRIBE_CHUNK])
        except (OSError, TimeoutError) as exc:
            raise MqttLost(f"cannot connect to {self._mqtt.host}:{self._mqtt.port}: {exc!r}") from exc

    async def keepalive(self) -> None:
        """Forever: let paho send PINGREQs and notice a dead broker.

        Raises:
            MqttLost: the connection is gone (SessionTakenOver if another client took our id).
        """
        while True:
            await asyncio.sleep(1)
            if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS and not self.lost.done():
                self.lost.set_exception(MqttLost("keepalive failed"))
            if self.lost.done():
                self.lost.result()  # raises: the session's TaskGroup ends, whatever it was waiting on

    async def next_batch(self, interval_s: float, *, idle_s: float | None = None) -> list[Incoming]:
        """Wait until a batch is full or ``interval_s`` passed, then take what has arrived.

        With ``idle_s``, the ``interval_s`` starts only when a message is there: first wait up to
        ``idle_s`` for one (an idle session does not wake every ``interval_s``), then gather for
        ``interval_s`` at most. So a lone message waits ``interval_s``, not up to twice that.
        """
        if idle_s is not None and not self._pending:
            self._have_any.clear()
            try:
                async with asyncio.timeout(idle_s):
                    await self._have_any.wait()
            except TimeoutError:
                pass
            if not self._pending:
                if self.lost.done():
                    self.lost.result()  # raises MqttLost
                return []
        if len(self._pending) < self._ingest.batch_size:
            self._have_batch.clear()
            try:
                async with asyncio.timeout(interval_s):
                    await self._have_batch.wait()
            except TimeoutError:
                pass
        if self.lost.done():
            self.lost.result()  # raises MqttLost
        size = self._ingest.batch_size
        batch, self._pending = self._pending[:size], self._pending[size:]
        self._resume()
        return batch

    def take_pending(self) -> list[Incoming]:
        """Take whatever has arrived without waiting (for the final batch at shutdown)."""
        batch, self._pending = self._pending, []
        return batch

    def stop_reading(self) -> None:
        """Take no new messages (unread ones stay with the broker and are redelivered)."""
        self._cancel_peek()
        if self._sock is not None and self._reading:
            self._loop.remove_reader(self._sock)
            self._reading = False

    def ack(self, messages: list[Incoming]) -> None:
        """Acknowledge messages that are now stored or quarantined (QoS 0 needs none)."""
        self._client.ack_many([m.mid for m in messages if m.qos == 1])
        for message in messages:
            if message.qos == 2:  # never subscribed for, but answer it properly if it comes
                self._client.ack(message.mid, 2)

    def ack_tokens(self, tokens: list[int]) -> None:
        """Acknowledge messages by their :func:`ack_tokens`, as :meth:`ack` does."""
        self._client.ack_many([t & 0xFFFF for t in tokens if t >> 16 == 1])
        for token in tokens:
            if token >> 16 == 2:
                self._client.ack(token & 0xFFFF, 2)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK.

        Raises:
            MqttLost: the connection went away or the broker did not answer in time.
        """
        fut: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttLost(f"publish failed: {info.rc}")
        if info.is_published():
            return
        self._published[info.mid] = fut
        try:
            async with asyncio.timeout(self._mqtt.timeout_s):
                await fut
        except TimeoutError as exc:
            raise MqttLost(f"no PUBACK for {topic} in {self._mqtt.timeout_s} s") from exc

    @property
    def is_subscribed(self) -> bool:
        """Whether the broker has granted the subscriptions (SUBACK received)."""
        return self._subscribed.done() and self._subscribed.exception() is None

    def close(self) -> None:
        """Drop the socket without a DISCONNECT (after a failure); idempotent."""
        self._cancel_peek()
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            sock.close()

    async def disconnect(self) -> None:
        """Send what is queued (the last PUBACKs) and DISCONNECT; release the socket.

        The session stays on the broker. paho's ``loop_write()`` stops when the socket takes
        no more: the rest is written as the socket drains, for up to ``[mqtt] timeout_s`` (at
        most 2 s). What is still unsent then is redelivered after the next connection.
        """
        try:
            self._client.disconnect()
            deadline = time.monotonic() + min(2.0, self._mqtt.timeout_s)
            while self._sock is not None:
                self._client.loop_write()
                if not self._client.want_write() or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.01)
        finally:
            if self._sock is not None:
                self._loop.remove_reader(self._sock)
                self._loop.remove_writer(self._sock)
                self._sock = None
