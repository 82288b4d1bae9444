"""MQTT security from the registry: passwords plus the generated ACL, on a real Mosquitto."""

from __future__ import annotations

import queue
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from weijian.demo.local_services import start_mosquitto
from weijian.registry import load_registry, mosquitto_acl

ROOT = "weijian/v1"


def client(port: int, user: str, password: str) -> tuple[mqtt.Client, queue.Queue[mqtt.MQTTMessage]]:
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    connected: queue.Queue[object] = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-test")
    c.username_pw_set(user, password)
    c.on_message = lambda _c, _u, m: inbox.put(m)
    c.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc)
    c.connect("127.0.0.1", port)
    c.loop_start()
    rc = connected.get(timeout=5)
    assert not rc.is_failure, rc  # type: ignore[attr-defined]
    return c, inbox


def test_generated_acl_lets_a_gateway_write_only_its_own_devices(
    tmp_path: Path, example_registry: Path
) -> None:
    passwd = tmp_path / "passwd"
    for user in ("ingest", "gw-xinhe"):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if not passwd.exists() else []),
                        str(passwd), user, f"{user}-secret"], check=True)
    acl = tmp_path / "acl"
    acl.write_text(mosquitto_acl(load_registry(example_registry), ROOT))
    broker = start_mosquitto(
        tmp_path / "mq",
        extra_config=f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n",
    )
    try:
        ingest, inbox = client(broker.port, "ingest", "ingest-secret")
        subscribed: queue.Queue[int] = queue.Queue()
        ingest.on_subscribe = lambda _c, _u, mid, _rc, _p: subscribed.put(mid)
        ingest.subscribe(f"{ROOT}/+/+/reading", qos=1)
        subscribed.get(timeout=5)
        gateway, _ = client(broker.port, "gw-xinhe", "gw-xinhe-secret")
        gateway.publish(f"{ROOT}/xh-water-001/wq-01/reading", b"mine", qos=1).wait_for_publish(5)
        assert inbox.get(timeout=5).payload == b"mine"
        # Outside its ACL: Mosquitto does not deliver it (and may drop the connection).
        gateway.publish(f"{ROOT}/yc-water-001/wq-01/reading", b"not mine", qos=1)
        gateway.publish(f"{ROOT}/gateways/gw-dongjiao/status", b"not mine", qos=1)
        try:
            got = inbox.get(timeout=1.5)
        except queue.Empty:
            got = None
        assert got is None, got.topic

        refused: queue.Queue[object] = queue.Queue()
        stranger = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="stranger")
        stranger.username_pw_set("gw-xinhe", "wrong")
        stranger.on_connect = lambda _c, _u, _f, rc, _p: refused.put(rc)
        stranger.connect("127.0.0.1", broker.port)
        stranger.loop_start()
        assert refused.get(timeout=5).is_failure  # type: ignore[attr-defined]
        stranger.loop_stop()
        for c in (ingest, gateway):
            c.disconnect()
            c.loop_stop()
    finally:
        broker.stop()
