"""District overlays in the live runner and the distributed worker (issue 19): the
same events through ``trygg rules replay --districts``, through ``trygg run`` (MQTT
in via mosquitto, webhook out) and through the worker's rules agent give the same
alerts: the district's value for its residents, the standard's for the others,
and a care plan on top of both (docs/rules.md, "Districts").

The catalogue is the city standard with the bed-exit wait in seconds (2 s,
adjustable 1-30 s, all day) so that the live run needs no hour of the night and
no twenty minutes; everything else is the repository's standard.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO, trygg_cli
from tests.helpers import TryggProcess, WebhookReceiver, event_json, publish, wait_until

SITE = "oslo"

REGISTRY = """
districts:
  - {id: stovner, name: Bydel Stovner}
  - {id: grorud, name: Bydel Grorud}
teams:
  - {id: stovner-nord, district: stovner}
  - {id: stovner-sor, district: stovner}
  - {id: grorud-sentrum, district: grorud}
  - {id: grorud-ost, district: grorud}
residents:
  - {id: r-1, team: stovner-nord}
  - {id: r-2, team: stovner-sor}
  - {id: r-3, team: grorud-sentrum}
  - id: r-4
    team: grorud-ost
    overrides:
      bed-exit-no-return: {wait: 4s}
devices:
  - {id: bed-1, resident: r-1, kind: bed, room: bedroom, heartbeat: 1h}
  - {id: bed-2, resident: r-2, kind: bed, room: bedroom, heartbeat: 1h}
  - {id: bed-3, resident: r-3, kind: bed, room: bedroom, heartbeat: 1h}
  - {id: bed-4, resident: r-4, kind: bed, room: bedroom, heartbeat: 1h}
"""

STOVNER = """\
- rule: bed-exit-no-return
  wait: 8s
  reason: Night visits to the toilet take longer in Stovner's homes.
