"""Physical signal models of the four monitored kinds: pure functions of simulated time.

Every model answers ``sample(t, events)``: the true physical values at simulated unix time
``t`` (seconds, UTC) given the physical events (mains failure, door left open, missed
collection, dosing failure, turbidity event) in force. Randomness comes from a seeded
integer hash of ``(seed, what, when)``, never from a random-number generator with state, so a
model can be sampled at any time, in any order, and gives the same answer for the same seed.
Local time is China Standard Time (UTC+8, no daylight saving).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, Protocol

from firmware_sim.events import Event, EventKind
from weijian.contract import Kind

__all__ = [
    "CST_OFFSET_S",
    "ColdChainModel",
    "ColdChainParams",
    "DrinkingWaterModel",
    "DrinkingWaterParams",
    "MedicalWasteModel",
    "MedicalWasteParams",
    "SignalModel",
    "SwimmingPoolModel",
    "SwimmingPoolParams",
    "build_model",
    "coerce_params",
    "params_class",
    "value_noise",
]

CST_OFFSET_S: Final = 8 * 3600
DAY_S: Final = 86400.0
_MASK64: Final = (1 << 64) - 1


def _mix(*parts: int) -> int:
    """splitmix64 over the parts: a fast, well-distributed, stateless integer hash."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h


def _key(name: str) -> int:
    return zlib.crc32(name.encode())


def uniform(seed: int, name: str, *index: int) -> float:
    """A reproducible number in [0, 1) for ``(seed, name, index...)``."""
    return _mix(seed, _key(name), *index) / 2.0**64


def value_noise(seed: int, name: str, t: float, period_s: float) -> float:
    """Smooth reproducible noise in [-1, 1]: cosine interpolation of hashed grid values."""
    x = t / period_s
    i = math.floor(x)
    f = x - i
    w = (1 - math.cos(math.pi * f)) / 2
    a = uniform(seed, name, i) * 2 - 1
    b = uniform(seed, name, i + 1) * 2 - 1
    return a + (b - a) * w


def local_hours(t: float) -> float:
    """Hour of the local (UTC+8) day, 0 <= h < 24."""
    return ((t + CST_OFFSET_S) % DAY_S) / 3600.0


def local_day(t: float) -> int:
    """Index of the local (UTC+8) day since the epoch."""
    return math.floor((t + CST_OFFSET_S) / DAY_S)


def day_start(day: int) -> float:
    """Unix time of local midnight of ``day``."""
    return day * DAY_S - CST_OFFSET_S


def _active(events: Sequence[Event], kind: EventKind, t: float) -> Iterator[Event]:
    return (e for e in events if e.kind is kind and e.start_s <= t)


class SignalModel(Protocol):
    """What every kind's model offers."""

    kind: Kind
    metrics: tuple[str, ...]

    def sample(self, t: float, events: Sequence[Event] = ()) -> dict[str, float]:
        """True physical values at simulated unix time ``t``."""
        ...


# --- cold chain -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColdChainParams:
    """A vaccine fridge (defaults) or freezer (set the band below -20 degC).

    Attributes:
        low_c: temperature where the compressor stops.
        high_c: temperature where it starts (lowered a little at random per cycle).
        cycle_min: compressor cycle length.
        cooling_fraction: share of a cycle the compressor runs.
        ambient_c: room temperature, which the cabinet warms towards without power.
        door_openings_per_day: openings between 08:00 and 18:00.
        door_spike_c: warming of a one-minute opening.
        defrost_every_h: automatic defrost interval.
        defrost_min: defrost duration.
        defrost_rise_c: peak warming during a defrost.
        cross_c: the temperature a mains failure is calibrated to cross (the upper limit).
        cross_after_min: minutes from mains failure to crossing ``cross_c``, unless the event
            says otherwise.
        pulldown_c_per_min: cooling rate when power returns.
    """

    low_c: float = 3.0
    high_c: float = 6.0
    cycle_min: float = 40.0
    cooling_fraction: float = 0.35
    ambient_c: float = 25.0
    door_openings_per_day: int = 8
    door_spike_c: float = 0.8
    defrost_every_h: float = 8.0
    defrost_min: float = 20.0
    defrost_rise_c: float = 0.8
    cross_c: float = 8.0
    cross_after_min: float = 180.0
    pulldown_c_per_min: float = 0.2


