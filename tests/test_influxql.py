"""weijian/influxql.py, the reader the task API's chart and the reports use: the 1.x API against
the real InfluxDB 1.6.7, and the 2.x compatibility API (which Debian's InfluxDB does not serve)
against a local HTTP server that checks what InfluxDB 2.x documents for ``/query``: a
``Token`` authorization, the bucket as ``db`` (through its DBRP mapping), ``q`` in the body."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from weijian.config import InfluxSettings
from weijian.errors import InfluxUnavailable
from weijian.influxql import query, query_many, quote_ident, quote_string


class _V2Query(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        params = parse_qs(urlparse(self.path).query)
        body = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.seen.append({"path": urlparse(self.path).path, "params": params, "body": body,
                          "auth": self.headers.get("Authorization")})
        if self.headers.get("Authorization") != "Token s3cret" or params.get("db") != ["weijian-bucket"]:
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"code":"unauthorized","message":"unauthorized access"}')
            return
        statements = body["q"][0].split(";")
        results = [{"statement_id": i,
                    "series": [{"name": "m", "columns": ["time", "n"], "values": [[0, i + 1]]}]}
                   for i in range(len(statements))]
        payload = json.dumps({"results": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def v2() -> Iterator[tuple[str, type[_V2Query]]]:
    handler = type("H", (_V2Query,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()


async def test_the_2x_compatibility_api_gets_a_token_the_bucket_and_q_in_the_body(v2) -> None:  # type: ignore[no-untyped-def]
    url, handler = v2
    settings = InfluxSettings(url=url, api="v2", org="institute", bucket="weijian-bucket", token="s3cret")
    results = await query_many(settings, ["SELECT count(a) FROM m", "SELECT count(b) FROM m"])
    assert [r[0]["values"][0][1] for r in results] == [1, 2]  # each statement's own series, in order
    (request,) = handler.seen
    assert request["path"] == "/query" and request["params"]["epoch"] == ["ms"]
    assert request["body"]["q"] == ["SELECT count(a) FROM m;SELECT count(b) FROM m"]
    wrong = InfluxSettings(url=url, api="v2", org="institute", bucket="weijian-bucket", token="nope")
    with pytest.raises(InfluxUnavailable, match="401"):
        await query(wrong, "SELECT 1")


async def test_the_1x_api_on_the_real_influxdb(influxd, influx_db) -> None:  # type: ignore[no-untyped-def]
    line = "drinking_water,site_id=a\\ b,district=x turbidity=0.5 1000000000"
    async with httpx.AsyncClient() as client:
        written = await client.post(f"{influxd.url}/write", params={"db": influx_db}, content=line)
    assert written.status_code == 204
    settings = InfluxSettings(url=influxd.url, database=influx_db)
    q = (f"SELECT count({quote_ident('turbidity')}) AS n FROM {quote_ident('drinking_water')} "
         f"WHERE site_id = {quote_string('a b')}")
    (series,) = await query(settings, q)
    assert series["values"][0][1] == 1
    with pytest.raises(InfluxUnavailable):  # an error in the statement is not an empty answer
        await query(settings, "SELECT FROM nothing")
    with pytest.raises(InfluxUnavailable):  # and nobody listening is not an empty answer either
        await query(InfluxSettings(url="http://127.0.0.1:9", database="x", timeout_s=2), "SELECT 1")
