"""Notifications reach the people the standard names, once per cause: a cold-chain alarm texts
at least three designated people (GSP 附录3 第六条), `registry check` refuses a unit that
cannot, and a power cut behind eight fridges reaches each person as one message naming eight."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from alerts.service import AlertService
from tests.alerts.conftest import EXAMPLE_REGISTRY, Receiver, make_settings
from weijian.contract import Kind, MetricValue, Reading
from weijian.registry import load_registry

T0 = datetime(2026, 7, 15, 2, 0, tzinfo=UTC)
FRIDGES = [f"fr-{i:02d}" for i in range(1, 9)]
PHONES = ("13800000011", "13800000012", "13800000013")


def cold_store_registry(path: Path, alarm_contacts: int = 2) -> Path:
    people = range(1, 1 + alarm_contacts)
    contacts = ", ".join(f'{{ name = "值班{i}", phone = "{PHONES[i]}" }}' for i in people)
    devices = ", ".join(
        f'{{ id = "{d}", profile = "fridge-logger", metrics = ["temperature", "door_open", "power_ok"] }}'
        for d in FRIDGES
    )
    refs = ", ".join(f'"cold-1/{d}"' for d in FRIDGES)
    path.write_text(
        '[[districts]]\nid = "d1"\nname = "城关区"\nteam = "城关监督所"\n'
        'supervisors = [{ name = "王监督", phone = "13800000001" }]\n\n'
        '[[units]]\nid = "cdc"\nname = "城关区疾控中心"\nlicence = "12340000MB0000009X"\ndistrict = "d1"\n'
        f'handler = {{ name = "值班0", phone = "{PHONES[0]}" }}\n'
        'head = { name = "主任", phone = "13800000019" }\n'
        f"alarm_contacts = [{contacts}]\n\n"
        '[[sites]]\nid = "cold-1"\nname = "城关区疫苗冷库"\nkind = "cold_chain"\ndistrict = "d1"\n'
        'unit = "cdc"\naddress = "城关区人民路1号"\n'
        f'storage = "refrigerated"\ndevices = [{devices}]\n\n'
        f'[[gateways]]\nid = "gw-cold"\nname = "冷库网关"\ndevices = [{refs}]\n',
        encoding="utf-8",
    )
    return path


def test_registry_check_fails_a_cold_chain_unit_that_texts_fewer_than_three(tmp_path: Path) -> None:
    path = cold_store_registry(tmp_path / "registry.toml", alarm_contacts=1)
    done = subprocess.run([sys.executable, "-m", "weijian", "registry", "check", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "units[0] (id 'cdc'): key 'alarm_contacts'" in done.stderr
    assert "'cc-power-lost'" in done.stderr and "at least 3 people" in done.stderr
    assert "add 1 more" in done.stderr
    ok = cold_store_registry(tmp_path / "ok.toml", alarm_contacts=2)
    assert subprocess.run([sys.executable, "-m", "weijian", "registry", "check", str(ok)],
                          capture_output=True, timeout=60, check=False).returncode == 0
    assert load_registry(EXAMPLE_REGISTRY)  # the shipped example names three for each cold store


async def test_a_power_cut_behind_eight_fridges_is_one_message_per_person_naming_eight(
    tmp_path: Path, sqlite_url: str, receiver: Receiver
) -> None:
    registry = load_registry(cold_store_registry(tmp_path / "registry.toml"))
    settings = make_settings(sqlite_url, receiver.url)
    service = AlertService.from_settings(settings, registry, now=lambda: T0 + timedelta(seconds=5))
    try:
        readings = [
            Reading(site_id="cold-1", device_id=d, gateway_id="gw-cold", kind=Kind.COLD_CHAIN, ts=T0,
                    seq=i + 1,
                    metrics={"power_ok": MetricValue(value=0.0, unit="0/1"),
                             "temperature": MetricValue(value=5.0, unit="degC")})
            for i, d in enumerate(FRIDGES)
        ]
        transitions = await service.handle_batch(readings)  # one poll cycle of the gateway
        fired = {t.alert.alert_id for t in transitions if t.kind.value == "firing"}
        assert len(fired) == 8
        async with httpx.AsyncClient() as client:
            while await service.worker.run_once(client):
                pass
    finally:
        service.close()
    sms = [m for m in receiver.received if m["reason"] == "firing"]
    assert Counter(m["to"] for m in sms) == Counter(PHONES)  # three people, one message each
    for m in sms:
        assert "共8台设备" in m["text"] and all(d in m["text"] for d in FRIDGES)
        assert sorted(m["devices"]) == FRIDGES
        assert set(m["alert_ids"]) == fired  # every alert accounted for in the delivery log
