"""Accounts on the task API over real HTTP (uvicorn) and a real database (SQLite and
PostgreSQL): logins, token expiry, refresh and revocation, lockout, who the audit trail names,
roles, photos with their hashes, the evidence ZIP, bounded inputs, and `weijian tasks user`."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from alerts.accounts import Accounts, Role
from alerts.api import ApiOptions, build_app
from alerts.store import NewTask, Store
from tests.alerts.conftest import firing_turbidity_alert, served, turbidity_task
from weijian.cli import main
from weijian.config import AlertTeam

NOW = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
PASSWORD = "correct-horse-7"


def png(seed: int = 0) -> bytes:
    """A real 4x4 PNG (signature, IHDR, IDAT, IEND)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes([(seed + 60 * x) % 256, 90, 200]) * 4 for x in range(4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def task(alert_id: str, district: str) -> NewTask:
    return turbidity_task(alert_id, district, NOW)


@dataclass
class Api:
    base: str
    store: Store
    accounts: Accounts
    ids: list[int]
    clock: dict[str, datetime]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=10)

    def login(self, c: httpx.Client, username: str, password: str = PASSWORD) -> dict[str, Any]:
        r = c.post("/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return dict(r.json())


def auth(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path) -> Iterator[Api]:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'tasks.sqlite'}" if request.param == "sqlite" \
        else str(request.getfixturevalue("fresh_pg_url"))
    store = Store(url)
    ids = store.record([], [task("a-cg", "chengguan"), task("a-dj", "dongjiao"), task("a-cg2", "chengguan")],
                       [], now=NOW)
    clock = {"now": datetime.now(UTC)}
    accounts = Accounts(store.engine, access_ttl_s=60, refresh_ttl_s=3600, max_failed=5, lockout_s=600,
                        now=lambda: clock["now"])
    for username, name, district, role in [("wang", "王建国", "chengguan", Role.INSPECTOR),
                                           ("liu", "刘芳", "chengguan", Role.INSPECTOR),
                                           ("zhao", "赵丽", "dongjiao", Role.INSPECTOR),
                                           ("desk", "值班员", "chengguan", Role.DUTY_DESK)]:
        accounts.add(username, name=name, phone="13800000000", team="城关分局", districts=[district],
                     role=role, password=PASSWORD)
    teams = [AlertTeam(name="城关分局", token="tok-cg", districts=["chengguan"])]
    options = ApiOptions(accounts=accounts, photo_max_bytes=4096, photos_per_task=3)
    app = build_app(store, teams, options=options)
    try:
        with served(app) as base:
            yield Api(base, store, accounts, ids, clock)
    finally:
        store.close()


