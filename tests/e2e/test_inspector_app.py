"""The inspector's app end to end, in Debian's Chromium (headless, driven by Playwright) at a
phone's viewport: a turbidity spike simulated by firmware_sim fires an alert through the real
alert service, whose task appears in the right inspector's queue; the inspector logs in,
claims it, closes it with a finding, a photo and the phone's position; the audit trail names
the account; an inspector of another district never sees it. `weijian tasks serve` runs as its
own process on the same SQLite tasks database, with the readings in a real InfluxDB for the
chart. Screenshots of each step go to the test's folder (and to docs/app/ with
WEIJIAN_APP_SCREENSHOTS=1)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import httpx
from playwright.async_api import Page, async_playwright

from firmware_sim.scenario import load_scenario
from firmware_sim.service import run_scenario
from ingest.lineproto import reading_line
from tests.alerts.conftest import Receiver, SimSampler, free_port
from tests.alerts.test_accounts_api import png
from tests.alerts.test_scenarios_e2e import drive
from weijian.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "examples" / "registry.toml"
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
         "has_touch": True, "locale": "zh-CN", "timezone_id": "Asia/Shanghai"}
POSITION = {"latitude": 30.6521, "longitude": 114.3012, "accuracy": 8}


async def store_readings(influx_url: str, database: str) -> int:
    """The scenario's readings of the spiking tap, as a gateway and ingest would have stored them."""
    registry = load_registry(REGISTRY)
    scenario = load_scenario("water-turbidity-spike")
    lines = []
    async with run_scenario(scenario, speed=0) as sim:
        gateways = {(s.id, d.id): registry.gateway_of(s.id, d.id) or "gw" for s, d in registry.devices()}
        sampler = SimSampler(sim, gateways)
        t, end = sim.clock.start_s, sim.clock.start_s + scenario.duration_h * 3600
        while t < end:
            lines += [reading_line(r, "chengguan") for r in sampler.readings_at(t)
                      if r.site_id == "yc-water-002"]
            t += 60.0
    async with httpx.AsyncClient(timeout=30) as client:
        body = "\n".join(lines).encode()
        r = await client.post(f"{influx_url}/write", params={"db": database}, content=body)
    assert r.status_code == 204, r.text
    return len(lines)


