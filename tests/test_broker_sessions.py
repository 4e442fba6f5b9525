"""No device can take trygg's MQTT session; retained device events are handled deliberately.

The broker is the production one: ingest/mosquitto.conf with the files
``trygg devices credentials`` writes (tests/broker.py). An MQTT session
belongs to a client id; a device that connects with trygg's client id would
be handed trygg's session and the alarms published meanwhile would never
reach trygg. On the device listener mosquitto replaces every client id with
the user name (``use_username_as_clientid``), and trygg's own clients use a
listener that accepts no device credential (docs/ingest.md, "Broker security").
"""

from __future__ import annotations

import csv
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.broker import ProductionMosquitto
from tests.conftest import trygg_cli
from tests.helpers import TryggProcess, WebhookReceiver, event_json, wait_until
from trygg.devenv import PrivateMosquitto
from trygg.ingest import credentials
from trygg.registry import parse_registry

SITE = "oslo"
FALLS = 8
REGISTRY = "\n".join(
    ["residents:"]
    + [f"  - {{id: r-{i}, team: stovner-nord}}" for i in range(FALLS)]
    + ["devices:"]
    + [f"  - {{id: fall-{i}, resident: r-{i}, kind: fall}}" for i in range(FALLS)]
    + ["  - {id: pendant-0, resident: r-0, kind: button}"]
)


def _topic(device: str, channel: str = "events") -> str:
    return f"trygg/{SITE}/devices/{device}/{channel}"


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The registry's broker files, written by the command an operator runs."""
    reg = tmp_path / "registry.yaml"
    reg.write_text(REGISTRY)
    out = tmp_path / "broker"
    trygg_cli("devices", "credentials", "--registry", str(reg), "--site", SITE, "--out", str(out))
    with (out / "credentials.csv").open() as f:
        return out, {row["user"]: row["password"] for row in csv.DictReader(f)}


@pytest.fixture
def broker(generated: tuple[Path, dict[str, str]]) -> Iterator[ProductionMosquitto]:
    with ProductionMosquitto(generated=generated[0]) as b:
        yield b


def _mosquitto_pub(port: int, user: str, password: str, client_id: str, *extra: str) -> int:
    """mosquitto_pub as a device would run it; its exit code (5: refused)."""
    return subprocess.run(
        [
            *("mosquitto_pub", "-p", str(port), "-u", user, "-P", password, "-i", client_id),
            *("-q", "1", "-t", _topic(user), *extra),
        ],
        capture_output=True,
        timeout=15,
    ).returncode


def _heartbeat() -> str:
    return event_json(
        f"hb-{time.monotonic_ns()}", "heartbeat", datetime.now(UTC).isoformat()
    ).decode()


