"""An in-process trygg (embedded runner + alert service + HTTP API) for alerting tests.

Real mosquitto, real PostgreSQL/TimescaleDB, real HTTP; the runner runs in
its own thread with a scripted rule engine, so each quality gate can be
driven by publishing one ordinary event:

=================  ===========================================================
event              signal
=================  ===========================================================
fall.detected      fire ``fall`` (red)
button.pressed     fire ``button`` (red)
water.detected     fire ``water`` (yellow)
door.opened        fire ``device-offline`` for that device (yellow, per device)
door.closed        clear ``device-offline`` for that device
motion.detected    fire ``inactivity`` (yellow)
=================  ===========================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import wait_until
from trygg.devenv import PrivateMosquitto, free_port
from trygg.model import Event, EventType, Severity, Signal, SignalAction
from trygg.registry import Registry, parse_registry
from trygg.runner.embedded import EmbeddedRunner
from trygg.settings import Settings
from trygg.store.registry import save_registry
from trygg.store.users import add_user

SITE = "oslo"

REGISTRY = {
    "residents": [
        {"id": "r-a1", "team": "team-a"},
        {"id": "r-a2", "team": "team-a"},
        {"id": "r-b1", "team": "team-b"},
    ],
    "devices": [
        {"id": "fall-a1", "resident": "r-a1", "kind": "fall", "room": "bathroom"},
        {"id": "button-a1", "resident": "r-a1", "kind": "button", "room": "livingroom"},
        {"id": "water-a1", "resident": "r-a1", "kind": "water", "room": "kitchen"},
        {"id": "motion-a1", "resident": "r-a1", "kind": "motion", "room": "livingroom"},
        {"id": "door-a1", "resident": "r-a1", "kind": "door", "room": "entrance"},
        {"id": "fall-a2", "resident": "r-a2", "kind": "fall", "room": "bathroom"},
        {"id": "button-a2", "resident": "r-a2", "kind": "button", "room": "livingroom"},
        {"id": "fall-b1", "resident": "r-b1", "kind": "fall", "room": "bathroom"},
        {"id": "bed-b1", "resident": "r-b1", "kind": "bed", "room": "bedroom"},
    ],
}

ROUTING = """
version: 1
recipients:
  phones: {contacts: [{channel: webhook, address: default}]}
  leader: {contacts: [{channel: webhook, address: leader}]}
teams:
  every-team:
    contacts:
      - {channel: mqtt, address: "{team}"}
      - {channel: console, address: "{team}"}
    on_duty: {day: [phones], evening: [phones], night: [phones]}
    leader: leader
default_team: every-team
policies:
  red: {steps: [{after: 0s, notify: [team_on_duty]}, {after: 600s, notify: [team_leader]}]}
  yellow: {steps: [{after: 0s, notify: [team_on_duty]}]}
  green: {steps: [{after: 0s, notify: [team_on_duty]}]}
gates:
  flapping: {max_fires: 3, window: 1h}
  inhibition: {red_hold_window: 15m}
