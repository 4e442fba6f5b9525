"""The schema: applied by ``trygg db migrate`` on TimescaleDB and on plain PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import new_database, trygg_cli
from trygg.store.migrate import MigrationError, migrate, migrations, schema_version, uses_hypertable

TABLES = {"residents", "devices", "events", "dead_letters", "alerts", "alert_records", "access_log"}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_cli_migrates_an_empty_database_to_a_hypertable(empty_db: str) -> None:
    out = trygg_cli("db", "migrate", "--database-url", empty_db)
    assert "applied 0001_initial" in out.stdout
    assert _tables(empty_db) >= TABLES
    with psycopg.connect(empty_db) as c:
        assert uses_hypertable(c)
        assert schema_version(c) == len(migrations())


def test_migrate_is_idempotent(empty_db: str) -> None:
    assert migrate(empty_db)
    assert migrate(empty_db) == []
    out = trygg_cli("db", "migrate", "--database-url", empty_db)
    assert "schema is up to date" in out.stdout


def test_plain_postgresql_without_the_extension(plain_pg_server) -> None:  # type: ignore[no-untyped-def]
    url = new_database(plain_pg_server)
    assert [m.name for m in migrate(url)] == [m.name for m in migrations()]
    assert _tables(url) >= TABLES
    with psycopg.connect(url) as c:
        assert not uses_hypertable(c)
        assert c.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone() == (0,)
    assert migrate(url) == []


def test_refuses_a_newer_schema(db: str) -> None:
    with psycopg.connect(db) as c:
        c.execute("INSERT INTO trygg_schema (version, name, checksum) VALUES (99, 'future', 'x')")
    with pytest.raises(MigrationError, match="newer than this trygg knows"):
        migrate(db)
    out = trygg_cli("db", "migrate", "--database-url", db, check=False)
    assert out.returncode == 1
    assert "upgrade trygg" in out.stderr


def test_lifecycle_records_are_append_only(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(
            "INSERT INTO alerts (id, resident, team, rule, catalogue_version, code, severity,"
            " raised_at, state) VALUES (gen_random_uuid(), 'r-1', 't', 'fall', 'v', '4.1',"
            " 'red', now(), 'raised')"
        )
        c.execute(
            "INSERT INTO alert_records (alert_id, step, at, actor)"
            " SELECT id, 'raised', now(), 'trygg' FROM alerts"
        )
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            c.execute("UPDATE alert_records SET actor = 'someone else'")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            c.execute("DELETE FROM alert_records")
