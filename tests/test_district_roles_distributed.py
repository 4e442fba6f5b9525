"""District-scoped roles in the distributed stack's ``trygg api`` (issue 19, item
4): the same ``create_app`` as the embedded runner, with the registry it loads
from the database. Real TimescaleDB and tansu (the API's Kafka link); no
bridge or worker: the alerts are stored directly, as a worker stores them, and
the API reads them from the database (an alert's detail is rebuilt from a
worker's records, which this test does not write: tests/test_district_roles.py
reads details through the embedded API)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

pytest.importorskip("faust")

from tests.conftest import new_database
from tests.distributed_stack import Stack
from tests.helpers import wait_until
from tests.test_district_roles import TWO_DISTRICTS
from trygg.devenv import PrivatePostgres, free_port
from trygg.distributed.tansu import PrivateTansu
from trygg.registry import parse_registry
from trygg.store.alert_writes import append_record, insert_alert
from trygg.store.migrate import migrate
from trygg.store.registry import save_registry
from trygg.store.users import add_user


@pytest.fixture
def api(pg_server: PrivatePostgres) -> Iterator[tuple[str, int, dict[str, str], dict[str, str]]]:
    db = new_database(pg_server)
    migrate(db)
    at = datetime.now(UTC) - timedelta(minutes=5)
    alerts = {"east": str(uuid.uuid4()), "west": str(uuid.uuid4())}
    with psycopg.connect(db) as conn:
        save_registry(conn, parse_registry(TWO_DISTRICTS, "test"))
        tokens = {
            "aud-east": add_user(conn, "aud-east", "auditor", districts=["east"]),
            "admin": add_user(conn, "admin", "admin"),
        }
        for district, resident, team in (("east", "r-a1", "team-a"), ("west", "r-b1", "team-b")):
            insert_alert(
                conn, id=alerts[district], resident=resident, team=team, rule="fall",
                catalogue_version="v1", code="4.1", severity="red", events=["e-1"],
                raised_at=at, state="resolved",
            )  # fmt: skip
            append_record(conn, alerts[district], "raised", at, "system")
            append_record(conn, alerts[district], "resolved", at + timedelta(minutes=1), "n")
    with PrivateTansu() as tansu:
        stack = Stack(bootstrap=tansu.bootstrap, mqtt_url="mqtt://127.0.0.1:1", database_url=db)
        try:
            stack.cli("kafka", "topics")
            port = free_port()
            stack.api("api", port)

            def up() -> bool:
                try:
                    h = {"Authorization": f"Bearer {tokens['admin']}"}
                    r = httpx.get(f"http://127.0.0.1:{port}/api/alerts", headers=h, timeout=2)
                    return r.is_success and r.json()["count"] == 2
                except httpx.HTTPError:
                    return False

            wait_until(up, timeout=60, interval=0.2)
            yield db, port, tokens, alerts
        finally:
            stack.stop()
            stack.remove()


def test_the_distributed_api_scopes_a_district_auditor(api: Any) -> None:
    db, port, tokens, alerts = api
    h = {"Authorization": f"Bearer {tokens['aud-east']}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=h, timeout=10) as c:
        listed = c.get("/api/alerts").json()["alerts"]
        assert [(a["id"], a["district"]) for a in listed] == [(alerts["east"], "east")]
        r = c.get(f"/api/alerts/{alerts['west']}")
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
        assert "in district west; you are scoped to district east" in r.json()["detail"]
        assert c.get("/api/me").json()["district_names"] == {"east": "Østensjø"}

    def reads() -> list[tuple[Any, ...]]:
        with psycopg.connect(db) as conn:
            return conn.execute(
                "SELECT action, detail -> 'residents' FROM access_log WHERE actor = 'aud-east'"
                " ORDER BY id"
            ).fetchall()

    # the list read is logged with the residents it showed (the refused read shows none)
    wait_until(lambda: ("alerts.list", ["r-a1"]) in reads())
    assert "r-b1" not in str(reads())