class ColdChainModel:
    """Compressor sawtooth, door spikes, defrost, mains failure and door-left-open warming."""

    kind: Kind = Kind.COLD_CHAIN
    metrics: tuple[str, ...] = ("temperature", "door_open", "power_ok")

    def __init__(self, params: ColdChainParams, seed: int) -> None:
        """Build the model of one cabinet; ``seed`` makes it differ from its neighbours."""
        self.p = params
        self.seed = seed

    def _doors(self, day: int) -> list[tuple[float, float]]:
        """(opening, closing) times of the routine door openings of a local day."""
        out = []
        for i in range(self.p.door_openings_per_day):
            at = day_start(day) + 3600 * (8 + 10 * uniform(self.seed, "door", day, i))
            out.append((at, at + 30 + 90 * uniform(self.seed, "door-len", day, i)))
        return out

    def cabinet(self, t: float) -> tuple[float, bool]:
        """Temperature with the power on and no door held open, and whether a door is open."""
        p = self.p
        period = p.cycle_min * 60
        n = math.floor(t / period)
        phase = t / period - n
        high = p.high_c - 0.3 * uniform(self.seed, "cycle", n)
        warm = 1 - p.cooling_fraction
        if phase < warm:
            temp = p.low_c + (high - p.low_c) * phase / warm
        else:
            temp = high - (high - p.low_c) * (phase - warm) / p.cooling_fraction
        every = p.defrost_every_h * 3600
        since_defrost = (t + 1800) % every
        if since_defrost < p.defrost_min * 60:
            temp += p.defrost_rise_c * math.sin(math.pi * since_defrost / (p.defrost_min * 60))
        is_open = False
        day = local_day(t)
        for opened, closed in self._doors(day - 1) + self._doors(day):
            if opened <= t < closed:
                is_open = True
                temp += p.door_spike_c * min((t - opened) / 60, 1.0)
            elif closed <= t < closed + 3600:
                temp += p.door_spike_c * min((closed - opened) / 60, 1.0) * math.exp(-(t - closed) / 360)
        temp += 0.04 * value_noise(self.seed, "t-noise", t, 90)
        return temp, is_open

    def sample(self, t: float, events: Sequence[Event] = ()) -> dict[str, float]:
        """Temperature (degC), door_open and power_ok (0/1) at time ``t``."""
        p = self.p
        temp, is_open = self.cabinet(t)
        power_ok = True
        for e in _active(events, EventKind.DOOR_LEFT_OPEN, t):
            # Compressor running against an open door: the cabinet settles half-way to the room.
            settle = p.low_c + 0.5 * (p.ambient_c - p.low_c)
            base, _ = self.cabinet(e.start_s)
            if t < e.end_s:
                is_open = True
                temp = max(temp, base + (settle - base) * (1 - math.exp(-(t - e.start_s) / 900)))
            else:
                at_close = base + (settle - base) * (1 - math.exp(-(e.end_s - e.start_s) / 900))
                temp = max(temp, temp + (at_close - temp) * math.exp(-(t - e.end_s) / 600))
        for e in _active(events, EventKind.MAINS_FAILURE, t):
            ambient = e.param("ambient_c", p.ambient_c)
            base, _ = self.cabinet(e.start_s)
            tau = self.warming_tau_s(base, ambient, e.param("cross_after_min", p.cross_after_min))
            if t < e.end_s:
                power_ok = False
                temp = ambient - (ambient - base) * math.exp(-(t - e.start_s) / tau)
            else:
                at_restore = ambient - (ambient - base) * math.exp(-(e.end_s - e.start_s) / tau)
                pulled = at_restore - p.pulldown_c_per_min * (t - e.end_s) / 60
                temp = max(temp, pulled)
        return {"temperature": temp, "door_open": float(is_open), "power_ok": float(power_ok)}

    def warming_tau_s(self, start_c: float, ambient_c: float, cross_after_min: float) -> float:
        """Time constant of the unpowered warm-up that crosses ``cross_c`` on time.

        Newton's law of cooling, T(t) = ambient - (ambient - start) * exp(-t / tau), solved
        for T(cross_after) = cross_c.
        """
        cross = self.p.cross_c
        if not start_c < cross < ambient_c:
            return cross_after_min * 60  # cannot cross: warm with a plausible constant
        return cross_after_min * 60 / math.log((ambient_c - start_c) / (ambient_c - cross))