def test_an_inspector_logs_in_claims_and_closes_and_the_audit_names_the_account(api: Api) -> None:
    cg, dj, _ = api.ids
    with api.client() as c:
        wang = api.login(c, "wang")
        assert wang["account"]["role"] == "inspector" and wang["expires_in"] == 60
        assert c.get("/me", headers=auth(wang)).json()["username"] == "wang"
        assert {t["id"] for t in c.get("/tasks", headers=auth(wang)).json()} == {cg, api.ids[2]}
        assert c.get(f"/tasks/{dj}", headers=auth(wang)).status_code == 404  # another district's
        claimed = c.post(f"/tasks/{cg}/claim", headers=auth(wang)).json()
        assert claimed["assignee"] == "wang"  # an account claims for itself, whatever it sends
        assert [t["id"] for t in c.get("/tasks", params={"mine": "true"}, headers=auth(wang)).json()] == [cg]
        liu = api.login(c, "liu")
        body = {"finding": "已整改", "finding_code": "confirmed_fixed"}
        assert c.post(f"/tasks/{cg}/close", json=body, headers=auth(liu)).status_code == 403  # not hers
        photo = png()
        up = c.post(f"/tasks/{cg}/photos", files={"photo": ("p.png", photo, "image/png")}, headers=auth(wang))
        assert up.status_code == 200 and up.json()["sha256"] == hashlib.sha256(photo).hexdigest()
        closed = c.post(f"/tasks/{cg}/close", headers=auth(wang), json=body | {"evidence": {
            "photos": [up.json()["sha256"]], "gps": [30.61, 114.3], "gps_accuracy_m": 12}}).json()
        assert closed["status"] == "closed" and closed["evidence"]["finding_text"] == "情况属实，已责令整改"
        trail = [(a["actor"], a["action"]) for a in closed["audit"]]
        assert trail == [("system", "created"), ("wang", "claimed"), ("wang", "photo_added"),
                         ("wang", "closed")]
        # The case file: the record, the photo, and hashes that prove both unchanged.
        z = zipfile.ZipFile(io.BytesIO(c.get(f"/tasks/{cg}/evidence.zip", headers=auth(wang)).content))
        sums = dict(line.split("  ")[::-1] for line in z.read("SHA256SUMS").decode().splitlines())
        for name, digest in sums.items():
            assert hashlib.sha256(z.read(name)).hexdigest() == digest
        assert z.read(f"photos/{hashlib.sha256(photo).hexdigest()}.png") == photo
        # A team token still works for machine clients, and is marked so in the audit.
        other = api.ids[2]
        r = c.post(f"/tasks/{other}/claim", json={"assignee": "外包系统"},
                   headers={"Authorization": "Bearer tok-cg"})
        assert r.status_code == 200 and r.json()["audit"][-1]["actor"] == "team:城关分局"


def test_tokens_expire_are_revoked_on_logout_and_a_replayed_refresh_ends_the_login(api: Api) -> None:
    with api.client() as c:
        first = api.login(c, "wang")
        assert c.get("/me", headers=auth(first)).status_code == 200
        api.clock["now"] += timedelta(seconds=61)  # past the access token's 60 s
        assert c.get("/me", headers=auth(first)).status_code == 401
        second = c.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
        assert c.get("/me", headers=auth(second)).status_code == 200
        # The spent refresh token again (a thief's copy): refused, and the login it belongs to ends.
        assert c.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).status_code == 401
        assert c.get("/me", headers=auth(second)).status_code == 401
        assert c.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 401
        third = api.login(c, "wang")
        assert c.post("/auth/logout", headers=auth(third)).status_code == 200
        assert c.get("/me", headers=auth(third)).status_code == 401
        assert c.post("/auth/refresh", json={"refresh_token": third["refresh_token"]}).status_code == 401
        api.clock["now"] += timedelta(hours=2)  # past the refresh token's hour too
        fourth = api.login(c, "wang")
        api.clock["now"] += timedelta(hours=1, seconds=1)
        assert c.post("/auth/refresh", json={"refresh_token": fourth["refresh_token"]}).status_code == 401


def test_wrong_passwords_lock_the_account_and_disabled_accounts_are_refused(api: Api) -> None:
    with api.client() as c:
        codes = [c.post("/auth/login", json={"username": "liu", "password": "wrong-one"}).status_code
                 for _ in range(20)]
        assert codes[:4] == [401] * 4 and set(codes[4:]) == {429}  # locked at the 5th in a row
        locked = c.post("/auth/login", json={"username": "liu", "password": PASSWORD})
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0  # even the right one
        unknown = [c.post("/auth/login", json={"username": "nobody", "password": "x" * 9}).status_code
                   for _ in range(6)]
        assert unknown == [401] * 4 + [429] * 2  # an unknown name answers exactly like a known one
        api.clock["now"] += timedelta(seconds=601)
        assert c.post("/auth/login", json={"username": "liu", "password": PASSWORD}).status_code == 200
        zhao = api.login(c, "zhao")
        api.accounts.set_disabled("zhao", True)
        assert c.get("/me", headers=auth(zhao)).status_code == 401  # its tokens are revoked at once
        refused = c.post("/auth/login", json={"username": "zhao", "password": PASSWORD})
        assert refused.status_code == 403
        assert c.post("/auth/login", json={"username": "zhao", "password": "wrong-one"}).status_code == 401


