"""Instrument device profiles: the Modbus register map of one instrument model.

A profile is a TOML data file (``weijian/profiles/<model>.toml``) shared by the simulator,
which encodes values into registers, and the gateway, which reads and decodes them. It owns
the schema (tables, data types, word orders, scale and offset, the status/fault register
and the real-time clock), the loader, and :func:`plan_reads`, which turns a register map into
the contiguous blocks a poller should read. The format is documented in
``docs/firmware_sim.md``.

A physical value is ``raw * scale + offset``, where ``raw`` is the register content decoded
as ``type`` in ``word_order``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from weijian.contract import CATALOGUE, Flag, Kind
from weijian.errors import ProfileError
from weijian.tomlfile import read_toml, validation_problem

__all__ = [
    "MAX_READ_BITS",
    "MAX_READ_REGISTERS",
    "ClockBlock",
    "DataType",
    "DeviceProfile",
    "ProfileError",
    "ReadBlock",
    "RegisterSpec",
    "StatusBit",
    "StatusRegister",
    "Table",
    "WordOrder",
    "list_profiles",
    "load_profile",
    "plan_reads",
]

# Modbus application protocol v1.1b3, 6.1-6.4: one request reads at most 125 registers
# (function codes 3 and 4) or 2000 bits (function codes 1 and 2).
MAX_READ_REGISTERS: Final = 125
MAX_READ_BITS: Final = 2000


class Table(StrEnum):
    """The four Modbus data tables, each read by its own function code."""

    COIL = "coil"  # function code 1, one bit, read-write
    DISCRETE_INPUT = "discrete_input"  # function code 2, one bit, read-only
    HOLDING = "holding"  # function code 3, 16-bit, read-write
    INPUT = "input"  # function code 4, 16-bit, read-only

    @property
    def is_bit(self) -> bool:
        """Whether the table holds single bits rather than 16-bit registers."""
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def function_code(self) -> int:
        """The Modbus function code that reads this table."""
        return _FUNCTION_CODE[self]


_FUNCTION_CODE: Final = {Table.COIL: 1, Table.DISCRETE_INPUT: 2, Table.HOLDING: 3, Table.INPUT: 4}


class DataType(StrEnum):
    """How the raw content of one or two registers (or one bit) is read."""

    BIT = "bit"  # a coil or discrete input: 0 or 1
    UINT16 = "uint16"
    INT16 = "int16"  # two's complement
    UINT32 = "uint32"  # two registers
    INT32 = "int32"  # two registers, two's complement
    FLOAT32 = "float32"  # two registers, IEEE 754 single precision

    @property
    def width(self) -> int:
        """How many registers (or bits) one value occupies."""
        return 2 if self in (DataType.UINT32, DataType.INT32, DataType.FLOAT32) else 1


class WordOrder(StrEnum):
    """Order of the two 16-bit words of a 32-bit value; bytes within a word are big-endian."""

    ABCD = "ABCD"  # high word first (Modbus big-endian, what most vendors call "standard")
    CDAB = "CDAB"  # low word first ("word swapped", common on Chinese and older PLC firmware)


class StatusBit(StrEnum):
    """Meaning of a bit in the status/fault register, and the HJ 212 flag it raises."""

    SENSOR_FAULT = "sensor_fault"
    MAINTENANCE = "maintenance"
    CALIBRATION = "calibration"
    OVER_RANGE = "over_range"

    @property
    def flag(self) -> Flag:
        """The data flag a reading gets while this bit is set."""
        return _STATUS_FLAG[self]


_STATUS_FLAG: Final = {
    StatusBit.SENSOR_FAULT: Flag.DEVICE_FAULT,
    StatusBit.MAINTENANCE: Flag.MAINTENANCE,
    StatusBit.CALIBRATION: Flag.CALIBRATION,
    StatusBit.OVER_RANGE: Flag.OVER_RANGE,
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegisterSpec(_Model):
    """Where and how one metric is held by the instrument.

    Attributes:
        table: the Modbus table.
        address: zero-based protocol address of the first register or bit.
        type: data type of the raw content (``bit`` for coils and discrete inputs).
        word_order: order of the two words of a 32-bit type.
        scale: physical value = raw * scale + offset.
        offset: see ``scale``.
        unit: must equal the contract's unit for the metric.
        min: the instrument's lower measurement limit: a decoded value below it cannot have
            come from the instrument (wrong type, word order or scale) and is published as
            null with flag ``D``. None: no lower bound.
        max: the instrument's upper measurement limit; above it the instrument reports ``max``
            and sets the over-range status bit, so a decoded value *above* ``max`` is
            implausible like one below ``min``. None: only the data type limits the value.
        resolution: the smallest step the instrument reports: a non-zero value smaller in
            magnitude (a float32 read in the wrong word order gives 9.1e-33) is implausible.
        optional: the instrument option may be absent (a gateway may skip it).
    """

    table: Table
    address: int = Field(ge=0, le=65535)
    type: DataType
    word_order: WordOrder = WordOrder.ABCD
    scale: float = 1.0
    offset: float = 0.0
    unit: str
    min: float | None = None
    max: float | None = None
    resolution: float | None = Field(None, gt=0)
    optional: bool = False

    @model_validator(mode="after")
    def _type_fits_table(self) -> RegisterSpec:
        if self.table.is_bit and self.type is not DataType.BIT:
            raise ValueError(f"a {self.table.value} holds one bit: type must be 'bit'")
        if not self.table.is_bit and self.type is DataType.BIT:
            raise ValueError("type 'bit' belongs in a coil or discrete_input table")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.address + self.type.width > 65536:
            raise ValueError("the value runs past address 65535")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min {self.min} must be below max {self.max}")
        return self

    def plausible(self, value: float) -> bool:
        """Whether a decoded value can have come from the instrument (see the attributes)."""
        if not math.isfinite(value):
            return False
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            return False
        return self.resolution is None or value == 0 or abs(value) >= self.resolution

    @property
    def width(self) -> int:
        """Registers (or bits) occupied."""
        return self.type.width


class StatusRegister(_Model):
    """A 16-bit status/fault register; ``bits`` maps a meaning to its bit number (0 = LSB)."""

    table: Table = Table.INPUT
    address: int = Field(ge=0, le=65535)
    bits: dict[StatusBit, int]

    @model_validator(mode="after")
    def _valid_bits(self) -> StatusRegister:
        if self.table.is_bit:
            raise ValueError("the status register must be in the holding or input table")
        numbers = list(self.bits.values())
        if any(not 0 <= n <= 15 for n in numbers):
            raise ValueError("bit numbers must be 0-15")
        if len(set(numbers)) != len(numbers):
            raise ValueError("two meanings share a bit number")
        return self


class ClockBlock(_Model):
    """The instrument's real-time clock: uint32 unix seconds (UTC) in two holding registers."""

    address: int = Field(ge=0, le=65534)
    word_order: WordOrder = WordOrder.ABCD

    @property
    def table(self) -> Table:
        """Clocks are settable, so they live in the holding table."""
        return Table.HOLDING