# --- swimming pool ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SwimmingPoolParams:
    """An indoor pool with an automatic chlorine and acid dosing controller.

    Attributes:
        free_chlorine_setpoint: the controller's free-chlorine target (mg/L).
        ph_setpoint: the controller's pH target.
        water_c: water temperature.
        bather_scale: 1.0 is a normal day; more bathers consume more chlorine.
        consumption_mg_l: free chlorine the controller loses to a full bather load.
        decay_per_h: chlorine decay without bathers when dosing stops (1/h).
        load_decay_per_h: additional decay per unit of bather load when dosing stops (1/h).
    """

    free_chlorine_setpoint: float = 0.7
    ph_setpoint: float = 7.4
    water_c: float = 27.5
    bather_scale: float = 1.0
    consumption_mg_l: float = 0.25
    decay_per_h: float = 0.05
    load_decay_per_h: float = 0.6


class SwimmingPoolModel:
    """Bather load peaks in the afternoon; chlorine is consumed, chloramines form, ORP follows."""

    kind: Kind = Kind.SWIMMING_POOL
    metrics: tuple[str, ...] = ("free_chlorine", "combined_chlorine", "ph", "orp", "temperature")

    def __init__(self, params: SwimmingPoolParams, seed: int) -> None:
        """Build the model of one pool."""
        self.p = params
        self.seed = seed

    def bathers(self, t: float) -> float:
        """Bather load, 0 (closed) to about 1 at a normal day's afternoon peak."""
        h = local_hours(t)
        if not 6.0 <= h < 22.0:
            return 0.0
        shape = (
            0.45 * math.exp(-(((h - 10.5) / 1.5) ** 2))
            + 1.0 * math.exp(-(((h - 15.5) / 1.8) ** 2))
            + 0.6 * math.exp(-(((h - 19.5) / 1.2) ** 2))
        )
        day_factor = 0.85 + 0.3 * uniform(self.seed, "day", local_day(t))
        return self.p.bather_scale * day_factor * shape

    def _controlled_chlorine(self, t: float) -> float:
        p = self.p
        lagged = self.bathers(t - 1200)
        noise = 0.025 * value_noise(self.seed, "fc", t, 600)
        return max(p.free_chlorine_setpoint - p.consumption_mg_l * lagged + noise, 0.0)

    def _free_chlorine(self, t: float, events: Sequence[Event]) -> float:
        fc = self._controlled_chlorine(t)
        for e in _active(events, EventKind.DOSING_FAILURE, t):
            stop = min(t, e.end_s)
            level = self._controlled_chlorine(e.start_s)
            step = 300.0
            s = e.start_s
            while s < stop:  # first-order decay with a bather-dependent rate
                dt = min(step, stop - s)
                rate = e.param("decay_per_h", self.p.decay_per_h) + self.p.load_decay_per_h * (
                    self.bathers(s + dt / 2)
                )
                level *= math.exp(-rate * dt / 3600)
                s += dt
            # once dosing is back, the controller pulls the level up within the hour
            fc = level if t < e.end_s else fc + (level - fc) * math.exp(-(t - e.end_s) / 1200)
        return fc

    def sample(self, t: float, events: Sequence[Event] = ()) -> dict[str, float]:
        """Free and combined chlorine (mg/L), pH, ORP (mV) and temperature (degC)."""
        p = self.p
        fc = self._free_chlorine(t, events)
        load_1h = self.bathers(t - 3600)
        cc = 0.08 + 0.25 * load_1h + 0.015 * value_noise(self.seed, "cc", t, 1800)
        ph = p.ph_setpoint + 0.06 * value_noise(self.seed, "ph", t, 3 * 3600) + 0.05 * self.bathers(t - 1800)
        temp = (
            p.water_c
            + 0.3 * math.sin(2 * math.pi * (local_hours(t) - 10) / 24)
            + 0.05 * value_noise(self.seed, "temp", t, 1200)
        )
        return {
            "free_chlorine": fc,
            "combined_chlorine": max(cc, 0.0),
            "ph": ph,
            "orp": orp_mv(fc, ph) + 3 * value_noise(self.seed, "orp", t, 300),
            "temperature": temp,
        }


