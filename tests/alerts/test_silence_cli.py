"""Maintenance windows from the command line, applied by a running alerts service at its tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.engine import TransitionKind
from alerts.service import AlertService
from tests.alerts.conftest import EXAMPLE_REGISTRY, make_settings
from weijian.cli import main
from weijian.contract import Kind, MetricValue, Reading
from weijian.registry import load_registry

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "weijian.toml"
    path.write_text(f'[tasks]\nurl = "{url}"\n[registry]\npath = "{EXAMPLE_REGISTRY}"\n', encoding="utf-8")
    return path


def _power(minute: int, ok: float, device: str = "fr-01") -> Reading:
    return Reading(site_id="yc-cc-001", device_id=device, gateway_id="gw-chengguan-public",
                   kind=Kind.COLD_CHAIN, ts=T0 + timedelta(minutes=minute), seq=minute + 1,
                   metrics={"power_ok": MetricValue(value=ok, unit="0/1")})


async def test_a_silence_added_on_the_command_line_quiets_the_running_service(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = load_registry(EXAMPLE_REGISTRY)
    device = next(d.id for s, d in registry.devices() if s.id == "yc-cc-001")
    settings = make_settings(sqlite_url, "http://127.0.0.1:9/sms")
    service = AlertService.from_settings(settings, registry, now=lambda: T0)
    config = _config(tmp_path, sqlite_url)
    try:
        code = main(["tasks", "silence", "add", "--config", str(config), "--site", "yc-cc-001",
                     "--starts", "2026-11-24T16:55+08:00", "--hours", "2", "--reason", "断电检修",
                     "--by", "运维张工"])
        assert code == 0, capsys.readouterr().err
        await service.tick()  # the service learns of it from the database
        fired = [t for t in await service.handle(_power(1, 0.0, device)) if t.kind is TransitionKind.FIRING]
        assert fired and fired[0].alert.silenced
        assert service.store.tasks() == []  # silenced: no task, nobody paged
        assert service.store.deliveries() == []
        main(["tasks", "silence", "list", "--config", str(config), "--all"])
        assert "断电检修 (运维张工)" in capsys.readouterr().out
    finally:
        service.close()


@pytest.mark.parametrize(("extra", "message"), [
    (["--site", "no-such-site"], "--site 'no-such-site': no such site in"),
    (["--site", "yc-cc-001", "--device", "zz-99"], "--device 'zz-99': site 'yc-cc-001' has no such device"),
    (["--site", "yc-cc-001", "--rule", "no-such-rule"], "--rule 'no-such-rule': no such rule"),
    (["--site", "yc-cc-001", "--starts", "2026-11-24T09:00"], "give the offset"),
    (["--site", "yc-cc-001", "--hours", "0"], "--hours 0.0: must be more than 0"),
])
def test_a_bad_silence_is_refused_with_the_option_named(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    args = ["tasks", "silence", "add", "--config", str(_config(tmp_path, sqlite_url)),
            "--reason", "校准", "--by", "运维", *extra]
    if "--hours" not in extra:
        args += ["--hours", "1"]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def alert_notifications(service: AlertService, alert_id: str) -> int:
    """Notifications of the alert itself (firing, repeat, escalated), not its task's reminders."""
    return sum(1 for d in service.store.deliveries(alert_id=alert_id) if d["idem_key"].startswith(alert_id))


async def test_a_silence_added_after_an_alert_fired_mutes_its_repeats_and_ends_out_of_the_list(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = load_registry(EXAMPLE_REGISTRY)
    device = next(d.id for s, d in registry.devices() if s.id == "yc-cc-001")
    settings = make_settings(sqlite_url, "http://127.0.0.1:9/sms")
    clock = {"now": T0}
    service = AlertService.from_settings(settings, registry, now=lambda: clock["now"])
    config = _config(tmp_path, sqlite_url)
    try:
        fired = [t for t in await service.handle(_power(0, 0.0, device)) if t.kind is TransitionKind.FIRING]
        assert fired and not fired[0].alert.silenced
        alert_id = fired[0].alert.alert_id
        sent = alert_notifications(service, alert_id)
        assert sent > 0  # the firing was notified
        # An hour later, while still firing, someone silences the site for two hours.
        clock["now"] = T0 + timedelta(hours=1)
        assert main(["tasks", "silence", "add", "--config", str(config), "--site", "yc-cc-001",
                     "--starts", "2026-11-24T18:00+08:00", "--hours", "2", "--reason", "断电检修",
                     "--by", "运维张工"]) == 0
        for minutes in range(60, 180, 5):  # the 30 and 60 min escalations are due, then repeats
            clock["now"] = T0 + timedelta(minutes=minutes)
            await service.tick()
        assert alert_notifications(service, alert_id) == sent  # nothing more was queued while silenced
        assert len(service.state.silences) == 1
        assert service.state.find(fired[0].alert.alert_id).silenced
        # The window ends with the alert still firing: it is notified again, the silence leaves the list.
        clock["now"] = T0 + timedelta(hours=3, minutes=1)
        await service.tick()
        assert service.state.silences == []
        assert alert_notifications(service, alert_id) > sent
        assert not service.state.find(fired[0].alert.alert_id).silenced
        capsys.readouterr()
        main(["tasks", "silence", "list", "--config", str(config)])
        assert "断电检修" not in capsys.readouterr().out  # ended: only `--all` shows the record
    finally:
        service.close()
