"""The site registry: districts, regulated units, sites, devices and the gateways serving them.

One TOML file, loaded and cross-checked at start-up by every program. Every error names the
file, the entry (``sites[2] (id 'yc-pool-01')``) and the key, so the IT staff who edit the
file can find the line. See ``docs/registry.md`` for the format and ``examples/registry.toml``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from weijian.contract import CATALOGUE, Identifier, Kind, status_subscription, status_topic
from weijian.device_profile import DeviceProfile, ProfileError, load_profile
from weijian.errors import RegistryError, describe_validation
from weijian.rules import check_override, default_rule_packs, rules_for_site
from weijian.tomlfile import read_toml

__all__ = [
    "Contact",
    "Device",
    "District",
    "Gateway",
    "Registry",
    "Site",
    "Storage",
    "Unit",
    "WaterPoint",
    "load_registry",
    "mosquitto_acl",
]

_PHONE = r"^\+?[0-9][0-9-]{4,19}$"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(_Entry):
    """A person who can be called or texted."""

    name: str = Field(min_length=1)
    phone: str = Field(pattern=_PHONE)


class District(_Entry):
    """A supervision district (监督区域) and the team that supervises it."""

    id: Identifier
    name: str = Field(min_length=1)
    team: str = Field(min_length=1)
    supervisors: tuple[Contact, ...] = Field(min_length=1)


class Unit(_Entry):
    """A regulated unit (被监管单位): the handler is escalation level 1, the head level 2.

    ``alarm_contacts`` are the unit's other designated people texted at level 1 with the
    handler (GSP 附录3 第六条 asks for at least three for a cold-chain alarm).
    """

    id: Identifier
    name: str = Field(min_length=1)
    licence: str = Field(min_length=1)
    district: Identifier
    handler: Contact
    head: Contact
    alarm_contacts: tuple[Contact, ...] = ()

    @property
    def first_level_phones(self) -> list[str]:
        """Distinct phones texted at level 1: the handler and the alarm contacts."""
        return list(dict.fromkeys([self.handler.phone, *(c.phone for c in self.alarm_contacts)]))


class WaterPoint(StrEnum):
    """Where a drinking-water sample is taken (GB 5749-2022 clause 3)."""

    FINISHED = "finished"  # 出厂水: leaving the treatment plant
    TAP = "tap"  # 末梢水: end of the network, at the user's tap


class Storage(StrEnum):
    """How a cold-chain store keeps its vaccines."""

    REFRIGERATED = "refrigerated"  # 2-8 degC
    FROZEN = "frozen"  # <= -20 degC


# Device and Site are slotted dataclasses, not models: a registry holds one of each per
# monitored point, and a model's own dict and set of field names cost about 1.5 KB per device
# (15 MB of a 10,000-device registry, in every process). Validated by pydantic all the same.
_ENTRY_CONFIG = ConfigDict(extra="forbid")


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=_ENTRY_CONFIG)
class Device:
    """A sensor at a site; ``profile`` names the instrument model's register map."""

    id: Identifier
    profile: str = Field(min_length=1)
    metrics: tuple[str, ...] = Field(min_length=1)
    kind: Kind | None = None  # defaults to the site's kind
    # How often the device reports (its gateway's poll interval): readings expected per period
    # in the monthly report's completeness (docs/reports.md).
    interval_s: float = Field(60.0, gt=0, le=86_400)


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=_ENTRY_CONFIG)
class Site:
    """A monitored point owned by a unit."""

    id: Identifier
    name: str = Field(min_length=1)
    kind: Kind
    district: Identifier
    unit: Identifier
    address: str = Field(min_length=1)
    water_point: WaterPoint | None = None
    small_supply: bool = False
    storage: Storage | None = None
    devices: tuple[Device, ...] = Field(min_length=1)
    # Per-site rule parameters, ``{rule_id: {param: value}}``, checked against the rule packs.
    overrides: dict[str, dict[str, float | bool | str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _attributes_for_kind(self) -> Site:
        if self.kind is Kind.DRINKING_WATER and self.water_point is None:
            raise ValueError("key 'water_point': required for drinking_water ('finished' or 'tap')")
        if self.kind is not Kind.DRINKING_WATER and self.water_point is not None:
            raise ValueError("key 'water_point': only drinking_water sites have one")
        if self.kind is not Kind.DRINKING_WATER and self.small_supply:
            raise ValueError("key 'small_supply': only drinking_water sites have one")
        if self.kind is Kind.COLD_CHAIN and self.storage is None:
            raise ValueError("key 'storage': required for cold_chain ('refrigerated' or 'frozen')")
        if self.kind is not Kind.COLD_CHAIN and self.storage is not None:
            raise ValueError("key 'storage': only cold_chain sites have one")
        return self


class Gateway(_Entry):
    """An edge gateway and the devices it serves, as ``"site_id/device_id"``."""

    id: Identifier
    name: str = Field(min_length=1)
    devices: tuple[str, ...] = Field(min_length=1)


class _RegistryFile(_Entry):
    districts: tuple[District, ...] = Field(min_length=1)
    units: tuple[Unit, ...] = ()
    sites: tuple[Site, ...] = ()
    gateways: tuple[Gateway, ...] = ()


@dataclass(frozen=True)
class Registry:
    """The loaded, cross-checked registry with the lookups the stages need."""

    path: Path
    districts: Mapping[str, District]
    units: Mapping[str, Unit]
    sites: Mapping[str, Site]
    gateways: Mapping[str, Gateway]
    _devices: Mapping[tuple[str, str], Device] = field(repr=False)
    _served_by: Mapping[tuple[str, str], str] = field(repr=False)

    def device(self, site_id: str, device_id: str) -> Device | None:
        """The device at ``site_id`` with ``device_id``, or None."""
        return self._devices.get((site_id, device_id))

    def __contains__(self, key: object) -> bool:
        """``(site_id, device_id) in registry``: is the device registered?"""
        return key in self._devices

    def devices(self) -> Iterator[tuple[Site, Device]]:
        """Every device with its site, in file order."""
        for site in self.sites.values():
            for device in site.devices:
                yield site, device

    def gateway_of(self, site_id: str, device_id: str) -> str | None:
        """The id of the gateway serving a device, or None if none is registered."""
        return self._served_by.get((site_id, device_id))

    def devices_of_gateway(self, gateway_id: str) -> list[tuple[Site, Device]]:
        """The devices a gateway serves, in its listed order."""
        out = []
        for ref in self.gateways[gateway_id].devices:
            site_id, device_id = ref.split("/", 1)
            out.append((self.sites[site_id], self._devices[(site_id, device_id)]))
        return out


def mosquitto_acl(registry: Registry, root: str, ingest_user: str = "ingest") -> str:
    """Build a Mosquitto ACL file from the registry.

    Each gateway (MQTT user = gateway id) may publish only the readings of the devices it
    serves and its own status; ingest reads readings and statuses and writes alert events.
    """
    lines = [
        f"# Generated by `weijian registry acl` from {registry.path.name}; do not edit by hand.",
        f"user {ingest_user}",
        f"topic read {root}/+/+/reading",
        f"topic read {status_subscription(root)}",
        f"topic write {root}/alerts/#",
    ]
    for gateway in registry.gateways.values():
        lines += ["", f"user {gateway.id}", f"topic write {status_topic(root, gateway.id)}"]
        lines += [f"topic write {root}/{ref}/reading" for ref in gateway.devices]
    return "\n".join(lines) + "\n"


def _label(section: str, index: int, raw: Any) -> str:
    ident = raw.get("id") if isinstance(raw, dict) else None
    return f"{section}[{index}]" + (f" (id {ident!r})" if isinstance(ident, str) else "")


def _explain(path: Path, data: Mapping[str, Any], exc: ValidationError) -> str:
    """Name the file, the entry and the key for each pydantic error."""
    lines = []
    for error, (key, msg) in zip(exc.errors(include_url=False), describe_validation(exc), strict=True):
        loc = list(error["loc"])
        where = ""
        if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(data.get(str(loc[0])), list):
            section_items = data[str(loc[0])]
            where = _label(str(loc[0]), loc[1], section_items[loc[1]])
            rest = loc[2:]
            if len(rest) >= 2 and rest[0] == "devices" and isinstance(rest[1], int):
                devices = section_items[loc[1]].get("devices", [])
                where += " " + _label("devices", rest[1], devices[rest[1]])
                rest = rest[2:]
            key = ".".join(str(p) for p in rest)
        if msg.startswith("key "):  # a model validator that names its key itself
            lines.append(f"{path}: {where}: {msg}")
        elif key:
            lines.append(f"{path}: {where + ': ' if where else ''}key {key!r}: {msg}")
        else:
            lines.append(f"{path}: {where}: {msg}")
    return "\n".join(lines)


def _cross_check(path: Path, reg: _RegistryFile) -> list[str]:
    problems: list[str] = []

    def dupes(section: str, ids: list[str]) -> None:
        seen: dict[str, int] = {}
        for i, ident in enumerate(ids):
            if ident in seen:
                problems.append(
                    f"{path}: {section}[{i}] (id {ident!r}): key 'id': duplicate of "
                    f"{section}[{seen[ident]}]"
                )
            seen.setdefault(ident, i)

    dupes("districts", [d.id for d in reg.districts])
    dupes("units", [u.id for u in reg.units])
    dupes("sites", [s.id for s in reg.sites])
    dupes("gateways", [g.id for g in reg.gateways])
    districts = {d.id for d in reg.districts}
    units = {u.id: u for u in reg.units}
    for i, unit in enumerate(reg.units):
        if unit.district not in districts:
            problems.append(
                f"{path}: units[{i}] (id {unit.id!r}): key 'district': unknown district "
                f"{unit.district!r}"
            )
    devices: set[str] = set()
    profiles: dict[str, DeviceProfile | str] = {}
    for i, site in enumerate(reg.sites):
        where = f"{path}: sites[{i}] (id {site.id!r})"
        if site.district not in districts:
            problems.append(f"{where}: key 'district': unknown district {site.district!r}")
        if site.unit not in units:
            problems.append(f"{where}: key 'unit': unknown unit {site.unit!r}")
        seen: dict[str, int] = {}
        catalogue = CATALOGUE[site.kind]
        for j, dev in enumerate(site.devices):
            dwhere = f"{where} devices[{j}] (id {dev.id!r})"
            if dev.id in seen:
                problems.append(f"{dwhere}: key 'id': duplicate of devices[{seen[dev.id]}]")
            seen.setdefault(dev.id, j)
            if dev.kind is not None and dev.kind is not site.kind:
                problems.append(
                    f"{dwhere}: key 'kind': {dev.kind.value!r} differs from the site's "
                    f"kind {site.kind.value!r}"
                )
            for metric in dev.metrics:
                if metric not in catalogue:
                    problems.append(
                        f"{dwhere}: key 'metrics': {metric!r} is not a metric of kind "
                        f"{site.kind.value} (known: {', '.join(catalogue)})"
                    )
            problems.extend(_check_profile(dwhere, site, dev, profiles, path.parent))
            devices.add(f"{site.id}/{dev.id}")
        for rule_id, params in site.overrides.items():
            problems.extend(f"{where}: {p}" for p in check_override(site.kind, rule_id, params))
        site_unit = units.get(site.unit)
        if site_unit is not None and not any(p.startswith(where) and "overrides" in p for p in problems):
            problems.extend(_check_recipients(path, reg, site, site_unit))
    served: dict[str, str] = {}
    for i, gw in enumerate(reg.gateways):
        where = f"{path}: gateways[{i}] (id {gw.id!r})"
        for ref in gw.devices:
            if ref not in devices:
                problems.append(
                    f"{where}: key 'devices': {ref!r} is not a registered device "
                    "(write it as 'site_id/device_id')"
                )
            elif ref in served and served[ref] != gw.id:
                problems.append(
                    f"{where}: key 'devices': {ref!r} is already served by gateway "
                    f"{served[ref]!r}; a device has one gateway"
                )
            served.setdefault(ref, gw.id)
    return problems


def _check_recipients(path: Path, reg: _RegistryFile, site: Site, unit: Unit) -> list[str]:
    """Each rule in force at the site must reach as many people at level 1 as its standard asks."""
    have = unit.first_level_phones
    i = next(n for n, u in enumerate(reg.units) if u.id == unit.id)
    out = []
    for rule in rules_for_site(site, default_rule_packs(), site.overrides):
        if rule.min_recipients > len(have):
            out.append(
                f"{path}: units[{i}] (id {unit.id!r}): key 'alarm_contacts': rule {rule.id!r} at site "
                f"{site.id!r} must text at least {rule.min_recipients} people "
                f"({rule.standard} {rule.clause}); the unit has {len(have)} (handler + alarm_contacts): add "
                f"{rule.min_recipients - len(have)} more"
            )
    return out


def _check_profile(
    where: str, site: Site, dev: Device, cache: dict[str, DeviceProfile | str], base: Path
) -> list[str]:
    """The device's profile must load, be of the site's kind and map every listed metric.

    A profile path is relative to the registry file's directory. A profile that does not
    load is reported with its own problems (file, key, what is wrong), one line each.
    """
    if dev.profile not in cache:
        try:
            cache[dev.profile] = load_profile(dev.profile, base)
        except ProfileError as exc:
            cache[dev.profile] = str(exc)
    profile = cache[dev.profile]
    if isinstance(profile, str):
        return [f"{where}: key 'profile' = {dev.profile!r}: {line}" for line in profile.splitlines()]
    if profile.kind is not site.kind:
        return [f"{where}: key 'profile': {dev.profile!r} is a {profile.kind.value} instrument, "
                f"the site is {site.kind.value}"]
    measured = set(profile.registers) | set(profile.hj212.factors.values() if profile.hj212 else ())
    missing = [m for m in dev.metrics if m in CATALOGUE[site.kind] and m not in measured]
    if missing:
        return [f"{where}: key 'metrics': profile {dev.profile!r} does not measure "
                f"{', '.join(missing)}"]
    return []


def load_registry(path: Path) -> Registry:
    """Load and cross-check a registry file.

    Raises:
        RegistryError: the file is unreadable, not TOML, or inconsistent; every problem found
            is listed, one per line, naming the file, the entry and the key.
    """
    data = read_toml(path, RegistryError, "site registry")
    try:
        parsed = _RegistryFile.model_validate(data)
    except ValidationError as exc:
        raise RegistryError(_explain(path, data, exc)) from exc
    problems = _cross_check(path, parsed)
    if problems:
        raise RegistryError("\n".join(problems))
    sites = {s.id: s for s in parsed.sites}
    devices = {(s.id, d.id): d for s in parsed.sites for d in s.devices}
    # Keyed by the same tuples as `devices` (every ref names one, checked above): a tuple and
    # two strings less per device than splitting each ref again.
    key_of = {f"{site_id}/{device_id}": (site_id, device_id) for site_id, device_id in devices}
    served = {key_of[ref]: gw.id for gw in parsed.gateways for ref in gw.devices}
    del key_of
    return Registry(
        path=path,
        districts={d.id: d for d in parsed.districts},
        units={u.id: u for u in parsed.units},
        sites=sites,
        gateways={g.id: g for g in parsed.gateways},
        _devices=devices,
        _served_by=served,
    )