"""

# Everyone out of bed at 0 s; r-2 and r-4 back at 5 s.
SCRIPT = [("bed-1", "bed.vacant", 0), ("bed-2", "bed.vacant", 0), ("bed-3", "bed.vacant", 0),
          ("bed-4", "bed.vacant", 0), ("bed-2", "bed.occupied", 5),
          ("bed-4", "bed.occupied", 5)]  # fmt: skip

# Stovner's 8 s for r-1 (r-2 was back at 5 s, which the standard's 2 s would have
# paged), the standard's 2 s for r-3, r-4's care plan of 4 s.
EXPECTED = {("r-1", 8.0), ("r-3", 2.0), ("r-4", 4.0)}

T0 = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)


def rules_dir(tmp: Path, overlay: str | None = STOVNER) -> Path:
    """The standard with the bed-exit rule in seconds, and districts/ beside it."""
    text = (REPO / "rules" / "standard.yaml").read_text()
    start = text.index("- rule: bed-exit-no-return")
    end = text.index("\n- rule:", start)
    block = (
        text[start:end]
        .replace("window: night", "window: 00:00-24:00")
        .replace("wait: 20m", "wait: 2s")
        .replace("wait: {min: 15m, max: 45m}", "wait: {min: 1s, max: 30s}")
    )
    assert block != text[start:end]
    d = tmp / "rules"
    (d / "districts").mkdir(parents=True, exist_ok=True)
    (d / "standard.yaml").write_text(text[:start] + block + text[end:])
    if overlay is not None:
        (d / "districts" / "stovner.yaml").write_text(overlay)
    return d


def bed_exits(pairs: Any) -> set[tuple[str, float]]:
    return {(r, round(s, 3)) for r, s in pairs}


# ------------------------------------------------------------------ replay --


def replay_alerts(tmp: Path, rules: Path) -> set[tuple[str, float]]:
    from trygg.tuning.cli import app

    lines = [
        {"device": d, "id": f"{d}-{t}", "type": typ,
         "time": (T0 + timedelta(seconds=t)).isoformat()}
        for d, typ, t in SCRIPT
    ]  # fmt: skip
    events = tmp / "events.jsonl"
    events.write_text("".join(json.dumps(x) + "\n" for x in lines))
    reg = tmp / "reg.yaml"
    reg.write_text(REGISTRY)
    until = (T0 + timedelta(minutes=1)).isoformat()
    args = ["replay", "--events", str(events), "--registry", str(reg), "--rules", str(rules)]
    args += ["--districts", str(rules / "districts"), "--until", until]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    alerts = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    return bed_exits(
        (a["resident"], (datetime.fromisoformat(a["at"]) - T0).total_seconds())
        for a in alerts
        if a["rule"] == "bed-exit-no-return"
    )


def test_replay_pages_by_each_districts_value(tmp_path: Path) -> None:
    assert replay_alerts(tmp_path, rules_dir(tmp_path)) == EXPECTED
    # without the overlay r-1 is paged at the standard's 2 s, and r-2 too
    plain = replay_alerts(tmp_path, rules_dir(tmp_path / "plain", overlay=None))
    assert plain == {("r-1", 2.0), ("r-2", 2.0), ("r-3", 2.0), ("r-4", 4.0)}


# ------------------------------------------------------------------ worker --


def worker_alerts(core: Any, registry: Any, t0: datetime = T0) -> set[tuple[str, float]]:
    """The bed exits the worker's rules agent (Faust test context, as
    tests/test_distributed_agents.py) fires for SCRIPT from ``t0``."""
    from tests.test_distributed_agents import Recorder
    from trygg.distributed import codecs
    from trygg.distributed.worker.alerts_core import AlertsCore
    from trygg.distributed.worker.app import Worker
    from trygg.model import DeviceKind, Event, EventType
    from trygg.runner.routing import default_routing
    from trygg.settings import Settings

    rec = Recorder()
    alerts = AlertsCore(default_routing())
    alerts.update_registry(registry)
    w = Worker(
        Settings(kafka_partitions=4), rules=core, alerts=alerts, sender=rec, clock=lambda: t0
    )
    w.app.finalize()
    w.app.conf.store = "memory://"
    w.app.flow_control.resume()

    def record(device: str, typ: str, t: float) -> bytes:
        at = t0 + timedelta(seconds=t)
        e = Event(device, f"{device}-{at}", EventType(typ), at, "r-" + device[-1], DeviceKind.BED)
        return codecs.dumps(codecs.event_record(e, at))

    async def go() -> None:
        async with w.rules_agent.test_context() as agent:
            for device, typ, t in SCRIPT:
                await agent.put(key="r-" + device[-1], value=record(device, typ, t))
            for n in range(1, 5):
                tick = codecs.tick_record(f"r-{n}", t0 + timedelta(minutes=1))
                await agent.put(key=f"r-{n}", value=codecs.dumps(tick))

    asyncio.run(go())
    return bed_exits(
        (r["r"], (datetime.fromisoformat(r["at"]) - t0).total_seconds())
        for _, _, r, _ in rec.sent
        if r["op"] == "sig" and r["a"] == "fire" and r["rule"] == "bed-exit-no-return"
    )


def test_worker_rules_agent_pages_by_each_districts_value(tmp_path: Path) -> None:
    """Built as ``build_worker`` builds it: RulesCore.layered over the overlays."""
    pytest.importorskip("faust")
    from trygg.distributed.worker.rules_core import RulesCore
    from trygg.registry import read_registry_text
    from trygg.rules import load_catalogue
    from trygg.rules.overlays import district_overlay_texts

    rules = rules_dir(tmp_path)
    registry = read_registry_text(REGISTRY)
    core = RulesCore.layered(load_catalogue([rules]), registry, district_overlay_texts([rules]))
    assert worker_alerts(core, registry) == EXPECTED == replay_alerts(tmp_path, rules)


def test_worker_takes_a_changed_overlay_and_keeps_the_old_one_when_refused(
    tmp_path: Path,
) -> None:
    pytest.importorskip("faust")
    from trygg.distributed.worker.rules_core import RulesCore
    from trygg.registry import read_registry_text
    from trygg.rules import load_catalogue
    from trygg.rules.overlays import OverlayError, district_overlay_texts

    rules = rules_dir(tmp_path)
    registry = read_registry_text(REGISTRY)
    core = RulesCore.layered(load_catalogue([rules]), registry, district_overlay_texts([rules]))
    overlay = rules / "districts" / "stovner.yaml"
    overlay.write_text(STOVNER.replace("8s", "60s"))
    with pytest.raises(OverlayError) as err:
        core.update_overlays(district_overlay_texts([rules]))
    assert f"{overlay}:2:" in str(err.value) and "30s" in str(err.value)
    # refused: the 8 s overlay is kept (and the same refused text is not read again)
    assert core.update_overlays(district_overlay_texts([rules])) is False
    assert worker_alerts(core, registry) == EXPECTED
    overlay.write_text(STOVNER.replace("8s", "3s"))
    assert core.update_overlays(district_overlay_texts([rules])) is True
    later = T0 + timedelta(hours=1)
    # Stovner waits 3 s now: r-2, back at 5 s, is paged too
    assert worker_alerts(core, registry, later) == {
        ("r-1", 3.0),
        ("r-2", 3.0),
        ("r-3", 2.0),
        ("r-4", 4.0),
    }


# ------------------------------------------------------------------ live --


def test_live_runner_pages_by_each_districts_value_and_reloads_overlays(
    tmp_path: Path, broker: Any, db: str
) -> None:
    rules = rules_dir(tmp_path)
    reg = tmp_path / "registry.yaml"
    reg.write_text(REGISTRY)
    trygg_cli("registry", "load", str(reg), "--database-url", db)
    env = {
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": db,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": "trygg-districts",
        "TRYGG_RULES_DIR": str(rules),
        "TRYGG_REGISTRY_RELOAD_SECONDS": "0.5",
    }
    with WebhookReceiver() as hook, TryggProcess({**env, "TRYGG_WEBHOOK_URL": hook.url}) as t:
        t.wait_connected()
        assert "district overlays in force" in t.output()
        assert "applied by trygg rules replay" not in t.output()
        t0 = datetime.now(UTC).replace(microsecond=0)

        def send(script: list[tuple[str, str, float]], tag: str) -> None:
            publish(
                broker.port,
                [
                    (
                        f"trygg/{SITE}/devices/{d}/events",
                        event_json(f"{tag}{d}{s}", typ, (t0 + timedelta(seconds=s)).isoformat()),
                    )
                    for d, typ, s in script
                ],
            )

        def paged(rule: str = "bed-exit-no-return") -> set[tuple[str, float]]:
            return bed_exits(
                (a["resident"], (datetime.fromisoformat(a["signal_at"]) - t0).total_seconds())
                for _, _, a in hook.received
                if a["rule"] == rule
            )

        # each event sent when it happens (the return to bed 5 s later)
        send([x for x in SCRIPT if x[2] == 0], "a")
        wait_until(lambda: datetime.now(UTC) >= t0 + timedelta(seconds=5), timeout=10)
        send([x for x in SCRIPT if x[2] == 5], "a")
        wait_until(lambda: len(paged()) >= 3, timeout=30)
        assert paged() == EXPECTED == replay_alerts(tmp_path, rules)

        # An overlay outside the bounds is refused while running: the old one stays.
        overlay = rules / "districts" / "stovner.yaml"
        overlay.write_text(STOVNER.replace("8s", "60s"))
        wait_until(lambda: "district overlays refused" in t.output(), timeout=15)
        assert f"{overlay}:2:" in t.output()
        # A good one is taken into use without a restart: Stovner waits 3 s now.
        overlay.write_text(STOVNER.replace("8s", "3s"))
        wait_until(lambda: t.output().count("district overlays in force") >= 2, timeout=15)
        # r-1 and r-3 back in bed (their alerts clear), then r-2 and r-3 up again
        t0 = datetime.now(UTC).replace(microsecond=0)
        send([("bed-1", "bed.occupied", 0), ("bed-3", "bed.occupied", 0)], "b")
        wait_until(lambda: datetime.now(UTC) >= t0 + timedelta(seconds=1), timeout=10)
        hook.received.clear()
        send([("bed-2", "bed.vacant", 1), ("bed-3", "bed.vacant", 1)], "b")
        wait_until(lambda: len(paged()) >= 2, timeout=30)
        assert paged() == {("r-2", 4.0), ("r-3", 3.0)}


def test_a_bad_overlay_stops_trygg_run_at_start_with_file_and_line(
    tmp_path: Path, broker: Any, db: str
) -> None:
    rules = rules_dir(tmp_path, overlay=STOVNER.replace("8s", "60s"))
    env = {
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": db,
        "TRYGG_SITE": SITE,
        "TRYGG_RULES_DIR": str(rules),
        "TRYGG_LOG_FORMAT": "text",
    }
    import os

    exe = Path(sys.executable).parent / "trygg"
    r = subprocess.run(
        [str(exe), "run"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stderr
    assert f"{rules / 'districts' / 'stovner.yaml'}:2:" in r.stderr
    assert "30s" in r.stderr