class Hj212Map(_Model):
    """How an HJ 212 data logger names this instrument's metrics: factor code -> metric.

    HJ 212-2017 Table B.1 has codes for pH (``w01001``), water temperature (``w01010``) and
    conductivity (``w01014``); turbidity is commonly ``w01003``; free and total chlorine, ORP
    and the rest have no standard code, so the vendor's own codes go here.
    """

    factors: dict[str, str] = Field(min_length=1)


class DeviceProfile(_Model):
    """One instrument model's register map.

    Attributes:
        model: the profile name, as used in the site registry's ``profile`` key.
        vendor: who makes it (fictional vendors here).
        kind: the monitored kind whose metrics it measures.
        default_unit_id: the Modbus unit id as shipped (1-247).
        description: free text.
        registers: metric name -> where and how it is held (empty for an HJ 212-only instrument).
        status: the status/fault register, if the model has one.
        clock: the real-time clock block, if the model has one.
        hj212: factor code -> metric, for an instrument read through an HJ 212 data logger.
    """

    model: str = Field(min_length=1, max_length=64)
    vendor: str = Field(min_length=1)
    kind: Kind
    default_unit_id: int = Field(1, ge=1, le=247)
    description: str = ""
    registers: dict[str, RegisterSpec] = {}
    status: StatusRegister | None = None
    clock: ClockBlock | None = None
    hj212: Hj212Map | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        if not self.registers and self.hj212 is None:
            raise ValueError("registers: a profile maps its metrics to registers, to HJ 212 factors, or both")
        if self.hj212 is not None:
            for code, metric in self.hj212.factors.items():
                if metric not in CATALOGUE[self.kind]:
                    raise ValueError(
                        f"hj212.factors.{code}: '{metric}' is not a metric of kind {self.kind.value}"
                    )
        for metric, spec in self.registers.items():
            unit = CATALOGUE[self.kind].get(metric)
            if unit is None:
                raise ValueError(f"registers.{metric}: '{metric}' is not a metric of kind {self.kind.value}")
            if spec.unit != unit:
                raise ValueError(f"registers.{metric}.unit: the contract unit is '{unit}', got '{spec.unit}'")
        owner: dict[tuple[Table, int], str] = {}
        for name, table, address, width in self.fields():
            for a in range(address, address + width):
                other = owner.setdefault((table, a), name)
                if other != name:
                    raise ValueError(f"{name}: {table.value} address {a} is already used by {other}")
        return self

    def fields(self) -> Iterator[tuple[str, Table, int, int]]:
        """Yield ``(name, table, address, width)`` of every mapped item.

        Metrics are named by metric; the status register is ``status`` and the clock is
        ``clock``.
        """
        for metric, spec in self.registers.items():
            yield f"registers.{metric}", spec.table, spec.address, spec.width
        if self.status is not None:
            yield "status", self.status.table, self.status.address, 1
        if self.clock is not None:
            yield "clock", self.clock.table, self.clock.address, 2


