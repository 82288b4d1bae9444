"""The gateway shell: resolves the configured devices, then runs pollers, spool and publisher.

Data flow: pollers (``acquire``) -> :class:`SpoolWriter` (commits to the ``spool``) ->
``publish.Publisher`` (MQTT, deletes on PUBACK); a status task publishes the retained
health report. Shutdown on ``stop``: stop polling, commit what was polled, give the
publisher ``drain_timeout_s`` to empty the spool, publish ``offline``, disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.acquire import DeviceTarget, ModbusLink, Poller, SerialFormat
from gateway.decode import plan_device
from gateway.hj212_control import ControlServer, socket_path
from gateway.hj212_forward import Forwarder, ForwardQueue
from gateway.hj212_listener import Hj212Listener, LoggerTarget
from gateway.metrics import GatewayCollector, gateway_registry
from gateway.publish import Publisher
from gateway.spool import Sample, Spool
from gateway.status import build_status
from weijian.config import GatewayDevice, Settings
from weijian.contract import GatewayState, GatewayStatus
from weijian.device_profile import load_profile
from weijian.errors import ConfigError
from weijian.registry import Registry
from weijian.status_http import StatusServer

__all__ = ["DevicePlan", "SpoolWriter", "plan_devices", "plan_loggers", "run_gateway"]

log = logging.getLogger(__name__)

_STATUS_TICK_S = 0.25  # how often the status task looks for a change to report


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """A configured device and where it is reached."""

    target: DeviceTarget
    config: GatewayDevice
    index: int  # position in [[gateway.devices]], for messages

    @property
    def where(self) -> str:
        """``key 'gateway.devices[3]' (site/device)``."""
        return f"key 'gateway.devices[{self.index}]' ({self.config.site_id}/{self.config.device_id})"

    @property
    def serial_format(self) -> SerialFormat:
        """The line format this device is configured for."""
        c = self.config
        return SerialFormat(c.baudrate, c.bytesize, c.parity, c.stopbits)

    @property
    def link_key(self) -> str:
        """Devices with the same key share a link (an RS-485 line, or one TCP device)."""
        c = self.config
        if c.transport == "rtu":
            return f"rtu:{c.line or c.serial}"
        return f"tcp:{c.host}:{c.port}:{c.unit_id}"


def plan_devices(settings: Settings, registry: Registry) -> list[DevicePlan]:
    """Check the configured devices against the registry and resolve their read plans.

    Raises:
        ConfigError: no gateway id, a device configured twice, not in the registry, not
            served by this gateway, a profile differing from the registry's, a profile with
            no Modbus register for a metric the registry lists (an HJ 212-only profile), or
            ``timestamp = "device"`` on a profile without a clock.
        ProfileError: the profile cannot be loaded.
    """
    gw = settings.gateway
    if gw.id is None:
        raise ConfigError("key 'gateway.id': required (the gateway's id in the site registry)")
    if not gw.devices and not gw.hj212.loggers:
        raise ConfigError("key 'gateway.devices': no devices configured (nor HJ 212 loggers)")
    plans: list[DevicePlan] = []
    seen: set[tuple[str, str]] = set()
    for i, d in enumerate(gw.devices):
        where = f"key 'gateway.devices[{i}]' ({d.site_id}/{d.device_id})"
        if (d.site_id, d.device_id) in seen:
            raise ConfigError(f"{where}: configured twice")
        seen.add((d.site_id, d.device_id))
        device = registry.device(d.site_id, d.device_id)
        if device is None:
            raise ConfigError(f"{where}: not in the site registry {registry.path}")
        served_by = registry.gateway_of(d.site_id, d.device_id)
        if served_by != gw.id:
            raise ConfigError(
                f"{where}: the site registry says it is served by {served_by!r}, not {gw.id!r}"
            )
        if d.profile is not None and d.profile != device.profile:
            raise ConfigError(
                f"{where}: profile {d.profile!r} differs from the registry's {device.profile!r}"
            )
        profile = load_profile(device.profile, registry.path.parent)
        unmapped = [m for m in device.metrics if m not in profile.registers]
        if unmapped:
            # The registry lets a device list what its profile measures by HJ 212 factors too;
            # only registers can be polled over Modbus.
            hint = (" (it is read through an HJ 212 data logger: configure that under "
                    "[[gateway.hj212.loggers]])" if profile.hj212 is not None else "")
            raise ConfigError(
                f"{where}: profile {profile.model!r} has no Modbus register for "
                f"{', '.join(unmapped)}{hint}"
            )
        if d.timestamp == "device" and profile.clock is None:
            raise ConfigError(f"{where}: timestamp = 'device' but {profile.model!r} has no clock")
        site = registry.sites[d.site_id]
        target = DeviceTarget(
            site_id=d.site_id,
            device_id=d.device_id,
            kind=device.kind or site.kind,
            profile=profile,
            metrics=device.metrics,
            unit_id=d.unit_id,
            blocks=plan_device(profile, device.metrics, read_clock=d.timestamp == "device"),
            poll_interval_s=d.poll_interval_s or gw.poll_interval_s,
            timeout_s=d.timeout_s or gw.timeout_s,
            retries=gw.retries if d.retries is None else d.retries,
            device_time=d.timestamp == "device",
        )
        plans.append(DevicePlan(target, d, i))
    check_lines(plans)
    return plans


def plan_loggers(settings: Settings, registry: Registry) -> dict[str, LoggerTarget]:
    """The HJ 212 loggers by MN, checked against the registry like the Modbus devices.

    Raises:
        ConfigError: a logger twice, a device not in the registry or not served by this
            gateway, a profile without an ``[hj212.factors]`` table, or two upstreams with
            one name.
    """
    gw = settings.gateway
    names: dict[str, int] = {}
    for i, u in enumerate(gw.hj212.upstreams):
        first = names.setdefault(u.name, i)
        if first != i:  # the name names the queue file: two upstreams would share one queue
            raise ConfigError(f"key 'gateway.hj212.upstreams[{i}].name': {u.name!r} is already the name "
                              f"of 'gateway.hj212.upstreams[{first}]' (each upstream has its own queue file)")
    out: dict[str, LoggerTarget] = {}
    for i, c in enumerate(gw.hj212.loggers):
        where = f"key 'gateway.hj212.loggers[{i}]' (MN {c.mn}, {c.site_id}/{c.device_id})"
        if c.mn in out:
            raise ConfigError(f"{where}: MN configured twice")
        device = registry.device(c.site_id, c.device_id)
        if device is None:
            raise ConfigError(f"{where}: not in the site registry {registry.path}")
        if registry.gateway_of(c.site_id, c.device_id) != gw.id:
            raise ConfigError(f"{where}: the site registry says it is served by "
                              f"{registry.gateway_of(c.site_id, c.device_id)!r}, not {gw.id!r}")
        profile = load_profile(device.profile, registry.path.parent)
        if profile.hj212 is None:
            raise ConfigError(f"{where}: profile {device.profile!r} has no [hj212.factors] table")
        kind = device.kind or registry.sites[c.site_id].kind
        out[c.mn] = LoggerTarget(c, kind, profile, device.metrics)
    return out


def check_lines(plans: list[DevicePlan]) -> None:
    """Devices on one RS-485 line must name the same port and format, and one port one line.

    Raises:
        ConfigError: naming both devices and the key on which they disagree.
    """
    first_on_line: dict[str, DevicePlan] = {}
    line_of_port: dict[str, DevicePlan] = {}
    for p in plans:
        if p.config.transport != "rtu":
            continue
        first = first_on_line.setdefault(p.link_key, p)
        if first is not p:
            for key in ("serial", "baudrate", "bytesize", "parity", "stopbits"):
                a, b = getattr(first.config, key), getattr(p.config, key)
                if a != b:
                    raise ConfigError(
                        f"{p.where}: key {key!r} = {b!r}, but {first.where} on the same line "
                        f"{p.config.line or p.config.serial!r} has {key} = {a!r}; a line is one port "
                        "with one format"
                    )
        assert p.config.serial is not None
        other = line_of_port.setdefault(p.config.serial, p)
        if other.link_key != p.link_key:
            raise ConfigError(
                f"{p.where}: key 'line' = {p.config.line!r}, but {other.where} uses the same serial "
                f"port {p.config.serial!r} as line {other.config.line!r}; one port is one line"
            )


class SpoolWriter:
    """Commits polled samples to the spool in batches, off the event loop.

    Args:
        spool: the durable queue.
        on_commit: called (on the loop) after each commit, to wake the publisher.
    """

    def __init__(self, spool: Spool, on_commit: Callable[[], None]) -> None:
        self.spool = spool
        self.on_commit = on_commit
        self._pending: list[Sample] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._ready = asyncio.Event()
        self._closing = False

    def put(self, sample: Sample) -> None:
        """Queue a sample for the next commit (never blocks; a commit takes milliseconds)."""
        self._pending.append(sample)
        self._ready.set()

    def put_committed(self, sample: Sample) -> asyncio.Future[None]:
        """Queue a sample; the future is done once the commit that holds it is on disk.

        An HJ 212 logger is answered 9014 only then: it will not send the packet again.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.put(sample)
        return waiter

    def close(self) -> None:
        """Ask :meth:`run` to commit what is pending and return."""
        self._closing = True
        self._ready.set()

    async def run(self) -> None:
        """Commit until closed; a sample is in memory only while its batch is written."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            if batch:
                try:
                    await asyncio.to_thread(self.spool.append, batch)
                except BaseException as exc:
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc if isinstance(exc, Exception) else ConnectionError("stopped"))
                    raise
                self.on_commit()
            for w in waiters:
                if not w.done():
                    w.set_result(None)
            if self._closing and not self._pending:
                return


async def run_gateway(
    settings: Settings,
    plans: list[DevicePlan],
    stop: asyncio.Event,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    loggers: dict[str, LoggerTarget] | None = None,
) -> None:
    """Run the gateway until ``stop`` is set, then shut down in order.

    Args:
        settings: the whole configuration (uses ``gateway`` and ``mqtt``).
        plans: from :func:`plan_devices`.
        stop: set by the SIGTERM/SIGINT handler (or a test).
        now: the sampling clock for ``timestamp = "gateway"``.
        loggers: from :func:`plan_loggers`: the HJ 212 data loggers the ``[gateway.hj212]``
            listener takes packets from, when ``listen_port`` is set.

    Raises:
        SpoolError: the spool cannot be opened or written.
    """
    gw = settings.gateway
    assert gw.id is not None  # plan_devices checked it
    gateway_id = gw.id
    started = time.monotonic()
    spool = await asyncio.to_thread(
        Spool,
        gw.spool.path,
        gateway_id=gateway_id,
        topic_root=settings.mqtt.topic_root,
        max_rows=gw.spool.max_rows,
        fsync=gw.spool.fsync,
    )
    stats = await asyncio.to_thread(spool.stats)
    log.info("gateway.starting", extra={"gateway_id": gateway_id, "devices": len(plans),
                                        "queued": stats.depth, "seq": stats.seq})
    publisher = Publisher(settings.mqtt, gateway_id, spool, gw.max_inflight)
    writer = SpoolWriter(spool, publisher.notify_new_rows)
    changed = asyncio.Event()
    targets = {p.target.key: p.target for p in plans}
    listener = None
    control = None
    # One durable queue per upstream, beside the spool: <spool>.hj212-<name>.sqlite
    forwarders = [
        Forwarder(u, ForwardQueue(gw.spool.path.with_name(f"{gw.spool.path.name}.hj212-{u.name}.sqlite")))
        for u in (gw.hj212.upstreams if gw.hj212.listen_port is not None else [])
    ]

    def forward(raw: bytes) -> None:
        for f in forwarders:
            f.put(raw)

    if gw.hj212.listen_port is not None:
        listener = Hj212Listener(gw.hj212, loggers or {}, writer.put_committed,
                                 forward if forwarders else None, now=now)
        control = ControlServer(listener, socket_path(gw.spool.path, gw.hj212.control_socket))
    server = None
    if gw.metrics_port is not None:
        collector = GatewayCollector(
            gateway_id, {k: t.health for k, t in targets.items()}, spool.stats,
            lambda: publisher.published, publisher.connected.is_set,
        )

        def health() -> dict[str, object]:
            online = sum(t.health.online for t in targets.values())
            return {"ok": True, "gateway_id": gateway_id, "mqtt_connected": publisher.connected.is_set(),
                    "devices_online": online, "devices_offline": len(targets) - online,
                    "in_flight": publisher.in_flight}

        server = StatusServer(gw.metrics_host, gw.metrics_port, gateway_registry(collector), health,
                              asyncio.get_running_loop()).start()

    async def current_status(state: GatewayState) -> GatewayStatus:
        s = await asyncio.to_thread(spool.stats)
        report = build_status(
            gateway_id,
            now(),
            uptime_s=time.monotonic() - started,
            queue_depth=s.depth,
            oldest_queued_age_s=s.oldest_age_s,
            dropped=s.dropped,
            published=publisher.published,
            devices={k: t.health for k, t in targets.items()},
        )
        return report.model_copy(update={"state": state})

    async def report_status() -> None:
        last_sent = -1e9
        was_connected = False
        while True:
            await asyncio.sleep(_STATUS_TICK_S)
            is_connected = publisher.connected.is_set()
            due = time.monotonic() - last_sent >= gw.status_interval_s
            if is_connected and (changed.is_set() or due or not was_connected):
                changed.clear()
                publisher.publish_status(await current_status(GatewayState.ONLINE))
                last_sent = time.monotonic()
            was_connected = is_connected

    links: dict[str, list[DevicePlan]] = {}
    for p in plans:
        links.setdefault(p.link_key, []).append(p)
    pollers = []
    for key, group in links.items():
        first = group[0].config
        timeout_s = max(p.target.timeout_s for p in group)
        if first.transport == "rtu":
            assert first.serial is not None
            link = ModbusLink.rtu(first.serial, group[0].serial_format, timeout_s,
                                  frame_gap_s=gw.frame_gap_s, where=f"{group[0].where}: key 'serial'")
        else:
            assert first.host is not None
            link = ModbusLink.tcp(first.host, first.port, timeout_s)
        pollers.append((key, Poller(
            link,
            [p.target for p in group],
            writer.put,
            lambda _t: changed.set(),
            backoff_max_s=gw.backoff_max_s,
            retry_timeouts=first.transport == "tcp",
            now=now,
        )))

    await publisher.start()
    if listener is not None:
        await listener.start()
    if control is not None:
        await control.start()
    try:
        async with asyncio.TaskGroup() as tg:
            poll_tasks = [tg.create_task(p.run(), name=f"poll-{key}") for key, p in pollers]
            writer_task = tg.create_task(writer.run(), name="spool-writer")
            send_task = tg.create_task(publisher.send(), name="mqtt-send")
            acks_task = tg.create_task(publisher.collect_acks(), name="mqtt-acks")
            status_task = tg.create_task(report_status(), name="status")
            forward_tasks = [t for f in forwarders for t in (
                tg.create_task(f.run(), name=f"hj212-forward-{f.upstream.name}"),
                tg.create_task(f.commit(), name=f"hj212-queue-{f.upstream.name}"),
            )]
            await stop.wait()
            log.info("gateway.stopping", extra={"gateway_id": gateway_id})
            if control is not None:
                await control.close()
            if listener is not None:  # 1. take no new samples
                await listener.close()
            for f in forwarders:  # what was accepted is queued for the upstreams
                await f.flush()
            for task in forward_tasks:
                task.cancel()
            for task in poll_tasks:
                task.cancel()
            writer.close()  # 2. commit what was polled
            await writer_task
            if publisher.connected.is_set():  # 3. publish what we can in the time allowed
                try:
                    async with asyncio.timeout(gw.drain_timeout_s):
                        await publisher.drained()
                except TimeoutError:
                    log.warning("gateway.drain_timeout", extra={"in_flight": publisher.in_flight})
            status_task.cancel()
            send_task.cancel()
            acks_task.cancel()
        final = await current_status(GatewayState.OFFLINE)
        await publisher.stop(final)
    finally:
        if server is not None:
            await asyncio.to_thread(server.close)
        left = (await asyncio.to_thread(spool.stats)).depth
        await asyncio.to_thread(spool.close)
        for f in forwarders:
            f.queue.close()
        log.info("gateway.stopped", extra={"gateway_id": gateway_id, "queued": left})
