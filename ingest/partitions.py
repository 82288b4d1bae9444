"""Fixed partitions of the registry: the unit one ingest process claims, stores and judges.

A partition is a set of whole *components*: sites joined by the gateways that serve them
(a gateway serving two sites puts both in its component). So every device of a gateway, its
status topic and its ``(gateway_id, seq)`` stream land in one partition, and the alert
evaluator that owns a partition sees all it needs for gateway-offline inhibition and gaps.

A component goes to ``crc32(key) % count``, its key being its smallest gateway id (or its
site id when no gateway serves it). The hash keeps a component where it is when others are
added to or removed from the registry; every process computes the same table from the same
registry file. Pure: no I/O.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from weijian.contract import status_topic
from weijian.registry import Registry

__all__ = ["Partition", "partition_registry"]


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its index, sites, gateways and registered devices."""

    index: int
    sites: tuple[str, ...]
    gateways: tuple[str, ...]
    devices: frozenset[tuple[str, str]]

    def reading_topics(self, root: str) -> list[str]:
        """One filter per site: unknown devices of a known site arrive here and are quarantined."""
        return [f"{root}/{site}/+/reading" for site in self.sites]

    def status_topics(self, root: str) -> list[str]:
        """The retained status topic of each gateway of the partition."""
        return [status_topic(root, gateway) for gateway in self.gateways]


def partition_registry(registry: Registry, count: int) -> list[Partition]:
    """Split the registry into ``count`` partitions (some may be empty).

    Raises:
        ValueError: ``count`` is below 1.
    """
    if count < 1:
        raise ValueError("the partition count must be at least 1")
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for site_id in registry.sites:
        find("s:" + site_id)
    for gateway in registry.gateways.values():
        for ref in gateway.devices:
            union("g:" + gateway.id, "s:" + ref.split("/", 1)[0])
    members: dict[str, list[str]] = {}
    for node in parent:
        members.setdefault(find(node), []).append(node)
    sites: list[list[str]] = [[] for _ in range(count)]
    gateways: list[list[str]] = [[] for _ in range(count)]
    for nodes in members.values():
        gws = sorted(n[2:] for n in nodes if n.startswith("g:"))
        key = gws[0] if gws else min(n[2:] for n in nodes)
        index = zlib.crc32(key.encode()) % count
        sites[index] += [n[2:] for n in nodes if n.startswith("s:")]
        gateways[index] += gws
    devices: list[set[tuple[str, str]]] = [set() for _ in range(count)]
    where = {site: i for i in range(count) for site in sites[i]}
    for site, device in registry.devices():
        devices[where[site.id]].add((site.id, device.id))
    return [
        Partition(i, tuple(sorted(sites[i])), tuple(sorted(gateways[i])), frozenset(devices[i]))
        for i in range(count)
    ]