class Session:
    """A paho client holding a persistent session, as trygg's ingest does."""

    def __init__(self, port: int, user: str, password: str, client_id: str) -> None:
        self.connects = 0
        self.disconnects: list[str] = []
        self.messages: list[str] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(user, password)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda cl, u, f, rc, p: self.disconnects.append(str(rc))
        c.on_message = lambda cl, u, m: self.messages.append(m.topic)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        c.connect("127.0.0.1", port, clean_start=False, properties=props)
        c.loop_start()
        self.c = c
        wait_until(lambda: self.connects, 10)

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        assert not rc.is_failure, rc
        self.connects += 1
        c.subscribe(f"trygg/{SITE}/devices/+/events", qos=1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


# --- the generated files ------------------------------------------------------------


def test_the_service_user_has_a_password_file_of_its_own(tmp_path: Path) -> None:
    reg = parse_registry(
        {
            "residents": [{"id": "r-1", "team": "a"}],
            "devices": [{"id": "bed-1", "resident": "r-1", "kind": "bed"}],
        }
    )
    out = tmp_path / "gen"
    # A directory from before the split: every user in one passwd file.
    first = credentials.generate(reg, SITE, out)
    hashes = {}
    for name in ("passwd", "passwd-service"):
        hashes.update(dict(ln.split(":", 1) for ln in (out / name).read_text().splitlines()))
    (out / "passwd").write_text("".join(f"{u}:{h}\n" for u, h in hashes.items()))
    (out / "passwd-service").unlink()
    again = credentials.generate(reg, SITE, out)
    assert again.kept == [c.user for c in first.credentials]
    device_users = [ln.split(":")[0] for ln in (out / "passwd").read_text().splitlines()]
    assert device_users == ["staff-a", "bed-1"]
    [service] = (out / "passwd-service").read_text().splitlines()
    assert service == f"trygg:{hashes['trygg']}"  # the hash kept, moved


def test_no_device_may_be_named_like_a_trygg_client_id(tmp_path: Path) -> None:
    for device in ("trygg-ingest", "trygg-ingest-notify", "trygg-bridge-1"):
        reg = parse_registry(
            {
                "residents": [{"id": "r-1", "team": "a"}],
                "devices": [{"id": device, "resident": "r-1", "kind": "button"}],
            }
        )
        with pytest.raises(credentials.CredentialsError, match="reserved for trygg's own"):
            credentials.generate(reg, SITE, tmp_path)


# --- the broker ---------------------------------------------------------------------


def test_a_device_cannot_take_a_trygg_session(broker, generated) -> None:  # type: ignore[no-untyped-def]
    _, creds = generated
    ingest = Session(broker.service_port, "trygg", creds["trygg"], "trygg-ingest")
    notify = Session(broker.service_port, "trygg", creds["trygg"], "trygg-ingest-notify")
    try:
        for client_id in ("trygg-ingest", "trygg-ingest-notify", "trygg-bridge-1"):
            for extra in ([], ["-c"], ["-V", "mqttv5", "-c", "-x", "600"]):
                args = ["-m", _heartbeat(), *extra]
                assert _mosquitto_pub(broker.port, "fall-1", creds["fall-1"], client_id, *args) == 0
        # The service listener takes no device credential; the device listener no trygg.
        hb = ("-m", _heartbeat())
        assert _mosquitto_pub(broker.service_port, "fall-1", creds["fall-1"], "x", *hb) == 5
        assert _mosquitto_pub(broker.port, "trygg", creds["trygg"], "trygg-ingest", *hb) == 5
        wait_until(lambda: len(ingest.messages) == 9, 10)
        time.sleep(0.5)
        assert ingest.connects == notify.connects == 1
        assert ingest.disconnects == notify.disconnects == []
    finally:
        ingest.close()
        notify.close()
    log = (broker.data_dir / "mosquitto.log").read_text()
    assert "as fall-1 (" in log and "already connected" not in log


def test_without_the_protection_a_device_does_take_the_session(generated) -> None:  # type: ignore[no-untyped-def]
    """The control: one listener with the same users and no client-id rule, as before."""
    out, creds = generated
    both = out / "passwd-both"
    both.write_text((out / "passwd").read_text() + (out / "passwd-service").read_text())
    config = f"allow_anonymous false\npassword_file {both}\nacl_file {out / 'acl'}"
    with PrivateMosquitto(config=config) as plain:
        ingest = Session(plain.port, "trygg", creds["trygg"], "trygg-ingest")
        try:
            hb = ("-m", _heartbeat())
            assert _mosquitto_pub(plain.port, "fall-1", creds["fall-1"], "trygg-ingest", *hb) == 0
            wait_until(lambda: ingest.disconnects, 10)
        finally:
            ingest.close()


def _api(trygg: TryggProcess, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{trygg.env['TRYGG_HTTP_PORT']}{path}", timeout=5)


def _metric(trygg: TryggProcess, line_start: str) -> float:
    for line in _api(trygg, "/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {line_start}")


def _trygg_env(
    broker: ProductionMosquitto, creds: dict[str, str], db: str, **extra: str
) -> dict[str, str]:
    return {
        "TRYGG_MQTT_URL": broker.service_url("trygg", creds["trygg"]),
        "TRYGG_DATABASE_URL": db,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": "trygg-ingest",
        **extra,
    }


def _load_registry(tmp_path: Path, db: str) -> None:
    reg = tmp_path / "registry.yaml"
    reg.write_text(REGISTRY)
    trygg_cli("registry", "load", str(reg), "--database-url", db)


def _events(db: str) -> set[str]:
    with psycopg.connect(db) as c:
        return {r[0] for r in c.execute("SELECT event_id FROM events").fetchall()}


def test_every_fall_is_alerted_while_a_device_keeps_connecting_as_trygg(  # type: ignore[no-untyped-def]
    tmp_path, broker, generated, db
) -> None:
    _, creds = generated
    _load_registry(tmp_path, db)
    intruder, stop = "pendant-0", threading.Event()
    attempts: list[int] = []

    def intrude() -> None:
        """The device's credential, trygg's client ids, every way mosquitto_pub connects;
        and mosquitto_sub holding "the session" for a second at a time."""
        variants: list[list[str]] = [[], ["-c"], ["-V", "mqttv5", "-c", "-x", "3600"]]
        while not stop.is_set():
            for client_id in ("trygg-ingest", "trygg-ingest-notify"):
                for extra in variants:
                    attempts.append(
                        _mosquitto_pub(
                            broker.port,
                            intruder,
                            creds[intruder],
                            client_id,
                            "-m",
                            _heartbeat(),
                            *extra,
                        )
                    )
            subprocess.run(
                [
                    *("mosquitto_sub", "-p", str(broker.port), "-u", intruder),
                    *("-P", creds[intruder], "-i", "trygg-ingest", "-c"),
                    *("-t", f"trygg/{SITE}/#", "-W", "1"),
                ],
                capture_output=True,
                timeout=15,
            )

    with (
        WebhookReceiver() as hook,
        TryggProcess(_trygg_env(broker, creds, db, TRYGG_WEBHOOK_URL=hook.url)) as trygg,
    ):
        trygg.wait_connected()
        thread = threading.Thread(target=intrude, daemon=True)
        thread.start()
        try:
            wait_until(lambda: len(attempts) >= 6, 30)
            for i in range(FALLS):
                now = datetime.now(UTC).isoformat()
                assert (
                    _mosquitto_pub(
                        broker.port,
                        f"fall-{i}",
                        creds[f"fall-{i}"],
                        f"fall-{i}",
                        "-m",
                        event_json(f"fall-{i}", "fall.detected", now).decode(),
                    )
                    == 0
                )
                if i == 1:
                    reset = event_json("reset-1", "alarm.reset", now).decode()
                    assert (
                        _mosquitto_pub(broker.port, "fall-1", creds["fall-1"], "x", "-m", reset)
                        == 0
                    )
                time.sleep(0.4)
        finally:
            stop.set()
            thread.join(30)
        falls = lambda: {b["resident"] for _, _, b in hook.received if b["rule"] == "fall"}  # noqa: E731
        wait_until(lambda: len(falls()) == FALLS, 20)
        assert falls() == {f"r-{i}" for i in range(FALLS)}
        wanted = {f"fall-{i}" for i in range(FALLS)} | {"reset-1"}
        wait_until(lambda: wanted <= _events(db), 20)
        assert attempts and set(attempts) == {0}  # the intruder's every connection was accepted
        out = trygg.output()
        assert out.count('"mqtt connected"') == 1
        for trouble in ("mqtt disconnected", "session taken over", "session lost"):
            assert trouble not in out
        ready = _api(trygg, "/readyz")
        assert ready.status_code == 200 and ready.json()["mqtt"] is True
        assert _metric(trygg, 'trygg_mqtt_session_takeovers_total{client="ingest"}') == 0
        assert _metric(trygg, "trygg_mqtt_sessions_lost_total") == 0
    log = (broker.data_dir / "mosquitto.log").read_text()
    assert f"as {intruder} (" in log and "already connected" not in log


# --- retained messages on device topics ---------------------------------------------


def test_retained_events_reach_trygg_only_on_a_new_subscription(  # type: ignore[no-untyped-def]
    tmp_path, broker, generated, db
) -> None:
    """A retained event is delivered when trygg subscribes anew (it may be the only
    copy), counted and warned about once per device; at a restart with the session
    kept it is not sent again. A device's retained status comes at every start."""
    _, creds = generated
    _load_registry(tmp_path, db)
    now = datetime.now(UTC).isoformat()
    fall = event_json("retained-fall", "fall.detected", now).decode()
    assert _mosquitto_pub(broker.port, "fall-2", creds["fall-2"], "fall-2", "-r", "-m", fall) == 0
    status = ["-t", _topic("fall-3", "status"), "-r", "-m", "offline"]
    assert _mosquitto_pub(broker.port, "fall-3", creds["fall-3"], "fall-3", *status) == 0
    env = _trygg_env(broker, creds, db, TRYGG_SPOOL_DIR=str(tmp_path / "spool"))
    with WebhookReceiver() as hook:
        with TryggProcess({**env, "TRYGG_WEBHOOK_URL": hook.url}) as first:
            first.wait_connected()
            wait_until(lambda: [b for _, _, b in hook.received if b["rule"] == "fall"], 20)
            # The same device, misconfigured, goes on publishing retained events.
            for n in range(2):
                hb = event_json(f"retained-hb-{n}", "heartbeat", now).decode()
                assert (
                    _mosquitto_pub(broker.port, "fall-2", creds["fall-2"], "x", "-r", "-m", hb) == 0
                )
            wait_until(lambda: _metric(first, "trygg_retained_events_total") == 3, 20)
            assert _metric(first, "trygg_messages_received_total") == 4  # and the status
            warnings = [
                json.loads(ln)
                for ln in first.output().splitlines()
                if '"retained event from device"' in ln
            ]
            assert [(w["device"], w["level"]) for w in warnings] == [("fall-2", "warning")]
        with TryggProcess({**env, "TRYGG_WEBHOOK_URL": hook.url}) as second:
            second.wait_connected()
            # The status again (retain handling 0), no retained event (retain handling 1).
            wait_until(lambda: _metric(second, "trygg_messages_received_total") >= 1, 20)
            time.sleep(1.0)
            assert _metric(second, "trygg_messages_received_total") == 1
            assert _metric(second, "trygg_retained_events_total") == 0
            assert '"session_present": true' in second.output()
        assert len([b for _, _, b in hook.received if b["rule"] == "fall"]) == 1
