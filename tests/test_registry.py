"""The device registry file and its storage."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from tests.conftest import trygg_cli
from trygg.registry import RegistryError, load_registry
from trygg.store.registry import load_registry as load_from_db

GOOD = """
residents:
  - id: r-0001
    team: stovner-nord
    overrides:
      bed-exit-no-return: {wait: 30m}
  - id: r-0002
    team: grorud-sor
    timezone: Europe/Stockholm
devices:
  - {id: bed-0001, resident: r-0001, kind: bed, room: bedroom}
  - {id: door-0001, resident: r-0001, kind: door, room: entrance, heartbeat: 15m}
  - {id: button-0002, resident: r-0002, kind: button}
"""


def test_file_loads_with_defaults(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "reg.yaml"
    p.write_text(GOOD)
    reg = load_registry(p)
    r1, r2 = reg.residents
    assert r1.timezone == "Europe/Oslo" and r2.timezone == "Europe/Stockholm"
    assert r1.overrides == {"bed-exit-no-return": {"wait": "30m"}}
    devs = reg.device_by_id()
    assert devs["bed-0001"].heartbeat == timedelta(minutes=5)
    assert devs["door-0001"].heartbeat == timedelta(minutes=15)


@pytest.mark.parametrize(
    "bad, message",
    [
        (GOOD.replace("resident: r-0002", "resident: r-0009"), "unknown resident 'r-0009'"),
        (GOOD.replace("Europe/Stockholm", "Mars/Olympus"), "unknown timezone 'Mars/Olympus'"),
        (GOOD.replace("kind: bed", "kind: toaster"), "reg.yaml:11: device 'bed-0001': kind: must"),
        (GOOD.replace("heartbeat: 15m", "heartbeat: often"), "not a duration: 'often'"),
        (GOOD.replace("id: door-0001", "id: bed-0001"), "device 'bed-0001' is listed twice"),
        ("residents: [", "not valid YAML"),
        (GOOD.replace("team: grorud-sor", "team: grorud-sor\n    name: Kari Nordmann"), "name"),
    ],
)
def test_bad_files_are_refused_with_a_reason(tmp_path, bad: str, message: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "reg.yaml"
    p.write_text(bad)
    with pytest.raises(RegistryError, match=r"reg\.yaml") as err:
        load_registry(p)
    assert message in str(err.value)


def test_cli_stores_the_registry_and_reads_it_back(tmp_path, db: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "reg.yaml"
    p.write_text(GOOD)
    out = trygg_cli("registry", "load", str(p), "--database-url", db)
    assert "loaded 2 residents and 3 devices" in out.stdout
    trygg_cli("registry", "load", str(p), "--database-url", db)  # idempotent
    with psycopg.connect(db) as conn:
        stored = load_from_db(conn)
    assert stored.device_by_id() == load_registry(p).device_by_id()
    assert stored.resident_by_id() == load_registry(p).resident_by_id()
    p.write_text(GOOD.replace("resident: r-0002", "resident: r-7"))
    bad = trygg_cli("registry", "load", str(p), "--database-url", db, check=False)
    assert bad.returncode == 1 and "unknown resident 'r-7'" in bad.stderr


def test_a_reload_parses_the_stored_registry_again_only_when_it_changed(tmp_path, db: str) -> None:  # type: ignore[no-untyped-def]
    """The runners reload the registry every few seconds; parsing it holds the GIL, so
    the reader hands back the registry it has while the database's digest of it is the
    same. The devices' health columns change all the time and are no part of it; any
    change to what the registry says is."""
    from trygg.store.registry import RegistryReader, save_registry

    p = tmp_path / "reg.yaml"
    p.write_text(GOOD)
    with psycopg.connect(db, autocommit=True) as conn:
        save_registry(conn, load_registry(p))
        reader = RegistryReader()
        first = reader.read(conn)
        assert first.resident_by_id()["r-0001"].team == "stovner-nord"
        assert reader.read(conn) is first  # unchanged: not parsed again

        conn.execute("UPDATE devices SET last_seen = now(), battery = 41, online = true")
        assert reader.read(conn) is first  # health is not the registry

        p.write_text(GOOD.replace("team: grorud-sor", "team: stovner-nord"))
        save_registry(conn, load_registry(p))
        moved = reader.read(conn)
        assert moved is not first
        assert moved.resident_by_id()["r-0002"].team == "stovner-nord"
        assert reader.read(conn) is moved

        conn.execute("UPDATE devices SET room = 'livingroom' WHERE id = 'bed-0001'")
        second = reader.read(conn)
        assert second is not moved and second.device_by_id()["bed-0001"].room == "livingroom"

        conn.execute("UPDATE devices SET heartbeat = heartbeat * 2 WHERE id = 'door-0001'")
        third = reader.read(conn)
        assert third is not second
        hb = third.device_by_id()["door-0001"].heartbeat
        assert hb == 2 * second.device_by_id()["door-0001"].heartbeat
