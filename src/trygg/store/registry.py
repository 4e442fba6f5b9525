"""The device registry in the database: load from a file, read back for the runners."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from trygg.registry import Registry, parse_registry
from trygg.store.care_plan_versions import record_care_plans


@dataclass(frozen=True)
class RegistryCounts:
    residents: int
    devices: int
    teams: int = 0
    districts: int = 0


def save_registry(
    conn: psycopg.Connection,
    registry: Registry,
    *,
    author: str = "trygg",
    reason: str = "registry loaded",
) -> RegistryCounts:
    """Insert or update every resident and device of ``registry`` in one transaction.

    Residents and devices absent from the file are left alone: a registry file
    may describe one team's homes only. So are districts and teams: the file's
    ``districts:`` and ``teams:`` are inserted or updated; a resident's team that
    is not stored yet is stored in the default district, and one that is keeps
    its district. When the care plans (overrides) of all
    stored residents differ from the active care-plan version afterwards, a new
    version is recorded in the same transaction, with ``author`` and ``reason``.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO districts (id, name) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE"
            " SET name = coalesce(excluded.name, districts.name), updated_at = now()",
            [(d.id, d.name) for d in registry.districts],
        )
        listed = {t.id for t in registry.teams}
        cur.executemany(
            "INSERT INTO districts (id) VALUES (%s) ON CONFLICT (id) DO NOTHING",
            [(d,) for d in sorted({t.district for t in registry.teams})],
        )
        cur.executemany(
            "INSERT INTO teams (id, district) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE"
            " SET district = excluded.district, updated_at = now()"
            " WHERE teams.district IS DISTINCT FROM excluded.district",
            [(t.id, t.district) for t in registry.teams],
        )
        cur.executemany(
            "INSERT INTO teams (id) VALUES (%s) ON CONFLICT (id) DO NOTHING",
            [(t,) for t in sorted({r.team for r in registry.residents} - listed)],
        )
        cur.executemany(
            "INSERT INTO residents (id, team, timezone, overrides) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET team = excluded.team, timezone = excluded.timezone,"
            " overrides = excluded.overrides, updated_at = now()",
            [(r.id, r.team, r.timezone, Jsonb(r.overrides)) for r in registry.residents],
        )
        cur.executemany(
            "INSERT INTO devices (id, resident, kind, room, heartbeat) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET resident = excluded.resident, kind = excluded.kind,"
            " room = excluded.room, heartbeat = excluded.heartbeat, updated_at = now()",
            [
                (d.id, d.resident, d.kind.value, d.room.value if d.room else None, d.heartbeat)
                for d in registry.devices
            ],
        )
        record_care_plans(conn, author=author, reason=reason)
    return RegistryCounts(
        len(registry.residents), len(registry.devices), len(registry.teams), len(registry.districts)
    )


def load_registry(conn: psycopg.Connection) -> Registry:
    """The whole registry as stored, validated the same way as a file (with every
    stored district and team)."""
    districts = [
        {"id": i, **({"name": n} if n else {})}
        for i, n in conn.execute("SELECT id, name FROM districts ORDER BY id").fetchall()
    ]
    teams = [
        {"id": i, "district": d}
        for i, d in conn.execute("SELECT id, district FROM teams ORDER BY id").fetchall()
    ]
    residents = [
        {"id": i, "team": t, "timezone": tz, "overrides": o}
        for i, t, tz, o in conn.execute(
            "SELECT id, team, timezone, overrides FROM residents ORDER BY id"
        ).fetchall()
    ]
    devices = [
        {
            k: v
            for k, v in (
                ("id", i),
                ("resident", r),
                ("kind", k_),
                ("room", room),
                ("heartbeat", hb),
            )
            if v is not None
        }
        for i, r, k_, room, hb in conn.execute(
            "SELECT id, resident, kind, room, heartbeat FROM devices ORDER BY id"
        ).fetchall()
    ]
    data = {"districts": districts, "teams": teams, "residents": residents, "devices": devices}
    return parse_registry(data, "database")


# What load_registry reads, as one digest computed by the database (quote_nullable:
# a NULL and an empty text differ). The devices' health columns (last_seen, battery,
# online), which change all the time, are not part of the registry and not in it.
_DIGEST = """
SELECT md5(concat_ws(E'\\n',
  (SELECT string_agg(concat_ws(',', quote_nullable(id), quote_nullable(name)), ';'
          ORDER BY id) FROM districts),
  (SELECT string_agg(concat_ws(',', quote_nullable(id), quote_nullable(district)), ';'
          ORDER BY id) FROM teams),
  (SELECT string_agg(concat_ws(',', quote_nullable(id), quote_nullable(team),
          quote_nullable(timezone), quote_nullable(overrides::text)), ';'
          ORDER BY id) FROM residents),
  (SELECT string_agg(concat_ws(',', quote_nullable(id), quote_nullable(resident),
          quote_nullable(kind), quote_nullable(room), quote_nullable(heartbeat)), ';'
          ORDER BY id) FROM devices)))
"""


def registry_digest(conn: psycopg.Connection) -> str:
    """A digest of the stored registry (what ``load_registry`` reads), made by the
    database: one short row instead of every resident and device."""
    row = conn.execute(_DIGEST).fetchone()
    return str(row[0]) if row else ""


class RegistryReader:
    """Reads the stored registry again only when it has changed.

    The runners reload the registry every few seconds. Validating it (``parse_registry``)
    takes ~25 ms per 260 homes in one pydantic call that holds the GIL, so a reload in a
    worker thread still stopped the event loop: alarms waited 60-100 ms behind it in the
    distributed worker (bench/RESULTS.md, 2026-12-07), and at a city's size it would be
    seconds. ``read`` first asks the database for ``registry_digest`` and returns the
    registry it has when the digest is the same. One reader per reloading process; it
    is called from one thread at a time."""

    def __init__(self) -> None:
        self._digest: str | None = None
        self._registry: Registry | None = None

    def read(self, conn: psycopg.Connection) -> Registry:
        """The stored registry: the same object as last time when nothing changed."""
        digest = registry_digest(conn)
        if self._registry is None or digest != self._digest:
            self._registry = load_registry(conn)
            self._digest = digest
        return self._registry


def district_map(conn: psycopg.Connection) -> tuple[dict[str, str], dict[str, str]]:
    """(team -> district, district -> name) as stored, for the reports to name the
    district of a team (a team not listed is in the default district); a district
    without a name is named by its id."""
    teams = {str(t): str(d) for t, d in conn.execute("SELECT id, district FROM teams")}
    names = {str(i): str(n or i) for i, n in conn.execute("SELECT id, name FROM districts")}
    return teams, names