def orp_mv(free_chlorine: float, ph: float) -> float:
    """Oxidation-reduction potential of chlorinated water.

    ORP tracks hypochlorous acid, the active share of free chlorine, which falls as pH rises
    (pKa 7.54 at 25 degC); the electrode response is roughly logarithmic. Calibrated to
    about 720 mV at 0.7 mg/L and pH 7.4, typical of well-run pools.
    """
    hocl = max(free_chlorine, 0.005) / (1 + 10 ** (ph - 7.54))
    reference = 0.7 / (1 + 10 ** (7.4 - 7.54))
    return 720 + 90 * math.log10(hocl / reference)


# --- drinking water ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrinkingWaterParams:
    """A chlorinated supply point: a plant outlet (defaults) or a tap (lower dose).

    Attributes:
        dose_mg_l: free chlorine right after a dosing cycle.
        dose_every_h: dosing cycle.
        decay_per_h: chlorine decay rate at 20 degC and average demand (1/h).
        combined_mg_l: combined chlorine, so total = free + combined.
        ph_mean: long-term pH.
        conductivity_us_cm: long-term conductivity.
        season_mean_c: yearly mean water temperature.
        season_amplitude_c: half the summer-winter difference.
        turbidity_ntu: baseline turbidity.
        turbidity_spikes_per_week: natural turbidity spikes (pipe work, pressure surges).
    """

    dose_mg_l: float = 0.9
    dose_every_h: float = 6.0
    decay_per_h: float = 0.08
    combined_mg_l: float = 0.12
    ph_mean: float = 7.4
    conductivity_us_cm: float = 380.0
    season_mean_c: float = 16.0
    season_amplitude_c: float = 9.0
    turbidity_ntu: float = 0.25
    turbidity_spikes_per_week: float = 0.5


