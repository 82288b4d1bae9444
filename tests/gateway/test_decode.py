"""decode.py against the simulator's encoder as an oracle, and the status-bit flags."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.registers import build_image
from gateway.decode import decode_sample, plan_device
from weijian.contract import Flag
from weijian.device_profile import DataType, StatusBit, list_profiles, load_profile

PROFILES = {name: p for name in list_profiles() if (p := load_profile(name)).registers}  # Modbus ones


def value_strategy(profile_name: str, metric: str) -> st.SearchStrategy[float]:
    spec = PROFILES[profile_name].registers[metric]
    if spec.type is DataType.BIT:
        return st.sampled_from([0.0, 1.0])
    low = {DataType.UINT16: 0, DataType.UINT32: 0, DataType.INT16: -3000, DataType.INT32: -3000}.get(
        spec.type, -50
    )
    low_value = low * spec.scale + spec.offset if spec.type is not DataType.FLOAT32 else -50.0
    type_high = {DataType.UINT16: 0xFFFF, DataType.INT16: 0x7FFF, DataType.UINT32: 0xFFFFFFFF,
                 DataType.INT32: 0x7FFFFFFF}.get(spec.type)
    high = spec.max if spec.max is not None else 5000.0
    if type_high is not None:
        high = min(high, type_high * spec.scale + spec.offset)
    if spec.min is not None:
        low_value = max(low_value, spec.min)
    # What the instrument can report: 0, or at least its resolution in magnitude.
    return st.floats(min_value=max(low_value, spec.offset), max_value=high, allow_nan=False).map(
        lambda v: 0.0 if spec.resolution is not None and abs(v) < spec.resolution else v
    )


@st.composite
def samples(draw: st.DrawFn) -> tuple[str, dict[str, float], set[StatusBit], int]:
    name = draw(st.sampled_from(sorted(PROFILES)))
    values = {m: draw(value_strategy(name, m)) for m in PROFILES[name].registers}
    raised = [StatusBit.SENSOR_FAULT, StatusBit.MAINTENANCE, StatusBit.CALIBRATION]
    bits = draw(st.sets(st.sampled_from(raised)))
    clock = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return name, values, bits, clock


@given(samples())
@settings(max_examples=300, deadline=None)
def test_decoding_inverts_the_simulators_encoding(sample):
    name, values, bits, clock = sample
    profile = PROFILES[name]
    image = build_image(profile, values, set(bits), clock)
    metrics = list(profile.registers)
    blocks = plan_device(profile, metrics, read_clock=True)
    data = {}
    for block in blocks:  # read the image the way the poller reads the device
        words = image.read(block.table, block.start, block.count)
        assert words is not None, block  # no block touches an unmapped address
        addresses = range(block.start, block.start + block.count)
        data.setdefault(block.table, {}).update(zip(addresses, words, strict=True))
    decoded = decode_sample(profile, metrics, data)
    assert decoded.device_ts == clock
    for metric, want in values.items():
        spec = profile.registers[metric]
        tolerance = 1e-6 * max(1.0, abs(want)) if spec.type is DataType.FLOAT32 else spec.scale / 2 + 1e-9
        assert decoded.values[metric] == pytest.approx(want, abs=tolerance), metric
    expected = (
        Flag.DEVICE_FAULT if StatusBit.SENSOR_FAULT in bits
        else Flag.CALIBRATION if StatusBit.CALIBRATION in bits
        else Flag.MAINTENANCE if StatusBit.MAINTENANCE in bits
        else None
    )
    over_range = any(
        spec.max is not None and values[m] > spec.max for m, spec in profile.registers.items()
    )
    for metric, flag in decoded.flags.items():
        if expected is not None:
            assert flag is expected
        else:  # with the over-range bit up, a value sitting at its max is the one flagged T
            spec = profile.registers[metric]
            at_max = spec.max is not None and values[metric] >= spec.max
            assert flag is (Flag.OVER_RANGE if at_max and over_range else Flag.NORMAL), metric


def test_over_range_flags_only_the_clamped_metric():
    profile = PROFILES["wq-analyser"]
    values = {"free_chlorine": 9.0, "turbidity": 0.3, "ph": 7.1, "temperature": 12.0, "conductivity": 400.0}
    image = build_image(profile, values, set(), 0)
    data = {t: dict(cells) for t, cells in image.tables.items()}
    decoded = decode_sample(profile, list(values), data)
    assert decoded.values["free_chlorine"] == 5.0  # the instrument's upper limit
    assert decoded.flags == {m: Flag.OVER_RANGE if m == "free_chlorine" else Flag.NORMAL for m in values}


def test_scaled_integers_decode_without_binary_noise():
    profile = PROFILES["waste-store-logger"]  # uint16 * 0.1 - 40
    image = build_image(profile, {"temperature": -12.3, "humidity": 55.5, "weight": 1234.56}, set(), None)
    data = {t: dict(cells) for t, cells in image.tables.items()}
    decoded = decode_sample(profile, ["temperature", "humidity", "weight"], data)
    assert decoded.values == {"temperature": -12.3, "humidity": 55.5, "weight": 1234.56}


def test_plan_reads_only_the_listed_metrics_status_and_clock_when_asked():
    profile = PROFILES["wq-analyser"]
    blocks = plan_device(profile, ["free_chlorine", "turbidity"], read_clock=False)
    got = [(b.table.value, b.start, b.count) for b in blocks]
    assert got == [("input", 0, 1), ("input", 2, 1), ("input", 16, 1)]
    with_clock = plan_device(profile, ["free_chlorine", "turbidity"], read_clock=True)
    assert ("holding", 100, 2) in [(b.table.value, b.start, b.count) for b in with_clock]
    with pytest.raises(KeyError):
        plan_device(profile, ["orp"], read_clock=False)


@pytest.mark.parametrize(("name", "metric", "value"), [
    ("wq-analyser-cdab", "free_chlorine", 0.42),
    ("pool-controller", "ph", 7.2),
])
def test_a_float_read_in_the_wrong_word_order_is_published_as_a_device_fault_not_a_value(name, metric, value):
    profile = PROFILES[name]
    spec = profile.registers[metric]
    values = {m: 0.0 for m in profile.registers} | {metric: value}
    image = build_image(profile, values, set(), 0)
    words = image.read(spec.table, spec.address, 2)
    assert words is not None
    data = {spec.table: {spec.address: words[1], spec.address + 1: words[0]}}  # the words swapped
    decoded = decode_sample(profile, [metric], data)
    assert decoded.flags[metric] is Flag.DEVICE_FAULT
    assert decoded.values[metric] is None
    assert metric in decoded.implausible
    # The same words in the right order decode to the value, flag N.
    in_order = {spec.table: {spec.address: words[0], spec.address + 1: words[1]}}
    right = decode_sample(profile, [metric], in_order)
    assert right.flags[metric] is Flag.NORMAL
    assert right.values[metric] == pytest.approx(value, rel=1e-6)


def test_below_min_and_above_max_are_implausible_and_zero_is_not():
    spec = PROFILES["wq-analyser-cdab"].registers["free_chlorine"]
    assert spec.min == 0.0 and spec.max == 10.0 and spec.resolution
    assert spec.plausible(0.0) and spec.plausible(10.0) and spec.plausible(spec.resolution)
    assert not spec.plausible(-0.01)
    assert not spec.plausible(10.01)
    assert not spec.plausible(spec.resolution / 10)
    assert not spec.plausible(float("nan"))
