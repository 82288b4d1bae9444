"""Publishing spooled readings to MQTT with paho-mqtt: QoS 1, a window of many in flight.

The one module that touches paho. The publisher reads the spool oldest first, hands up to
``max_inflight`` messages to paho at once, and deletes a reading from the spool only when
its PUBACK arrives (``on_publish``), in batches. paho runs its network loop in its own
thread (``loop_start``) and reconnects by itself; across a reconnect it re-sends the
messages still waiting for PUBACK, in order and with the DUP flag, so nothing handed to it
is lost while the process lives. After a crash the spool still holds every unacknowledged
reading and a new process starts again from the oldest. The receiver drops duplicates by
``(gateway_id, seq)``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections import deque
from datetime import UTC, datetime

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.spool import Spool
from weijian.config import MqttSettings
from weijian.contract import GatewayStatus, offline_status, status_payload, status_topic
from weijian.errors import ConfigError

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

_BATCH_ROWS = 1000  # rows read from the spool per query
_ACK_BATCH_S = 0.02  # acknowledged rows are deleted together, at most this long after the ack


class Publisher:
    """Drains the spool to the broker.

    Args:
        mqtt: broker settings (host, port, credentials, TLS).
        gateway_id: client id and status topic.
        spool: the durable queue.
        max_inflight: messages handed to paho and not yet acknowledged, at most.
    """

    def __init__(self, mqtt: MqttSettings, gateway_id: str, spool: Spool, max_inflight: int) -> None:
        self.mqtt = mqtt
        self.gateway_id = gateway_id
        self.spool = spool
        self.max_inflight = max_inflight
        self.published = 0  # acknowledged since start
        self.connected = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._new_rows = asyncio.Event()
        self._acks_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._acked: deque[int] = deque()  # mids from paho's thread
        self._ack_signalled = threading.Event()
        self._in_flight: dict[int, int] = {}  # mid -> spool row id
        self._is_stopping = False
        self._last_refusal: str | None = None
        self._status_topic = status_topic(mqtt.topic_root, gateway_id)
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=gateway_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        if mqtt.username is not None:
            password = mqtt.password.get_secret_value() if mqtt.password else None
            self._client.username_pw_set(mqtt.username, password)
        will = offline_status(gateway_id, datetime.now(UTC))
        self._client.will_set(self._status_topic, status_payload(will), qos=1, retain=True)

    @property
    def in_flight(self) -> int:
        """Readings handed to paho and not yet acknowledged."""
        return len(self._in_flight)

    async def start(self) -> None:
        """Load TLS material (off the loop), then connect in paho's own thread.

        Raises:
            ConfigError: the CA file, certificate or key cannot be loaded.
        """
        if self.mqtt.tls_ca is not None:
            try:
                context = await asyncio.to_thread(self._tls_context)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"key 'mqtt.tls_ca' / 'mqtt.tls_cert' / 'mqtt.tls_key': cannot load: {exc}"
                ) from exc
            self._client.tls_set_context(context)
        self._client.connect_async(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
        self._client.loop_start()
        log.info("mqtt.connecting", extra={"host": self.mqtt.host, "port": self.mqtt.port})

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.mqtt.tls_ca))
        if self.mqtt.tls_cert is not None:
            context.load_cert_chain(
                str(self.mqtt.tls_cert), str(self.mqtt.tls_key) if self.mqtt.tls_key else None
            )
        return context

    async def stop(self, status: GatewayStatus | None = None, timeout_s: float = 5.0) -> None:
        """Publish ``offline`` (a clean exit sends no will), disconnect and stop paho's thread."""
        self._is_stopping = True
        if self._client.is_connected():
            info = self._client.publish(
                self._status_topic,
                status_payload(status or offline_status(self.gateway_id, datetime.now(UTC))),
                qos=1,
                retain=True,
            )
            try:
                await asyncio.to_thread(info.wait_for_publish, timeout_s)
            except (RuntimeError, ValueError) as exc:
                log.warning("status.offline_not_sent", extra={"error": str(exc)})
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def notify_new_rows(self) -> None:
        """Called by the spool writer after each commit."""
        self._new_rows.set()

    def publish_status(self, status: GatewayStatus) -> None:
        """Publish the retained status (QoS 1); paho queues it if we are offline."""
        self._client.publish(self._status_topic, status_payload(status), qos=1, retain=True)

    # --- paho callbacks: they run in paho's thread --------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._loop.call_soon_threadsafe(self._log_refused, str(reason_code))
            return
        self._loop.call_soon_threadsafe(self._set_connected, True)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._set_connected, False)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._acked.append(mid)
        # One wake-up per batch, not per PUBACK: call_soon_threadsafe writes to a pipe.
        if not self._ack_signalled.is_set():
            self._ack_signalled.set()
            self._loop.call_soon_threadsafe(self._acks_ready.set)

    # --- event loop side ------------------------------------------------------------------

    def _log_refused(self, reason: str) -> None:
        # paho retries every few seconds; say it once per reason, not once per attempt.
        if reason != self._last_refusal:
            log.error("mqtt.refused", extra={"reason": reason})
            self._last_refusal = reason

    def _set_connected(self, is_connected: bool) -> None:
        if is_connected and not self.connected.is_set():
            self._last_refusal = None
            log.info("mqtt.connected", extra={"host": self.mqtt.host, "port": self.mqtt.port})
            self.connected.set()
        elif not is_connected and self.connected.is_set():
            if self._is_stopping:
                log.info("mqtt.disconnected", extra={"in_flight": self.in_flight})
            else:
                log.warning("mqtt.disconnected", extra={"in_flight": self.in_flight})
            self.connected.clear()

    async def send(self) -> None:
        """Hand spooled readings to paho, oldest first, keeping the in-flight window full."""
        while True:
            await self._room.wait()
            # While offline, keep readings on disk: paho holds only what was in flight.
            await self.connected.wait()
            self._new_rows.clear()
            free = self.max_inflight - len(self._in_flight)
            rows = await asyncio.to_thread(self.spool.claim, min(free, _BATCH_ROWS))
            if not rows:
                await self._new_rows.wait()
                continue
            for row in rows:
                info = self._client.publish(row.topic, row.payload, qos=1)
                self._in_flight[info.mid] = row.row_id
            if len(self._in_flight) >= self.max_inflight:
                self._room.clear()

    async def collect_acks(self) -> None:
        """Delete acknowledged readings from the spool, in batches."""
        while True:
            await self._acks_ready.wait()
            await asyncio.sleep(_ACK_BATCH_S)
            self._acks_ready.clear()
            self._ack_signalled.clear()
            row_ids = []
            while self._acked:
                row_id = self._in_flight.pop(self._acked.popleft(), None)
                if row_id is not None:  # None: a status message
                    row_ids.append(row_id)
            if row_ids:
                await asyncio.to_thread(self.spool.delete, row_ids)
                self.published += len(row_ids)
            if len(self._in_flight) < self.max_inflight:
                self._room.set()

    async def drained(self) -> None:
        """Return once the spool is empty and nothing is in flight (checked every 50 ms)."""
        while True:
            stats = await asyncio.to_thread(self.spool.stats)
            if stats.depth == 0 and not self._in_flight:
                return
            await asyncio.sleep(0.05)