def test_roles_the_duty_desk_reassigns_and_sees_overdue_first(api: Api) -> None:
    cg, _, cg2 = api.ids
    with api.client() as c:
        desk, wang = api.login(c, "desk"), api.login(c, "wang")
        assert c.get("/desk/tasks", headers=auth(wang)).status_code == 403
        refused = c.post(f"/tasks/{cg}/reassign", json={"assignee": "liu"}, headers=auth(wang))
        assert refused.status_code == 403
        listed = c.get("/desk/tasks", headers=auth(desk)).json()
        assert [t["id"] for t in listed] == [cg, cg2]  # same due time: oldest first
        people = c.get("/accounts", headers=auth(desk)).json()
        assert {a["username"] for a in people} == {"wang", "liu", "desk"}
        moved = c.post(f"/tasks/{cg}/reassign", json={"assignee": "liu"}, headers=auth(desk)).json()
        assert moved["assignee"] == "liu" and moved["audit"][-1]["actor"] == "desk"
        assert moved["audit"][-1]["detail"] == "- -> liu"
        # Not to someone of another district.
        elsewhere = c.post(f"/tasks/{cg2}/reassign", json={"assignee": "zhao"}, headers=auth(desk))
        assert elsewhere.status_code == 409


def test_inputs_are_bounded_and_refused_with_4xx_leaving_nothing_half_done(api: Api) -> None:
    cg = api.ids[0]
    team = {"Authorization": "Bearer tok-cg"}
    with api.client() as c:
        long = c.post(f"/tasks/{cg}/claim", json={"assignee": "王" * 65}, headers=team)
        assert long.status_code == 422
        header = c.post(f"/tasks/{cg}/claim", json={"assignee": "王"},
                        headers=team | {"X-Inspector": "x" * 200})
        assert header.status_code == 422
        assert api.store.task(cg)["status"] == "open"  # type: ignore[index]
        for bad in (2**31, 2**63, 0, -1):
            assert c.get(f"/tasks/{bad}", headers=team).status_code == 422
        assert c.get("/tasks", params={"status": "open\x00"}, headers=team).status_code == 422
        assert c.post(f"/tasks/{cg}/claim", json={"assignee": "a\x00b"}, headers=team).status_code == 422
        assert c.post(f"/tasks/{cg}/claim", headers=team).status_code == 400  # a team token names someone
        wang = api.login(c, "wang")
        c.post(f"/tasks/{cg}/claim", headers=auth(wang))
        fake = ("x.png", b"MZ\x90\x00 not an image", "image/png")
        not_photo = c.post(f"/tasks/{cg}/photos", files={"photo": fake}, headers=auth(wang))
        assert not_photo.status_code == 415
        big = c.post(f"/tasks/{cg}/photos", files={"photo": ("b.png", png() + b"\x00" * 5000, "image/png")},
                     headers=auth(wang))
        assert big.status_code == 413
        for i in range(3):
            assert c.post(f"/tasks/{cg}/photos", files={"photo": ("p.png", png(i), "image/png")},
                          headers=auth(wang)).status_code == 200
        assert c.post(f"/tasks/{cg}/photos", files={"photo": ("p.png", png(9), "image/png")},
                      headers=auth(wang)).status_code == 409  # photos_per_task
        assert c.post(f"/tasks/{cg}/close", json={"finding": "x", "finding_code": "made-up"},
                      headers=auth(wang)).status_code == 422
        assert c.post(f"/tasks/{cg}/close", json={"finding": "x", "evidence": {"gps": [91, 0]}},
                      headers=auth(wang)).status_code == 422
        paths = c.get("/openapi.json").json()["paths"]
        claim_codes = set(paths["/tasks/{task_id}/claim"]["post"]["responses"])
        assert claim_codes >= {"200", "400", "401", "404", "409", "422", "503"}
        assert set(paths["/auth/login"]["post"]["responses"]) >= {"200", "401", "403", "422", "429"}