class DrinkingWaterModel:
    """Chlorine decaying between doses with diurnal demand, rare turbidity spikes, seasons."""

    kind: Kind = Kind.DRINKING_WATER
    metrics: tuple[str, ...] = (
        "free_chlorine",
        "total_chlorine",
        "turbidity",
        "ph",
        "temperature",
        "conductivity",
    )

    def __init__(self, params: DrinkingWaterParams, seed: int) -> None:
        """Build the model of one sampling point."""
        self.p = params
        self.seed = seed

    def temperature(self, t: float) -> float:
        """Water temperature: the season (warmest in late July), a small diurnal swing."""
        p = self.p
        day_of_year = (t / DAY_S) % 365.25
        season = math.sin(2 * math.pi * (day_of_year - 115) / 365.25)
        diurnal = 0.3 * math.sin(2 * math.pi * (local_hours(t) - 9) / 24)
        return (
            p.season_mean_c
            + p.season_amplitude_c * season
            + diurnal
            + 0.05 * value_noise(self.seed, "temp", t, 1800)
        )

    def decay_rate_per_s(self, t: float) -> float:
        """Chlorine demand: higher by day (more flow through the network) and when warm."""
        h = local_hours(t)
        demand = 1 + 0.4 * math.sin(2 * math.pi * (h - 8) / 24)
        return self.p.decay_per_h * demand * math.pow(1.05, self.temperature(t) - 20) / 3600

    def _free_chlorine(self, t: float, events: Sequence[Event]) -> float:
        p = self.p
        period = p.dose_every_h * 3600
        dosed = math.floor(t / period) * period
        for e in _active(events, EventKind.DOSING_FAILURE, t):
            if e.start_s < t < e.end_s + period:
                # no dose since the failure began until the first cycle after it ends
                last_good = math.floor(e.start_s / period) * period
                restart = math.ceil(e.end_s / period) * period if math.isfinite(e.end_s) else t
                dosed = last_good if t < restart else dosed
        mid = (dosed + t) / 2
        fc = p.dose_mg_l * math.exp(-self.decay_rate_per_s(mid) * (t - dosed))
        return max(fc + 0.01 * value_noise(self.seed, "fc", t, 300), 0.0)

    def _spike(self, t: float, start: float, duration_s: float, peak: float) -> float:
        if not start <= t < start + 3 * duration_s:
            return 0.0
        rise = 0.15 * duration_s
        if t - start < rise:
            return peak * (t - start) / rise
        return peak * math.exp(-(t - start - rise) / (duration_s / 3))

    def turbidity(self, t: float, events: Sequence[Event]) -> float:
        """Baseline turbidity with slow noise, natural spikes and scenario turbidity events."""
        p = self.p
        ntu = p.turbidity_ntu + 0.04 * value_noise(self.seed, "ntu", t, 7200)
        day = local_day(t)
        for d in (day - 1, day):
            if uniform(self.seed, "spike", d) < p.turbidity_spikes_per_week / 7:
                start = day_start(d) + DAY_S * uniform(self.seed, "spike-at", d)
                duration = 1800 + 3600 * uniform(self.seed, "spike-len", d)
                peak = 1.2 + 1.8 * uniform(self.seed, "spike-peak", d)
                ntu += self._spike(t, start, duration, peak)
        for e in _active(events, EventKind.TURBIDITY_EVENT, t):
            duration = (e.end_s - e.start_s) if math.isfinite(e.end_s) else 3600.0
            ntu += self._spike(t, e.start_s, duration, e.param("peak_ntu", 2.5))
        return max(ntu, 0.01)

    def sample(self, t: float, events: Sequence[Event] = ()) -> dict[str, float]:
        """Free and total chlorine (mg/L), turbidity, pH, temperature and conductivity."""
        p = self.p
        fc = self._free_chlorine(t, events)
        return {
            "free_chlorine": fc,
            "total_chlorine": fc + p.combined_mg_l + 0.01 * value_noise(self.seed, "tc", t, 900),
            "turbidity": self.turbidity(t, events),
            "ph": p.ph_mean
            + 0.15 * value_noise(self.seed, "ph-slow", t, 5 * DAY_S)
            + 0.02 * value_noise(self.seed, "ph", t, 1800),
            "temperature": self.temperature(t),
            "conductivity": p.conductivity_us_cm
            + 25 * value_noise(self.seed, "cond-slow", t, 3 * DAY_S)
            + 4 * value_noise(self.seed, "cond", t, 3600),
        }


# --- medical waste --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MedicalWasteParams:
    """A hospital's medical-waste temporary store.

    Attributes:
        deposits_per_day: deliveries from the wards between 07:30 and 20:00.
        deposit_kg: mean mass of one delivery (each is 0.4-1.6 times this).
        collect_hour: local hour the licensed collector comes.
        long_interval_share: share of collections followed by a 48 h interval instead of 24 h.
        room_c: mean store temperature.
        humidity_rh: mean relative humidity.
    """

    deposits_per_day: int = 6
    deposit_kg: float = 15.0
    collect_hour: float = 10.0
    long_interval_share: float = 0.3
    room_c: float = 22.0
    humidity_rh: float = 60.0


