"""The gateway's Prometheus metrics, read at scrape time from what the gateway already keeps.

Nothing is counted twice: polls and errors come from each device's :class:`DeviceHealth`,
the queue from the spool's own statistics, publishing from the publisher. Served with
``/healthz`` by :mod:`weijian.status_http` on ``[gateway] metrics_host:metrics_port``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.spool import SpoolStats
from gateway.status import DeviceHealth, ErrorKind

__all__ = ["GatewayCollector", "gateway_registry"]


class GatewayCollector(Collector):
    """Builds every metric family on each scrape.

    Args:
        gateway_id: the ``gateway_id`` label.
        devices: ``site_id/device_id`` -> health (the pollers' own records).
        spool_stats: the spool's depth, oldest age and drops (thread-safe).
        published: readings acknowledged by the broker since start.
        connected: whether the MQTT session is up.
    """

    def __init__(
        self,
        gateway_id: str,
        devices: Mapping[str, DeviceHealth],
        spool_stats: Callable[[], SpoolStats],
        published: Callable[[], int],
        connected: Callable[[], bool],
    ) -> None:
        self.gateway_id = gateway_id
        self.devices = devices
        self.spool_stats = spool_stats
        self.published = published
        self.connected = connected

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """The metric families (called by prometheus-client on each scrape)."""
        gw = [self.gateway_id]
        polls = CounterMetricFamily("gateway_polls", "Polls of a device, good or failed", labels=["device"])
        errors = CounterMetricFamily("gateway_poll_errors", "Failed polls by kind", labels=["device", "kind"])
        online = GaugeMetricFamily("gateway_device_online", "1 while the device answers", labels=["device"])
        for key, health in sorted(self.devices.items()):
            polls.add_metric([key], health.polls)
            for kind in ErrorKind:
                errors.add_metric([key, kind.value], health.errors.get(kind.value, 0))
            online.add_metric([key], 1.0 if health.online else 0.0)
        yield polls
        yield errors
        yield online
        stats = self.spool_stats()
        depth = GaugeMetricFamily("gateway_spool_readings", "Readings in the spool, not yet acknowledged",
                                  labels=["gateway_id"])
        depth.add_metric(gw, stats.depth)
        yield depth
        lag = GaugeMetricFamily(
            "gateway_publish_lag_seconds",
            "Age of the oldest reading not yet acknowledged by the broker (0: spool empty)",
            labels=["gateway_id"],
        )
        lag.add_metric(gw, stats.oldest_age_s or 0.0)
        yield lag
        dropped = CounterMetricFamily("gateway_spool_dropped", "Readings dropped by the overflow policy",
                                      labels=["gateway_id"])
        dropped.add_metric(gw, stats.dropped)
        yield dropped
        published = CounterMetricFamily(
            "gateway_published", "Readings acknowledged by the broker since start", labels=["gateway_id"]
        )
        published.add_metric(gw, self.published())
        yield published
        connected = GaugeMetricFamily("gateway_mqtt_connected", "1 while connected to the broker",
                                      labels=["gateway_id"])
        connected.add_metric(gw, 1.0 if self.connected() else 0.0)
        yield connected


def gateway_registry(collector: GatewayCollector) -> CollectorRegistry:
    """A registry of its own (several gateways may run in one test process)."""
    registry = CollectorRegistry()
    registry.register(collector)
    return registry