"""


class ScriptedEngine:
    """A tiny rule engine whose signals the tests choose by event type."""

    version = "test-1"
    late_events = 0  # it takes no event as late
    _FIRE: ClassVar[dict[EventType, tuple[str, str, Severity, bool]]] = {
        EventType.FALL_DETECTED: ("fall", "4.1", Severity.RED, False),
        EventType.BUTTON_PRESSED: ("button", "4.13", Severity.RED, False),
        EventType.WATER_DETECTED: ("water", "4.17", Severity.YELLOW, False),
        EventType.DOOR_OPENED: ("device-offline", "T.1", Severity.YELLOW, True),
        EventType.MOTION_DETECTED: ("inactivity", "4.9", Severity.YELLOW, False),
    }

    def process(self, event: Event, received: datetime | None = None) -> list[Signal]:
        if event.type is EventType.DOOR_CLOSED:
            return [
                Signal(
                    SignalAction.CLEAR,
                    "device-offline",
                    event.resident,
                    event.time,
                    "T.1",
                    Severity.YELLOW,
                    self.version,
                    (event.id,),
                    device="motion-a1",
                )
            ]
        spec = self._FIRE.get(event.type)
        if spec is None:
            return []
        rule, code, sev, per_device = spec
        return [
            Signal(
                SignalAction.FIRE,
                rule,
                event.resident,
                event.time,
                code,
                sev,
                self.version,
                (event.id,),
                device="motion-a1" if per_device else None,
                title=rule,
            )
        ]

    def advance(self, now: datetime) -> list[Signal]:
        return []

    def next_deadline(self) -> datetime | None:
        return None

    def update_registry(self, registry: Registry) -> None:
        pass


@dataclass
class Stack:
    db: str
    broker: PrivateMosquitto
    port: int
    tokens: dict[str, str]
    runner: EmbeddedRunner
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count())
    _pub: mqtt.Client | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, user: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=10)

    def publish(self, device: str, typ: str, **extra: Any) -> str:
        """Publish one event at QoS 1 and wait for the broker's PUBACK; returns its id."""
        if self._pub is None:
            c = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=f"pub-{self.port}", protocol=mqtt.MQTTv5
            )
            c.connect("127.0.0.1", self.broker.port)
            c.loop_start()
            self._pub = c
        eid = f"t-{next(self._ids)}-{time.monotonic_ns()}"
        body = {"id": eid, "type": typ, "time": datetime.now(UTC).isoformat(), **extra}
        info = self._pub.publish(f"trygg/{SITE}/devices/{device}/events", json.dumps(body), qos=1)
        info.wait_for_publish(10)
        return eid

    def sql(self, q: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db) as c:
            return c.execute(q, args).fetchall()

    def wait_alert(self, user: str, **filters: Any) -> dict[str, Any]:
        """The newest alert matching the filters (waits for it)."""
        with self.client(user) as c:

            def found() -> dict[str, Any] | None:
                r = c.get("/api/alerts", params=filters)
                r.raise_for_status()
                items = r.json()["alerts"]
                return items[0] if items else None

            return wait_until(found, timeout=10)  # type: ignore[no-any-return]

    def wait_db_state(self, alert_id: str, state: str, timeout: float = 10) -> None:
        wait_until(
            lambda: self.sql("SELECT state FROM alerts WHERE id = %s", alert_id) == [(state,)],
            timeout=timeout,
        )

    def steps(self, alert_id: str) -> list[str]:
        return [
            r[0]
            for r in self.sql(
                "SELECT step FROM alert_records WHERE alert_id = %s ORDER BY seq", alert_id
            )
        ]

    @contextlib.contextmanager
    def drainer_paused(self) -> Iterator[None]:
        """Hold the drainer process (SIGSTOP): what is spooled meanwhile reaches the
        database only after the block, as it would behind a slow database."""
        drainer = self.runner._drainer
        assert drainer is not None and drainer._child.proc is not None
        pid = drainer._child.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
        if self._pub is not None:
            self._pub.loop_stop()
            self._pub.disconnect()


USERS = {
    "nurse-a": ("care_staff", ["team-a"]),
    "nurse-a2": ("care_staff", ["team-a"]),
    "nurse-b": ("care_staff", ["team-b"]),
    "specialist": ("specialist", []),
    "auditor": ("auditor", []),
    "admin": ("admin", []),
}


def start_stack(
    db: str,
    broker: PrivateMosquitto,
    tmp_path: Path,
    *,
    routing: str = ROUTING,
    registry: dict[str, Any] | None = None,
    real_rules: bool = False,
    **settings: Any,
) -> Stack:
    """``real_rules``: run the real rule engine on the catalogue versions (settings'
    ``rules_dir`` at first start) instead of the scripted one."""
    reg = parse_registry(registry or REGISTRY, "test")
    tokens: dict[str, str] = {}
    with psycopg.connect(db) as conn:
        save_registry(conn, reg)
        for name, (role, teams) in USERS.items():
            tokens[name] = add_user(conn, name, role, teams)
    rpath = tmp_path / "routing.yaml"
    rpath.write_text(routing)
    port = free_port()
    s = Settings(
        site=SITE,
        mqtt_url=broker.url,
        database_url=db,
        mqtt_client_id=f"trygg-test-{time.monotonic_ns()}",
        spool_dir=tmp_path / "spool",
        routing=rpath,
        http_port=port,
        batch_wait_ms=2,
        **settings,
    )
    runner = EmbeddedRunner(s, None if real_rules else ScriptedEngine())
    box: dict[str, Any] = {}
    started = threading.Event()

    def main() -> None:
        async def go() -> None:
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = asyncio.Event()
            started.set()
            await runner.run(box["stop"])

        asyncio.run(go())

    th = threading.Thread(target=main, daemon=True, name="trygg")
    th.start()
    started.wait(10)
    stack = Stack(db, broker, port, tokens, runner, box["loop"], box["stop"], th)

    def ready() -> bool:
        try:
            return httpx.get(f"{stack.base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=30)
    return stack