class MedicalWasteModel:
    """Weight rising through the day, dropping near zero at each collection (every 24-48 h)."""

    kind: Kind = Kind.MEDICAL_WASTE
    metrics: tuple[str, ...] = ("temperature", "humidity", "door_open", "weight")

    def __init__(self, params: MedicalWasteParams, seed: int, origin_s: float) -> None:
        """Build the model; collections are scheduled from the local day of ``origin_s``."""
        self.p = params
        self.seed = seed
        self.origin_day = local_day(origin_s)

    def deposits(self, day: int) -> list[tuple[float, float, float]]:
        """(time, door-open seconds, kg) of the deliveries of a local day."""
        out = []
        for i in range(self.p.deposits_per_day):
            at = day_start(day) + 3600 * (7.5 + 12.5 * uniform(self.seed, "dep", day, i))
            kg = self.p.deposit_kg * (0.4 + 1.2 * uniform(self.seed, "kg", day, i))
            out.append((at, 60 + 90 * uniform(self.seed, "dep-door", day, i), kg))
        return sorted(out)

    def collections(self, until: float) -> Iterator[float]:
        """Scheduled collection times from the origin day up to ``until``."""
        at = day_start(self.origin_day) + 3600 * self.p.collect_hour
        n = 0
        while at <= until:
            yield at
            long = uniform(self.seed, "interval", n) < self.p.long_interval_share
            at += (48 if long else 24) * 3600
            n += 1

    def effective_collections(self, until: float, events: Sequence[Event]) -> list[float]:
        """Collections that happened: the scheduled ones not missed."""
        missed = [e for e in events if e.kind is EventKind.MISSED_COLLECTION]
        return [c for c in self.collections(until) if not any(e.start_s <= c < e.end_s for e in missed)]

    def weight(self, t: float, events: Sequence[Event]) -> float:
        """Mass in the store: a small residue plus every delivery since the last collection."""
        done = self.effective_collections(t, events)
        since = done[-1] if done else day_start(self.origin_day)
        index = len(done)
        kg = 0.5 + 1.5 * uniform(self.seed, "residue", index)
        for day in range(local_day(since), local_day(t) + 1):
            kg += sum(m for at, _, m in self.deposits(day) if since < at <= t)
        return kg

    def door_open(self, t: float, events: Sequence[Event]) -> bool:
        """Open for each delivery, for ten minutes at each collection, or when left open."""
        day = local_day(t)
        if any(at <= t < at + dur for at, dur, _ in self.deposits(day)):
            return True
        done = self.effective_collections(t, events)
        if done and done[-1] <= t < done[-1] + 600:
            return True
        return any(e.start_s <= t < e.end_s for e in _active(events, EventKind.DOOR_LEFT_OPEN, t))

    def sample(self, t: float, events: Sequence[Event] = ()) -> dict[str, float]:
        """Temperature (degC), humidity (%RH), door_open (0/1) and weight (kg)."""
        p = self.p
        diurnal = math.sin(2 * math.pi * (local_hours(t) - 9) / 24)
        return {
            "temperature": p.room_c + 2.0 * diurnal + 0.2 * value_noise(self.seed, "t", t, 1200),
            "humidity": p.humidity_rh - 6.0 * diurnal + 1.5 * value_noise(self.seed, "h", t, 1800),
            "door_open": float(self.door_open(t, events)),
            "weight": self.weight(t, events) + 0.05 * value_noise(self.seed, "w", t, 120),
        }


# --- construction -----------------------------------------------------------------------

_PARAMS: Final[dict[Kind, type[Any]]] = {
    Kind.COLD_CHAIN: ColdChainParams,
    Kind.SWIMMING_POOL: SwimmingPoolParams,
    Kind.DRINKING_WATER: DrinkingWaterParams,
    Kind.MEDICAL_WASTE: MedicalWasteParams,
}


def params_class(kind: Kind) -> type[Any]:
    """The parameter dataclass of a kind's model."""
    return _PARAMS[kind]


def coerce_params(kind: Kind, params: Mapping[str, float]) -> dict[str, Any]:
    """Check a scenario's model parameters for ``kind`` and give counts their int type.

    Raises:
        ValueError: an unknown name, or a fraction where a count is expected; the message
            starts with the parameter's name.
    """
    types = {f.name: f.type for f in fields(_PARAMS[kind])}
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name not in types:
            known = ", ".join(sorted(types))
            raise ValueError(f"{name}: not a parameter of the {kind.value} model (known: {known})")
        if types[name] in ("int", int):
            if not float(value).is_integer() or value < 0:
                raise ValueError(f"{name}: must be a whole number >= 0, got {value}")
            out[name] = int(value)
        else:
            out[name] = float(value)
    return out


def build_model(kind: Kind, params: Mapping[str, float], seed: int, origin_s: float) -> SignalModel:
    """Build the model of ``kind`` with ``params`` overriding the defaults.

    Raises:
        ValueError: a bad parameter (see :func:`coerce_params`).
    """
    p = _PARAMS[kind](**coerce_params(kind, params))
    if kind is Kind.COLD_CHAIN:
        return ColdChainModel(p, seed)
    if kind is Kind.SWIMMING_POOL:
        return SwimmingPoolModel(p, seed)
    if kind is Kind.DRINKING_WATER:
        return DrinkingWaterModel(p, seed)
    return MedicalWasteModel(p, seed, origin_s)