def test_weijian_tasks_user_add_disable_reset(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.sqlite'}"
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[tasks]\nurl = "{url}"\n', encoding="utf-8")
    assert main(["tasks", "user", "add", "wang", "--name", "王建国", "--district", "chengguan",
                 "--phone", "13800000000", "--config", str(cfg)]) == 0
    password = capsys.readouterr().out.split("password: ")[1].strip()
    accounts = Accounts(Store(url).engine)
    accounts.login("wang", password)
    again = ["tasks", "user", "add", "wang", "--name", "又一个", "--district", "x", "--config", str(cfg)]
    assert main(again) == 2
    assert "taken" in capsys.readouterr().err
    assert main(["tasks", "user", "disable", "wang", "--config", str(cfg)]) == 0
    assert accounts.get("wang").disabled  # type: ignore[union-attr]
    assert main(["tasks", "user", "enable", "wang", "--config", str(cfg)]) == 0
    assert main(["tasks", "user", "reset", "wang", "--config", str(cfg)]) == 0
    new = capsys.readouterr().out.split("password: ")[1].strip()
    assert new != password
    accounts.login("wang", new)
    assert main(["tasks", "user", "list", "--config", str(cfg)]) == 0
    assert "wang" in capsys.readouterr().out
    assert main(["tasks", "user", "reset", "nobody", "--config", str(cfg)]) == 2


def test_the_chart_readings_answer_503_while_influxdb_is_down(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from weijian.config import InfluxSettings
    from weijian.rules import default_rule_packs

    store = Store(f"sqlite:///{tmp_path / 'tasks.sqlite'}")
    alert = firing_turbidity_alert("a-cg", NOW)
    [tid] = store.record([alert], [task("a-cg", "chengguan")], [], now=NOW)
    down = InfluxSettings(url="http://127.0.0.1:9", database="x", timeout_s=1)
    options = ApiOptions(influx=down, rule_packs=dict(default_rule_packs()))
    team = {"Authorization": "Bearer tok-cg"}
    with served(build_app(store, [AlertTeam(name="城关分局", token="tok-cg", districts=["chengguan"])],
                          options=options)) as base:
        answer = httpx.get(f"{base}/tasks/{tid}/readings", headers=team, timeout=10)
        assert answer.status_code == 503 and "InfluxDB" in answer.json()["detail"]
        assert httpx.get(f"{base}/tasks/{tid}", headers=team, timeout=10).status_code == 200  # the rest works
    store.close()


def test_status_before_ownership_400_for_a_body_that_is_not_json_and_the_team_inspector_in_the_audit(
    api: Api,
) -> None:
    cg, _, other = api.ids
    with api.client() as c:
        liu = api.login(c, "liu")
        body = {"finding": "已整改", "finding_code": "confirmed_fixed"}
        # An open task: not claimed (409) comes before whose it is (403).
        assert c.post(f"/tasks/{cg}/close", json=body, headers=auth(liu)).status_code == 409
        photo = {"photo": ("p.png", png(), "image/png")}
        assert c.post(f"/tasks/{cg}/photos", files=photo, headers=auth(liu)).status_code == 409
        # Not JSON at all: 400; JSON of the wrong shape stays 422.
        garbled = c.post("/auth/login", content=b"{not json", headers={"Content-Type": "application/json"})
        assert garbled.status_code == 400, garbled.text
        assert c.post("/auth/login", json={"username": 1}).status_code == 422
        # A team token with X-Inspector as a client sends it: UTF-8.
        r = c.post(f"/tasks/{other}/claim", json={"assignee": "王建国"},
                   headers={"Authorization": "Bearer tok-cg", "X-Inspector": "王建国".encode()})
        assert r.status_code == 200, r.text
        assert r.json()["audit"][-1]["actor"] == "team:城关分局 (王建国)"