async def weijian(*args: str, stdin: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "weijian", *args, cwd=ROOT,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate(stdin.encode())
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def shot(page: Page, folder: Path, name: str) -> None:
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


async def test_alert_to_closed_task_in_a_phone_browser(  # type: ignore[no-untyped-def]
    tmp_path: Path, receiver: Receiver, influxd, influx_db
) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.sqlite'}"
    service, events = await drive("water-turbidity-spike", url, receiver, load_registry(REGISTRY))
    service.store.close()
    assert any(e.rule == "dw-turbidity-high" and e.state.value == "firing" for e in events)
    assert await store_readings(influxd.url, influx_db) == 1440
    port = free_port()
    cfg = tmp_path / "tasks.toml"
    cfg.write_text(f'[tasks]\nurl = "{url}"\n[registry]\npath = "{REGISTRY}"\n'
                   f'[influx]\nurl = "{influxd.url}"\ndatabase = "{influx_db}"\n'
                   f'[alerts]\napi_host = "127.0.0.1"\napi_port = {port}\n', encoding="utf-8")
    for user, name, district, role in (("wang", "王建国", "chengguan", "inspector"),
                                       ("zhao", "赵丽", "xinhe", "inspector"),
                                       ("desk", "值班员", "chengguan", "duty_desk")):
        code, err = await weijian("tasks", "user", "add", user, "--name", name, "--district", district,
                                  "--role", role, "--password-stdin", "--config", str(cfg),
                                  stdin=f"{user}-password-1\n")
        assert code == 0, err
    server = await asyncio.create_subprocess_exec(sys.executable, "-m", "weijian", "tasks", "serve",
                                                  "--config", str(cfg), cwd=ROOT,
                                                  stdout=asyncio.subprocess.DEVNULL)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient(timeout=1) as client:
            while True:
                assert server.returncode is None, "the task API exited"
                try:
                    await client.get(f"{base}/healthz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the task API did not start"
                    await asyncio.sleep(0.1)
        photo = tmp_path / "现场.png"
        photo.write_bytes(png(7))
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                              args=["--no-sandbox"])
            phone = await browser.new_context(**PHONE, geolocation=POSITION, permissions=["geolocation"])
            page = await phone.new_page()
            await page.goto(f"{base}/app/login")
            await shot(page, shots, "01-login")
            await page.fill("input[name=username]", "wang")
            await page.fill("input[name=password]", "wang-password-1")
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/app/")
            item = page.locator("#tasks li[data-task]").filter(has_text="浑浊度")
            await item.wait_for()
            task_id = int(await item.get_attribute("data-task") or 0)
            await shot(page, shots, "02-queue")
            await item.locator("a").click()
            await page.wait_for_url(f"{base}/app/task/{task_id}")
            await page.locator("#chart polyline").wait_for()
            assert "人民路" in await page.inner_text("#task")  # the site's address, with its map link
            assert await page.get_attribute("#task a[href*='amap']", "href")
            await shot(page, shots, "03-task")
            await page.click("#claim")
            await page.locator("#close-form").wait_for()
            assert await page.inner_text("#status") == "处置中"
            assert await page.inner_text("#assignee") == "wang"
            await shot(page, shots, "04-claimed")
            # The duty desk, meanwhile: every open task of its districts, overdue first.
            desk = await (await browser.new_context(**PHONE)).new_page()
            await desk.goto(f"{base}/app/login")
            await desk.fill("input[name=username]", "desk")
            await desk.fill("input[name=password]", "desk-password-1")
            await desk.click("button[type=submit]")
            await desk.wait_for_url(f"{base}/app/")
            await desk.click("a[data-nav=desk]")
            await desk.wait_for_url(f"{base}/app/desk")
            row = desk.locator(f"#tasks li[data-task='{task_id}']")
            await row.wait_for()
            assert "已超时" in await row.inner_text() and "wang" in await row.inner_text()
            await shot(desk, shots, "08-desk")
            await page.select_option("select[name=finding_code]", "confirmed_fixed")
            finding = "现场核查：上游管网施工扰动，已责令冲洗管网并复测合格。"
            await page.fill("textarea[name=finding]", finding)
            await page.set_input_files("input[name=photo]", str(photo))
            await page.locator("#photos li").wait_for()
            await page.click("#locate")
            await page.wait_for_function("document.getElementById('position').textContent.includes('30.65')")
            await shot(page, shots, "05-closing")
            await page.click("#close-form button[type=submit]")
            await page.wait_for_function("document.getElementById('status').textContent === '已办结'")
            await shot(page, shots, "06-closed")
            tokens = await page.evaluate("sessionStorage.getItem('wj.access')")
            # Another district's inspector, on another phone: not in the queue, nor by its address.
            other = await browser.new_context(**PHONE)
            page2 = await other.new_page()
            await page2.goto(f"{base}/app/login")
            await page2.fill("input[name=username]", "zhao")
            await page2.fill("input[name=password]", "zhao-password-1")
            await page2.click("button[type=submit]")
            await page2.wait_for_url(f"{base}/app/")
            await page2.locator("#tasks li").first.wait_for()
            assert await page2.locator(f"#tasks li[data-task='{task_id}']").count() == 0
            await page2.goto(f"{base}/app/task/{task_id}")
            await page2.wait_for_function("document.getElementById('message').textContent.length > 0")
            assert "不属于您的辖区" in await page2.inner_text("#message")
            await shot(page2, shots, "07-other-district")
            await browser.close()
        async with httpx.AsyncClient() as client:
            bearer = {"Authorization": f"Bearer {tokens}"}
            answer = await client.get(f"{base}/tasks/{task_id}", headers=bearer)
        task = answer.json()
        assert task["status"] == "closed"
        people = [(a["actor"], a["action"]) for a in task["audit"] if a["actor"] != "system"]
        assert people == [("wang", "claimed"), ("wang", "photo_added"), ("wang", "closed")]
        evidence = task["evidence"]
        assert evidence["photos"] == [hashlib.sha256(png(7)).hexdigest()]
        assert evidence["gps"] == [POSITION["latitude"], POSITION["longitude"]]
        assert evidence["finding_code"] == "confirmed_fixed" and evidence["gps_at"]
    finally:
        server.terminate()
        await server.wait()
    if os.environ.get("WEIJIAN_APP_SCREENSHOTS") == "1":
        target = ROOT / "docs" / "app"
        target.mkdir(exist_ok=True)
        for png_file in shots.glob("*.png"):
            shutil.copy(png_file, target / png_file.name)
