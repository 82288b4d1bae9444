"""HJ 212 data loggers pushing to `weijian gateway run`'s listener, over real TCP, with the
gateway's real spool and a real Mosquitto: what is stored and published, what is answered, and
what is refused. Packets are written with the codec (whose own tests check it against the
standard's examples)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import hj212
from gateway.spool import last_seq
from tests.gateway.conftest import gateway_data, running_gateway
from tests.gateway.hj212_upstream import Upstream
from weijian.demo.local_services import free_port
from weijian.registry import load_registry

PLAIN_MN, SEALED_MN = "010000A8900016F000169DC0", "010000A8900016F000169DC1"
KEY = "30" * 16  # the standard's SM4 test key


@pytest.fixture
def hj_registry(gw_registry: Path, tmp_path: Path) -> Path:
    """gw_registry with the first two drinking-water stations read through HJ 212 loggers."""
    text = gw_registry.read_text(encoding="utf-8").replace(
        'profile = "wq-analyser"', 'profile = "wq-hj212-logger"', 2)
    path = tmp_path / "registry.toml"
    path.write_text(text, encoding="utf-8")
    load_registry(path)
    return path


def upload(mn: str, qn: str | None, values: dict[str, tuple[float | str, str]], *, pw: str = "123456",
           flag: int | None = 5, cn: str = "2011", rf: bool = False, key: bytes | None = None,
           data_time: str = "20261122080000") -> bytes:
    suffix = "Rtd" if cn == "2011" else "Avg"
    cp = f"DataTime={data_time};" + ";".join(f"{c}-{suffix}={v},{c}-Flag={f}" for c, (v, f) in values.items())
    header = {"QN": qn, "ST": "21", "CN": cn, "PW": pw, "MN": mn, "Flag": flag, "RF": 1 if rf else None}
    return hj212.encode_packet(header, cp, key=key)


async def exchange(port: int, data: bytes, replies: int = 1) -> list[hj212.Packet]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    frames = hj212.FrameReader()
    out: list[hj212.Packet] = []
    try:
        async with asyncio.timeout(5):
            while len(out) < replies:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                framed = [f for f in frames.feed(chunk) if isinstance(f, hj212.Frame)]
                packets = [hj212.parse_packet(f.segment) for f in framed]
                out += [p for p in packets if p.cn.startswith("9")]  # not the host's 1012 request
    finally:
        writer.close()
    return out


def qn_rtn(packet: hj212.Packet) -> str:
    return hj212.parse_cp(packet.cp).fields["QnRtn"]


async def test_loggers_data_is_stored_once_answered_and_refusals_are_answered_and_never_stored(
    tmp_path, mosquitto, topic_root, hj_registry, collector_for
):
    port = free_port()
    data = gateway_data(tmp_path, mosquitto, topic_root, hj_registry, [], hj212={
        "listen_host": "127.0.0.1", "listen_port": port, "loggers": [
            {"mn": PLAIN_MN, "password": "123456", "site_id": "yc-water-001", "device_id": "wq-01"},
            {"mn": SEALED_MN, "password": "654321", "site_id": "yc-water-002", "device_id": "wq-01",
             "key": KEY},
        ]})
    collector = collector_for(mosquitto, topic_root)
    good = {"w01001": (7.21, "N"), "w01003": (0.31, "N"), "w99001": (0.42, "N"), "w01010": (18.6, "M")}
    async with running_gateway(data):
        for _ in range(50):
            try:
                (reply,) = await exchange(port, upload(PLAIN_MN, "20261122080000001", good))
                break
            except (ConnectionRefusedError, ValueError):
                await asyncio.sleep(0.1)
        assert (reply.cn, reply.qn, reply.st) == ("9014", "20261122080000001", "91")
        # Answered only once the reading is committed to the spool: the logger may forget it now.
        assert last_seq(tmp_path / "spool.sqlite") == 1
        # A retry of the same upload: answered again, stored once.
        (again,) = await exchange(port, upload(PLAIN_MN, "20261122080000001", good))
        assert again.cn == "9014"
        # A 2025 logger: encrypted, a resent backlog packet (RF=1), then a heartbeat.
        sealed = upload(SEALED_MN, "20261122070000001", {"w01001": (6.9, "N")}, pw="654321", flag=9,
                        rf=True, key=bytes.fromhex(KEY), data_time="20261122070000")
        heartbeat = hj212.encode_packet({"QN": "20261122080000009", "ST": "21", "CN": "9015", "PW": "654321",
                                         "MN": SEALED_MN, "Flag": 8}, "")
        replies = await exchange(port, sealed + heartbeat, replies=2)
        assert [r.cn for r in replies] == ["9014", "9013"] and replies[0].flag == 8
        # Refusals: bad CRC, wrong password, unknown MN, each answered with its QnRtn.
        bad = bytearray(upload(PLAIN_MN, "20261122080000002", good))
        bad[-3] = ord("0") if bad[-3] != ord("0") else ord("1")
        wrong_pw = upload(PLAIN_MN, "20261122080000003", good, pw="000000")
        unknown = upload("FFFFFFFFFFFFFFFFFFFFFFFF", "20261122080000004", good)
        for packet, want in [(bytes(bad), "9"), (wrong_pw, "3"), (unknown, "4")]:
            (refused,) = await exchange(port, packet)
            assert refused.cn == "9011" and qn_rtn(refused) == want, (refused, want)
        # Hostile bytes on another connection leave the listener serving the loggers.
        rng = random.Random(7)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(10_000):
            noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            writer.write(noise + b"##" * rng.randrange(2))
        await writer.drain()
        writer.close()
        later = upload(PLAIN_MN, "20261122080100001", good, data_time="20261122080100")
        (after,) = await exchange(port, later)
        assert after.cn == "9014"
        # The last upload is spooled after everything sent before it, and published in order:
        # once it is here, anything wrongly stored before it would be here too.
        await collector.wait_for(lambda c: any(r["ts"] == "2026-11-22T00:01:00.000Z" for r in c.readings()),
                                 10, "the last upload")
    readings = collector.readings()
    by_device: dict[tuple[str, str], list[dict]] = {}
    for r in readings:
        by_device.setdefault((r["site_id"], r["device_id"]), []).append(r)
    plain = by_device[("yc-water-001", "wq-01")]
    # Each upload once, at its DataTime (08:00 and 08:01 in China).
    assert sorted(r["ts"] for r in plain) == ["2026-11-22T00:00:00.000Z", "2026-11-22T00:01:00.000Z"]
    first = next(r for r in plain if r["ts"].startswith("2026-11-22T00:00"))
    assert first["metrics"]["ph"] == {"value": 7.21, "unit": "pH", "flag": "N"}
    assert first["metrics"]["free_chlorine"]["value"] == 0.42  # the vendor's w99001
    assert first["metrics"]["temperature"]["flag"] == "M"  # the packet's data flag
    (sealed_reading,) = by_device[("yc-water-002", "wq-01")]
    assert sealed_reading["metrics"]["ph"]["value"] == 6.9
    assert datetime.fromisoformat(sealed_reading["ts"].replace("Z", "+00:00")) < datetime.now(UTC)  # backlog
    assert sealed_reading["resent"] is True and "resent" not in first  # RF=1, and only there
    assert len(readings) == 3  # nothing refused was stored


async def test_forwarding_to_two_upstreams_one_down_a_while_both_end_with_every_packet_in_order(
    tmp_path, mosquitto, topic_root, hj_registry
):
    port = free_port()
    up_a, up_b = Upstream(free_port()), Upstream(free_port())
    await up_a.start()  # B is down at first
    data = gateway_data(tmp_path, mosquitto, topic_root, hj_registry, [], hj212={
        "listen_host": "127.0.0.1", "listen_port": port,
        "loggers": [{"mn": PLAIN_MN, "password": "123456", "site_id": "yc-water-001", "device_id": "wq-01",
                     "set_clock": False}],
        "upstreams": [{"name": "county", "host": "127.0.0.1", "port": up_a.port, "timeout_s": 2},
                      {"name": "province", "host": "127.0.0.1", "port": up_b.port, "timeout_s": 2}],
    })
    sent = [upload(PLAIN_MN, f"2026112208{m:02d}00001", {"w01001": (7.0 + m / 100, "N")},
                   data_time=f"2026112208{m:02d}00") for m in range(40)]
    # A heartbeat that asks for an answer: the upstream's is a 9013, not a 9014.
    sent.insert(10, hj212.encode_packet({"QN": "20261122081000009", "ST": "21", "CN": "9015", "PW": "123456",
                                         "MN": PLAIN_MN, "Flag": 5}, ""))
    try:
        async with running_gateway(data):
            for _ in range(50):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    break
                except ConnectionRefusedError:
                    await asyncio.sleep(0.1)
            frames = hj212.FrameReader()

            async def send(packet: bytes) -> None:  # as a logger does: wait for the 9014
                writer.write(packet)
                await writer.drain()
                async with asyncio.timeout(5):
                    while not [f for f in frames.feed(await reader.read(4096)) if isinstance(f, hj212.Frame)]:
                        pass

            for n, packet in enumerate(sent):
                if n == 20:
                    await up_b.start()  # the province comes back mid-stream
                await send(packet)
                if n == 5:
                    await send(packet)  # a logger's retry of the same QN: not forwarded twice
            writer.close()
            async with asyncio.timeout(30):
                while len(up_a.packets) < len(sent) or len(up_b.packets) < len(sent):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
    finally:
        await up_a.stop()
        await up_b.stop()
    assert up_a.packets == sent  # every packet, unchanged, in order, once
    assert up_b.packets == sent


async def test_2005_packets_without_qn_and_unreadable_values_or_times_neither_collapse_nor_kill(
    tmp_path, mosquitto, topic_root, hj_registry, collector_for
):
    port = free_port()
    data = gateway_data(tmp_path, mosquitto, topic_root, hj_registry, [], hj212={
        "listen_host": "127.0.0.1", "listen_port": port, "loggers": [
            {"mn": PLAIN_MN, "password": "123456", "site_id": "yc-water-001", "device_id": "wq-01"}]})
    collector = collector_for(mosquitto, topic_root)
    ph = {"w01001": (7.2, "N")}
    # 2005-era uploads carry no QN and no Flag (no answer): each minute is a new one.
    old = b"".join(upload(PLAIN_MN, None, ph, flag=None, data_time=f"2026112208{m:02d}00") for m in range(3))
    nan = upload(PLAIN_MN, "20261122081000001", {"w01001": ("NaN", "N")}, data_time="20261122081000")
    year_1 = upload(PLAIN_MN, "20261122081100001", ph, data_time="00010101000000")  # before UTC can go
    month_13 = upload(PLAIN_MN, "20261122081200001", ph, data_time="20261301000000")
    last = upload(PLAIN_MN, "20261122081300001", ph, data_time="20261122081300")
    async with running_gateway(data):
        for _ in range(50):
            try:
                replies = await exchange(port, old + nan + year_1 + month_13 + last, replies=4)
                break
            except (ConnectionRefusedError, ValueError):
                await asyncio.sleep(0.1)
        # One connection answered every packet that asked: no poison packet closed it.
        assert [r.cn for r in replies] == ["9014"] * 4
        await collector.wait_for(lambda c: any(r["ts"] == "2026-11-22T00:13:00.000Z" for r in c.readings()),
                                 10, "the last upload")
    stamps = sorted(r["ts"] for r in collector.readings())
    assert stamps == ["2026-11-22T00:00:00.000Z", "2026-11-22T00:01:00.000Z", "2026-11-22T00:02:00.000Z",
                      "2026-11-22T00:10:00.000Z", "2026-11-22T00:13:00.000Z"]
    (not_a_number,) = [r for r in collector.readings() if r["ts"] == "2026-11-22T00:10:00.000Z"]
    assert not_a_number["metrics"]["ph"] == {"value": None, "unit": "pH", "flag": "D"}