# --- loading -----------------------------------------------------------------------------


def _bundled_dir() -> Path:
    return Path(str(resources.files("weijian") / "profiles"))


def list_profiles() -> list[str]:
    """Names of the bundled profiles, sorted."""
    return sorted(p.stem for p in _bundled_dir().glob("*.toml"))


def load_profile(name_or_path: str | Path, base: Path | None = None) -> DeviceProfile:
    """Load a profile by bundled name (``"fridge-logger"``) or by path to a TOML file.

    Args:
        name_or_path: a bundled profile name, or a path (anything containing a path
            separator or ending in ``.toml``).
        base: the directory a relative path is resolved from: the directory of the file
            that names the profile (the site registry, a scenario), never the working
            directory, so a service started elsewhere (systemd) finds the same file.

    Returns:
        The validated profile.

    Raises:
        ProfileError: the profile does not exist, is not valid TOML, or breaks the schema;
            the message names the file and every key at fault.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".toml"):
        path = Path(name_or_path).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
    else:
        path = _bundled_dir() / f"{text}.toml"
        if not path.is_file():
            known = ", ".join(list_profiles())
            raise ProfileError(f"profile {text!r}: no such bundled profile (known: {known})")
    data = read_toml(path, ProfileError, "device profile")
    try:
        profile = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(path, exc, ProfileError) from exc
    if profile.model != path.stem:
        raise ProfileError(f"{path}: key 'model': {profile.model!r} must equal the file name {path.stem!r}")
    return profile


# --- read planning -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``.

    Attributes:
        table: the table, which fixes the function code.
        start: first address.
        count: registers or bits to read.
        names: the mapped items (``registers.<metric>``, ``status``, ``clock``) inside it.
    """

    table: Table
    start: int
    count: int
    names: tuple[str, ...]

    @property
    def function_code(self) -> int:
        """The Modbus function code of the request."""
        return self.table.function_code


def plan_reads(
    fields: Iterable[tuple[str, Table, int, int]],
    *,
    max_gap: int = 0,
    max_registers: int = MAX_READ_REGISTERS,
    max_bits: int = MAX_READ_BITS,
) -> list[ReadBlock]:
    """Group mapped items into as few read requests as the limits allow.

    Items of one table are merged while the hole between them is at most ``max_gap``
    addresses and the request stays within the protocol limit. Many instruments answer a
    read that touches an unmapped address with exception 2 (illegal data address), so the
    default gap is 0.

    Args:
        fields: ``(name, table, address, width)`` items, for example
            ``DeviceProfile.fields()`` filtered to what the poller wants.
        max_gap: unmapped addresses a block may span between two items.
        max_registers: largest register request (function codes 3 and 4).
        max_bits: largest bit request (function codes 1 and 2).

    Returns:
        Blocks ordered by table (in function-code order) and start address.

    Raises:
        ValueError: an item is wider than the request limit, or max_gap is negative.
    """
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    by_table: dict[Table, list[tuple[int, int, str]]] = {}
    for name, table, address, width in fields:
        by_table.setdefault(table, []).append((address, width, name))
    blocks: list[ReadBlock] = []
    for table in sorted(by_table, key=lambda t: t.function_code):
        limit = max_bits if table.is_bit else max_registers
        start = end = -1
        names: list[str] = []
        for address, width, name in sorted(by_table[table]):
            if width > limit:
                raise ValueError(f"{name} is wider than a {limit}-item request")
            if names and address - end <= max_gap and max(end, address + width) - start <= limit:
                end = max(end, address + width)
                names.append(name)
                continue
            if names:
                blocks.append(ReadBlock(table, start, end - start, tuple(names)))
            start, end, names = address, address + width, [name]
        if names:
            blocks.append(ReadBlock(table, start, end - start, tuple(names)))
    return blocks
