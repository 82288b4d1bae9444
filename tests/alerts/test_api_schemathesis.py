"""schemathesis over the whole task API, served by uvicorn on a real SQLite tasks database:
every operation of the OpenAPI document, with generated inputs, must answer
without a server error and as its document says (status codes, content types, bodies).
Valid and invalid inputs (schemathesis' positive and negative modes), bounded: 25 examples
of each per operation (about 900 requests), no deadline."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, reject, settings
from hypothesis.errors import Unsatisfiable

from alerts.accounts import Accounts, Role
from alerts.api import ApiOptions, build_app
from alerts.store import NewTask, Store
from tests.alerts.conftest import served
from weijian.config import AlertTeam

NOW = datetime.now(UTC)
TOKEN: dict[str, str] = {}
BASE: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("schemathesis") / "tasks.sqlite"
    store = Store(f"sqlite:///{path}")
    tasks = [NewTask(alert_id=f"st-{i}", district="chengguan", site_id="yc-water-002", device_id="wq-01",
                     rule_id="dw-turbidity-high", severity="warning", title="巡查核查：浑浊度超过限值",
                     description="实测3NTU", due_at=NOW + timedelta(hours=i)) for i in range(1, 6)]
    store.record([], tasks, [], now=NOW)
    accounts = Accounts(store.engine, access_ttl_s=86_400)
    for username, role, password in (("desk", Role.DUTY_DESK, "schemathesis-1"),
                                     ("wang", Role.INSPECTOR, "schemathesis-2")):
        accounts.add(username, name=username, phone="", team="城关分局", districts=["chengguan"], role=role,
                     password=password)
    _, pair = accounts.login("desk", "schemathesis-1")
    TOKEN["access"] = pair.access_token
    app = build_app(store, [AlertTeam(name="城关分局", token="tok-cg", districts=["chengguan"])],
                    options=ApiOptions(accounts=accounts, photo_max_bytes=64 * 1024))
    try:
        with served(app, log_level="critical") as base:
            BASE["url"] = base
            yield schemathesis.openapi.from_url(f"{base}/openapi.json")
    finally:
        store.close()


def send(client: httpx.Client, case: Any, headers: dict[str, str]) -> tuple[httpx.Response, dict[str, Any]]:
    """The case over real HTTP with httpx (requests cannot run beside grafana-client's urllib3-future)."""
    kw = case.as_transport_kwargs(base_url=BASE["url"], headers=headers)
    body: dict[str, Any] = {}
    if "json" in kw:
        body["json"] = kw["json"]
    if kw.get("data") is not None:
        body["content" if isinstance(kw["data"], bytes | str) else "data"] = kw["data"]
    if kw.get("files") is not None:  # generated form parts may be numbers: send them as text
        body["files"] = [(name, tuple(v if isinstance(v, bytes | str) else str(v) for v in (
            part if isinstance(part, tuple) else (None, part)))) for name, part in _items(kw["files"])]
    if kw.get("cookies"):
        client.cookies = kw["cookies"]
    try:
        response = client.request(kw["method"], kw["url"], params=kw.get("params"), headers=kw.get("headers"),
                                  **body)
    except httpx.LocalProtocolError:  # a generated header value HTTP cannot carry (httpx refuses it)
        reject()
    finally:
        client.cookies.clear()
    response.request.read()  # validation reads the request's body
    return response, kw


def _items(files: Any) -> list[tuple[str, Any]]:
    return list(files.items()) if isinstance(files, dict) else list(files)


def test_no_server_error_and_every_answer_as_documented(api_schema: Any) -> None:
    from schemathesis.specs.openapi.checks import ignored_auth

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15  # every route of the document, not a few
    headers = {"Authorization": f"Bearer {TOKEN['access']}"}
    seen: dict[int, int] = {}
    with httpx.Client(timeout=30) as client:
        for operation, mode in itertools.product(operations, schemathesis.GenerationMode):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: Any) -> None:
                response, kw = send(client, case, headers)
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                # ignored_auth re-sends through requests itself; 401 without a token is tested elsewhere.
                case.validate_response(response, headers=headers, transport_kwargs=kw,
                                       excluded_checks=[ignored_auth])

            try:
                check()
            except Unsatisfiable:
                # No invalid input exists for an operation without parameters (GET /healthz).
                assert mode is schemathesis.GenerationMode.NEGATIVE and operation.path == "/healthz", \
                    operation.label
    assert sum(seen.values()) >= 400 and not [code for code in seen if code >= 500], seen
