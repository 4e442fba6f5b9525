"""District-scoped roles (issue 19, item 4): an auditor, specialist or team
leader scoped to a district sees that district's teams only; a read of another
district's alert is refused (403, a problem naming the district) and every
read is in the access log. Real mosquitto, PostgreSQL/TimescaleDB and trygg
(the embedded runner with its API), as tests/test_api.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.alerting_stack import REGISTRY, Stack, start_stack
from tests.conftest import trygg_cli
from tests.helpers import wait_until
from tests.test_console import CHROMIUM, console_page
from tests.test_console import browser as browser  # a fixture
from trygg.store.users import add_user

TWO_DISTRICTS: dict[str, Any] = {
    **REGISTRY,
    "districts": [{"id": "east", "name": "Østensjø"}, {"id": "west", "name": "Frogner"}],
    "teams": [{"id": "team-a", "district": "east"}, {"id": "team-b", "district": "west"}],
}


@pytest.fixture
def stack(db, broker, tmp_path) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    s = start_stack(db, broker, tmp_path, registry=TWO_DISTRICTS)
    with psycopg.connect(db) as conn:
        s.tokens["aud-east"] = add_user(conn, "aud-east", "auditor", districts=["east"])
        s.tokens["spec-west"] = add_user(conn, "spec-west", "specialist", districts=["west"])
        s.tokens["lead-west"] = add_user(conn, "lead-west", "team_leader", districts=["west"])
    try:
        yield s
    finally:
        s.close()


def test_a_district_auditor_reads_its_district_only_and_every_read_is_logged(
    stack: Stack,
) -> None:
    stack.publish("fall-a1", "fall.detected")
    stack.publish("fall-b1", "fall.detected")
    a = stack.wait_alert("admin", state="open", team="team-a")
    b = stack.wait_alert("admin", state="open", team="team-b")
    assert (a["district"], b["district"]) == ("east", "west")  # the district in the API

    with stack.client("aud-east") as aud:
        me = aud.get("/api/me").json()
        assert me["districts"] == ["east"] and me["teams"] == ["team-a"]
        assert me["district_names"] == {"east": "Østensjø"}
        listed = aud.get("/api/alerts").json()["alerts"]
        assert [(x["id"], x["district"]) for x in listed] == [(a["id"], "east")]
        got = aud.get(f"/api/alerts/{a['id']}")
        assert got.status_code == 200 and got.json()["alert"]["district"] == "east"
        # the other district: refused, with the reason
        r = aud.get(f"/api/alerts/{b['id']}")
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == (
            "this belongs to team team-b in district west; you are scoped to district east"
        )
        r = aud.get("/api/alerts", params={"district": "west"})
        assert r.status_code == 403 and "district west is not yours" in r.json()["detail"]
        assert aud.get("/api/alerts", params={"team": "team-b"}).status_code == 403
        assert aud.get("/api/access-log", params={"resident": "r-b1"}).status_code == 403
        # still an auditor: changes nothing
        assert aud.post(f"/api/alerts/{a['id']}/acknowledge", json={}).status_code == 403

    with stack.client("spec-west") as spec:
        assert [x["id"] for x in spec.get("/api/alerts").json()["alerts"]] == [b["id"]]
        assert spec.get("/api/residents/r-b1/timeline").json()["district"] == "west"
        assert spec.get("/api/residents/r-a1/timeline").status_code == 403
    with stack.client("lead-west") as lead:  # a team leader by district acts on its alerts
        assert lead.post(f"/api/alerts/{b['id']}/take", json={}).status_code == 200
        assert lead.post(f"/api/alerts/{a['id']}/take", json={}).status_code == 403
    with stack.client("admin") as adm:  # unscoped: every district, and a filter by one
        assert {x["id"] for x in adm.get("/api/alerts").json()["alerts"]} == {a["id"], b["id"]}
        east = adm.get("/api/alerts", params={"district": "east"}).json()["alerts"]
        assert [x["id"] for x in east] == [a["id"]]

    # every read is in the access log (through the spool and the drainer)
    def reads() -> list[tuple[Any, ...]]:
        return stack.sql(
            "SELECT action, resident, detail FROM access_log WHERE actor = 'aud-east'"
            " AND role = 'auditor' ORDER BY id"
        )

    wait_until(lambda: any(r[0] == "alert.read" for r in reads()))
    rows = reads()
    assert ("alert.read", "r-a1") in [(r[0], r[1]) for r in rows]
    lists = [r[2] for r in rows if r[0] == "alerts.list"]
    assert lists and all(d["residents"] == ["r-a1"] for d in lists)
    # the refused reads of the other district read nothing: no row names r-b1
    assert not [r for r in rows if r[1] == "r-b1" or "r-b1" in str(r[2])]
    # and the district auditor's access log shows its district's residents only
    with stack.client("aud-east") as aud:
        entries = aud.get("/api/access-log").json()["entries"]
        assert entries and {e["resident"] for e in entries} == {"r-a1"}


def test_users_add_by_district(stack: Stack) -> None:
    env = {"TRYGG_DATABASE_URL": stack.db}
    r = trygg_cli(
        "users", "add", "aud-x", "--role", "auditor", "--district", "north", env=env, check=False
    )
    assert r.returncode == 2
    assert "unknown district 'north' (stored: default, east, west" in r.stderr
    r = trygg_cli(
        "users",
        "add",
        "nurse-x",
        "--role",
        "care_staff",
        "--district",
        "east",
        env=env,
        check=False,
    )
    assert r.returncode == 2 and "care_staff cannot be scoped to districts" in r.stderr
    trygg_cli("users", "add", "aud-w", "--role", "auditor", "--district", "west", env=env)
    out = trygg_cli("users", "list", env=env).stdout
    assert "aud-w\tauditor\tdistrict:west\tactive" in out.splitlines()


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is missing")
def test_the_console_header_names_the_district(stack: Stack, browser: Any) -> None:
    """In Chromium: the header names the district of the user's scope, by its
    name, in Norwegian and (on request) English; an unscoped user of a site
    with two districts sees both."""
    page = console_page(stack, browser, "aud-east")
    assert page.locator("#district").inner_text() == "Bydel Østensjø"
    page.click("#lang")
    assert page.locator("#district").inner_text() == "District Østensjø"
    page.click("#lang")
    nurse = console_page(stack, browser, "nurse-b")
    assert nurse.locator("#district").inner_text() == "Bydel Frogner"
    admin = console_page(stack, browser, "admin")
    assert admin.locator("#district").inner_text() == "Bydeler Østensjø, Frogner"
    assert not page.errors and not nurse.errors and not admin.errors
