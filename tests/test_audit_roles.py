"""Roles (migration 0007, issue 16): the attacks on the trail, run as a login
that is a member of trygg_app only (not a superuser, who bypasses privileges),
against real PostgreSQL + TimescaleDB.

- TRUNCATE is refused (a statement-level trigger; the application has no
  TRUNCATE privilege either).
- ``SET trygg.retention = 'on'`` by the application role deletes nothing.
- A forged anchor is refused: the application may not write anchors, and an
  anchor that names no row or the chain's head is refused whoever writes it.
- Retention through the owner's SECURITY DEFINER functions removes only rows
  older than the database's policy, never the head.
- The reader role sees the reporting views only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.conftest import trygg_cli
from tests.roles import app_url, owner_url, reader_url
from tests.test_kpi import aid, load_known
from trygg.audit.verify import verify
from trygg.store.access_log import log_access
from trygg.store.audit import add_exception, chain_head
from trygg.store.retention import RetentionPolicy, run_retention

AUDIT_TABLES = (
    "alert_records",
    "access_log",
    "alert_exceptions",
    "chain_anchors",
    "alert_deliveries",
    "catalogue_history",
)
TRUNCATE_REFUSED = (*AUDIT_TABLES, "catalogue_versions")


def _fill(url: str) -> None:
    load_known(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(5):
            log_access(conn, actor=f"nurse-{i}", role="care_staff", action="view", resident="r-1")
        add_exception(
            conn,
            alert_id=aid("A4"),
            kind="answer",
            cause="busy",
            action="staffing",
            recorded_by="leader-1",
        )


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _counts(url: str) -> dict[str, int]:
    return {t: _count(url, t) for t in ("alert_records", "access_log", "alert_exceptions")}


def test_the_application_login_is_no_superuser(db: str) -> None:
    with psycopg.connect(app_url(db)) as conn:
        row = conn.execute(
            "SELECT rolsuper, pg_has_role(current_user, 'trygg_app', 'MEMBER'),"
            " pg_has_role(current_user, 'trygg_owner', 'MEMBER')"
            " FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert row == (False, True, False)


def test_privileges_of_the_application_role(db: str) -> None:
    with psycopg.connect(db) as conn:

        def has(table: str, priv: str) -> bool:
            row = conn.execute(
                "SELECT has_table_privilege('trygg_app', %s, %s)", [table, priv]
            ).fetchone()
            return bool(row and row[0])

        for t in AUDIT_TABLES:
            assert has(t, "SELECT"), t
            for priv in ("UPDATE", "DELETE", "TRUNCATE"):
                assert not has(t, priv), f"trygg_app may {priv} {t}"
            assert has(t, "INSERT") == (t != "chain_anchors"), t
        assert not has("retention_policy", "UPDATE")
        for t in ("residents", "devices", "silences", "api_users", "spool_checkpoint"):
            assert has(t, "UPDATE"), t
        owners = conn.execute(
            "SELECT DISTINCT relowner::regrole::text FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('public', 'reporting') AND c.relkind IN ('r', 'v', 'S')"
        ).fetchall()
        assert owners == [("trygg_owner",)]


def test_truncate_is_refused(db: str) -> None:
    _fill(db)
    before = _counts(db)
    with psycopg.connect(app_url(db), autocommit=True) as conn:
        for t in TRUNCATE_REFUSED:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"TRUNCATE {t}")
    # even the superuser, who has every privilege, meets the trigger
    with psycopg.connect(db, autocommit=True) as conn:
        for t in TRUNCATE_REFUSED:
            with pytest.raises(psycopg.errors.RaiseException, match="TRUNCATE refused"):
                conn.execute(f"TRUNCATE {t} CASCADE")
        with pytest.raises(psycopg.errors.RaiseException, match="TRUNCATE refused"):
            conn.execute("TRUNCATE alerts CASCADE")  # would cascade into alert_records
        with pytest.raises(psycopg.errors.RaiseException, match="TRUNCATE refused"):
            conn.execute("TRUNCATE access_log, alert_records")
    assert _counts(db) == before
    out = trygg_cli("audit", "verify", env={"TRYGG_DATABASE_URL": db})
    assert f"access_log: ok, {before['access_log']} rows" in out.stdout


def test_the_application_role_cannot_update_or_delete_the_trail(db: str) -> None:
    _fill(db)
    before = _counts(db)
    with psycopg.connect(app_url(db), autocommit=True) as conn:
        for sql in (
            "DELETE FROM access_log",
            "DELETE FROM alert_records WHERE chain_seq = 1",
            "UPDATE alert_records SET actor = 'someone else'",
            "UPDATE access_log SET resident = 'r-2'",
            "DELETE FROM alert_exceptions",
            "DELETE FROM chain_anchors",
            "UPDATE retention_policy SET keep = interval '1 day'",
            "ALTER TABLE access_log DISABLE TRIGGER access_log_append_only",
            "DROP TRIGGER access_log_no_truncate ON access_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET session_replication_role = replica")
    assert _counts(db) == before


def test_the_retention_setting_set_by_the_application_role_deletes_nothing(db: str) -> None:
    _fill(db)
    before = _counts(db)
    app = app_url(db)
    with psycopg.connect(app) as conn:
        conn.execute("SET trygg.retention = 'on'")
        conn.execute("SELECT set_config('trygg.retention_cutoff', '2100-01-01', false)")
        for t in ("access_log", "alert_records", "alert_exceptions"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"DELETE FROM {t}")
    # the retention functions, asked to keep nothing, still keep what the
    # database's policy keeps (10 years of trail, 90 days of events)
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("SET trygg.retention = 'on'")
        zero = RetentionPolicy(
            events=timedelta(0),
            dead_letters=timedelta(0),
            records=timedelta(0),
            access_log=timedelta(0),
        )
        res = run_retention(conn, zero, datetime(2100, 1, 1, tzinfo=UTC))
        row = conn.execute(
            "SELECT upto, removed FROM trygg_retention_chain('access_log', '2100-01-01', 1000000)"
        ).fetchone()
        assert row == (None, 0)
    assert res.records_deleted == res.access_log_deleted == res.alerts_deleted == 0
    assert set(res.kept_longer) >= {"access_log", "alert_records", "events"}
    assert "kept more than the settings asked" in res.summary()
    assert _counts(db) == before
    with psycopg.connect(db) as conn:
        assert verify(conn).ok


def test_a_forged_anchor_is_refused(db: str) -> None:
    """The attack of issue 16: an anchor at the head, then delete everything."""
    _fill(db)
    before = _counts(db)
    with psycopg.connect(db) as conn:
        seq, head = chain_head(conn, "access_log")
    with psycopg.connect(app_url(db)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(
                "INSERT INTO chain_anchors (tbl, chain_seq, hash, rows_removed, reason)"
                " VALUES ('access_log', %s, %s, %s, 'retention')",
                [seq, head, seq],
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SELECT set_config('trygg.retention', 'on', true)")
            conn.execute("DELETE FROM access_log WHERE chain_seq <= %s", [seq])
    assert _counts(db) == before
    out = trygg_cli("audit", "verify", env={"TRYGG_DATABASE_URL": db})
    assert f"access_log: ok, {before['access_log']} rows from anchor 0; head {seq}" in out.stdout


@pytest.mark.parametrize("who", ["superuser", "owner"])
def test_an_anchor_must_name_a_row_that_is_not_the_head(db: str, who: str) -> None:
    _fill(db)
    url = db if who == "superuser" else owner_url(db)
    with psycopg.connect(db) as conn:
        seq, head = chain_head(conn, "access_log")
        second = conn.execute("SELECT hash FROM access_log WHERE chain_seq = 2").fetchone()
    assert second is not None

    def forge(conn: psycopg.Connection, pos: int, h: bytes, match: str) -> None:
        with pytest.raises(psycopg.errors.RaiseException, match=match), conn.transaction():
            conn.execute(
                "INSERT INTO chain_anchors (tbl, chain_seq, hash, rows_removed, reason)"
                " VALUES ('access_log', %s, %s, 0, 'forged')",
                [pos, h],
            )

    with psycopg.connect(url) as conn:
        if who == "superuser":
            # a superuser is not the owner: it must go through retention too
            forge(conn, 2, bytes(second[0]), "only the owner writes anchors")
            return
        conn.execute("SET ROLE trygg_owner")  # act as the owner itself
        forge(conn, seq, head, "the head is never anchored")
        forge(conn, 2, b"\x00" * 32, "no row at chain position 2 with that hash")
        forge(conn, 0, b"\x01" * 32, "genesis")
        forge(conn, seq + 5, b"\x00" * 32, "no row at chain position")


def test_retention_by_the_application_removes_only_what_the_policy_allows(db: str) -> None:
    """The application's own run: old rows go (through the owner's functions),
    the head and everything younger than the policy stay, the chain verifies."""
    now = datetime.now(UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        for years in (12, 11, 0):
            conn.execute(
                "INSERT INTO access_log (at, actor, role, action) VALUES (%s, 'a', 'auditor', 'x')",
                [now - timedelta(days=365 * years + 1)],
            )
        for days in (40, 1):
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, reason)"
                " VALUES (%s, 't', 'x', 'bad')",
                [now - timedelta(days=days)],
            )
    with psycopg.connect(app_url(db), autocommit=True) as conn:
        res = run_retention(conn, RetentionPolicy(), now)
    assert res.access_log_deleted == 2 and ("access_log", 2) in res.anchors
    assert res.dead_letters_deleted == 1
    assert _count(db, "access_log") == 1
    with psycopg.connect(db) as conn:
        v = verify(conn)
        assert v.ok, v.first_break
        assert {t.table: t.anchor for t in v.tables}["access_log"] == 2
        anchor = conn.execute(
            "SELECT rows_removed, reason FROM chain_anchors"
            " WHERE tbl = 'access_log' AND chain_seq = 2"
        ).fetchone()
    assert anchor == (2, "retention")


def test_retention_never_removes_the_head(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        for i in range(3):
            conn.execute(
                "INSERT INTO access_log (at, actor, role, action) VALUES (%s, 'a', 'auditor', 'x')",
                [datetime(2001, 1, 1 + i, tzinfo=UTC)],
            )
        res = run_retention(conn, RetentionPolicy(), datetime(2040, 1, 1, tzinfo=UTC))
        assert res.access_log_deleted == 2
        assert conn.execute("SELECT chain_seq FROM access_log").fetchall() == [(3,)]
        assert verify(conn).ok


def test_the_application_role_does_its_work(db: str) -> None:
    """What trygg run, the workers and the API write still goes through."""
    from trygg.store.access import disable_user, user_by_token
    from trygg.store.users import add_user

    _fill(db)
    app = app_url(db)
    with psycopg.connect(app, autocommit=True) as conn:
        log_access(conn, actor="nurse", role="care_staff", action="view", resident="r-1")
        add_exception(
            conn,
            alert_id=aid("A5"),
            kind="other",
            cause="c",
            action="a",
            recorded_by="leader",
        )
        conn.execute(
            "INSERT INTO events (time, device, event_id, type, resident, received_at)"
            " VALUES (now() - interval '400 days', 'd-1', 'e-1', 'heartbeat', 'r-1', now())"
        )
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason)"
            " VALUES (now(), 't', 'x', 'bad')"
        )
        conn.execute("UPDATE alerts SET state = state WHERE id = %s", [aid("A1")])
        token = add_user(conn, "ola", "care_staff", ["t1"])
        assert user_by_token(conn, token) is not None
        assert disable_user(conn, "ola")
        assert verify(conn).ok
    out = trygg_cli("audit", "verify", env={"TRYGG_DATABASE_URL": app})
    assert "access_log: ok, 6 rows" in out.stdout


def test_the_reader_sees_the_reporting_views_only(db: str) -> None:
    _fill(db)
    with psycopg.connect(reader_url(db), autocommit=True) as conn:
        # unqualified names are the views (search_path = reporting, public)
        assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (12,)
        assert conn.execute("SELECT count(*) FROM access_log").fetchone() == (5,)
        for sql in (
            "SELECT count(*) FROM public.alerts",
            "SELECT count(*) FROM public.access_log",
            "SELECT count(*) FROM chain_anchors",
            "SELECT * FROM trygg_retention_chain('access_log', now(), 1)",
            "INSERT INTO reporting.access_log (actor, role, action) VALUES ('x', 'x', 'x')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("SELECT hash FROM alert_records")
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("SELECT payload FROM dead_letters")


def test_trygg_run_as_the_application_role(tmp_path, db: str, broker) -> None:  # type: ignore[no-untyped-def]
    """The embedded runner end to end as a trygg_app login: events stored, a fall
    raised, recorded and delivered, an API read written to the access log."""
    import time

    import httpx

    from tests.helpers import TryggProcess, WebhookReceiver, event_json, publish, wait_until
    from trygg.devenv import free_port
    from trygg.store.users import add_user

    reg = tmp_path / "registry.yaml"
    reg.write_text(
        "residents:\n  - {id: r-0001, team: t1}\n"
        "devices:\n  - {id: fall-0001, resident: r-0001, kind: fall, room: bathroom}\n"
    )
    trygg_cli("registry", "load", str(reg), "--database-url", db)
    with psycopg.connect(db, autocommit=True) as conn:
        token = add_user(conn, "nurse", "care_staff", ["t1"])
    app = app_url(db)
    port = free_port()

    def count(sql: str) -> int:
        with psycopg.connect(db) as conn:
            row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0

    env = {
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": app,
        "TRYGG_SITE": "oslo",
        "TRYGG_MQTT_CLIENT_ID": f"trygg-test-{time.monotonic_ns()}",
        "TRYGG_HTTP_PORT": str(port),
    }
    with WebhookReceiver() as hook, TryggProcess({**env, "TRYGG_WEBHOOK_URL": hook.url}) as trygg:
        trygg.wait_connected()
        when = datetime.now(UTC).isoformat()
        publish(
            broker.port,
            [("trygg/oslo/devices/fall-0001/events", event_json("f-1", "fall.detected", when))],
        )
        wait_until(lambda: hook.received, timeout=10)
        alert_id = hook.received[0][2]["id"]
        wait_until(lambda: count("SELECT count(*) FROM alert_records") == 2)
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/alerts/{alert_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        wait_until(lambda: count("SELECT count(*) FROM access_log WHERE actor = 'nurse'") >= 1)
        assert count("SELECT count(*) FROM events") == 1
        assert count("SELECT count(*) FROM alert_deliveries WHERE ok") >= 1
        assert "permission denied" not in trygg.output()
    with psycopg.connect(db) as conn:
        assert verify(conn).ok
