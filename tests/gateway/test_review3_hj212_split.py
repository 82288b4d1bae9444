"""Split packets (Flag bit 1) with impossible PNUM / PNO, sent to `weijian gateway run`'s real
listener over TCP, as a broken or hostile logger would: HJ 212 writes both as N4 (1-9999), and a
part numbered past its packet's count can never complete. docs/hj212.md: such a part is refused
(`malformed`, no answer) and the connection goes on, answering the next good upload."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway import hj212
from tests.gateway.conftest import gateway_data, running_gateway
from weijian.demo.local_services import free_port
from weijian.registry import load_registry

MN = "010000A8900016F000169DC0"


@pytest.fixture
def hj_registry(gw_registry: Path, tmp_path: Path) -> Path:
    """gw_registry with its first drinking-water station read through an HJ 212 logger."""
    text = gw_registry.read_text(encoding="utf-8").replace(
        'profile = "wq-analyser"', 'profile = "wq-hj212-logger"', 1)
    path = tmp_path / "registry.toml"
    path.write_text(text, encoding="utf-8")
    load_registry(path)
    return path


def part(qn: str, pnum: int, pno: int) -> bytes:
    header = {"QN": qn, "ST": "21", "CN": "2011", "PW": "123456", "MN": MN, "Flag": 7,  # 2017, split, reply
              "PNUM": pnum, "PNO": pno}
    return hj212.encode_packet(header, "DataTime=20261122080000;w01001-Rtd=7.2,w01001-Flag=N")


def whole(qn: str) -> bytes:
    header = {"QN": qn, "ST": "21", "CN": "2011", "PW": "123456", "MN": MN, "Flag": 5}
    return hj212.encode_packet(header, "DataTime=20261122080100;w01001-Rtd=7.3,w01001-Flag=N")


async def replies_until(port: int, data: bytes, last_qn: str) -> tuple[list[hj212.Packet], float]:
    """Every 9xxx answer up to and including the one to ``last_qn``, and how long that took."""
    for _ in range(50):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except ConnectionRefusedError:
            await asyncio.sleep(0.1)
    began = time.monotonic()
    writer.write(data)
    await writer.drain()
    frames = hj212.FrameReader()
    out: list[hj212.Packet] = []
    try:
        async with asyncio.timeout(10):
            while not any(p.qn == last_qn for p in out):
                chunk = await reader.read(4096)
                assert chunk, f"the gateway closed the connection after {[p.cn for p in out]}"
                framed = [f for f in frames.feed(chunk) if isinstance(f, hj212.Frame)]
                packets = [hj212.parse_packet(f.segment) for f in framed]
                out += [p for p in packets if p.cn.startswith("9")]  # not the host's 1012 request
    finally:
        writer.close()
    return out, time.monotonic() - began


@pytest.mark.parametrize(("pnum", "pno"), [(10_000, 1), (2, 3), (2, 0), (0, 1)])
async def test_a_part_with_an_impossible_pnum_or_pno_is_refused_and_the_connection_goes_on(
    tmp_path, mosquitto, topic_root, hj_registry, collector_for, pnum, pno
):
    port = free_port()
    data = gateway_data(tmp_path, mosquitto, topic_root, hj_registry, [], hj212={
        "listen_host": "127.0.0.1", "listen_port": port, "loggers": [
            {"mn": MN, "password": "123456", "site_id": "yc-water-001", "device_id": "wq-01"}]})
    collector = collector_for(mosquitto, topic_root)
    async with running_gateway(data):
        answers, took_s = await replies_until(port, part("20261122080000001", pnum, pno)
                                              + whole("20261122080100001"), "20261122080100001")
        # Only the good upload is answered; the impossible part is not (it was not taken).
        assert [(p.cn, p.qn) for p in answers] == [("9014", "20261122080100001")]
        assert took_s < 3
        await collector.wait_for(lambda c: len(c.readings()) >= 1, 10, "the good upload")
    assert [r["metrics"]["ph"]["value"] for r in collector.readings()] == [7.3]
