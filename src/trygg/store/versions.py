"""Catalogue and district overlay versions (schema 5, 11): record, list, activate,
shadow, promote.

A version's content (its files) never changes once stored (a trigger refuses
it); its status does: ``active`` (one per kind), ``shadow`` (at most one
catalogue) or ``retired``. Every change of status is a row of the
append-only ``catalogue_history`` with who, when and why. Each operation runs
in one transaction under an advisory lock, so two specialists publishing at
once are serialised. The statements these operations share are in
trygg.store.version_rows; care plans are versioned by trygg.store.care_plan_versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from trygg.store.version_rows import (
    COLS,
    Files,
    HistoryEntry,
    Version,
    add_history,
    insert_overlay,
    lock,
    overlay_in_shadow,
    overlay_version,
    overlay_with_status,
    set_status,
    version_of,
    with_status,
)

CATALOGUE = "catalogue"
CARE_PLANS = "care_plans"


class VersionError(RuntimeError):
    """The change cannot be made; the text says why."""


def insert(
    conn: psycopg.Connection,
    version: str,
    kind: str,
    files: Files,
    author: str,
    reason: str,
    parent: str | None,
) -> bool:
    """Store the content if it is new (status retired); True if it was new."""
    row = conn.execute(
        f"INSERT INTO catalogue_versions ({COLS}) VALUES"
        " (%s, %s, %s, 'retired', now(), %s, %s, %s, now())"
        " ON CONFLICT (version) DO NOTHING RETURNING version",
        [
            version,
            kind,
            Jsonb([{"name": n, "text": t} for n, t in files]),
            author,
            reason,
            parent,
        ],
    ).fetchone()
    if row is None:
        kind_now = conn.execute(
            "SELECT kind FROM catalogue_versions WHERE version = %s", [version]
        ).fetchone()
        if kind_now and kind_now[0] != kind:
            raise VersionError(f"version {version} is already stored as a {kind_now[0]}")
    return row is not None


# ------------------------------------------------------------------ reading


def get(conn: psycopg.Connection, ref: str) -> Version:
    """A version by its string, a unique prefix of it, or ``active`` / ``shadow``."""
    if ref in ("active", "shadow"):
        row = conn.execute(
            f"SELECT {COLS} FROM catalogue_versions WHERE kind = %s AND status = %s",
            [CATALOGUE, ref],
        ).fetchone()
        if row is None:
            raise VersionError(
                "no catalogue is in shadow: nothing to promote"
                if ref == "shadow"
                else "there is no active catalogue version"
            )
        return version_of(row)
    rows = conn.execute(
        f"SELECT {COLS} FROM catalogue_versions WHERE version = %s"
        " OR starts_with(version, %s) ORDER BY version = %s DESC, version LIMIT 3",
        [ref, ref, ref],
    ).fetchall()
    if not rows:
        raise VersionError(f"no version {ref!r} (see trygg rules history)")
    if rows[0][0] != ref and len(rows) > 1:
        names = ", ".join(r[0] for r in rows)
        raise VersionError(f"{ref!r} names more than one version ({names}, ...): give more of it")
    return version_of(rows[0])


def current(conn: psycopg.Connection, kind: str = CATALOGUE) -> dict[str, str]:
    """``{"active": version, "shadow": version}`` (keys present only if set): cheap."""
    rows = conn.execute(
        "SELECT status, version FROM catalogue_versions"
        " WHERE kind = %s AND status IN ('active', 'shadow')",
        [kind],
    ).fetchall()
    return {str(s): str(v) for s, v in rows}


def _history_rows(
    conn: psycopg.Connection, where: list[str], args: list[Any], limit: int, *, district: bool
) -> list[tuple[Any, ...]]:
    """Rows of the history joined with each version's status now, newest first:
    a :class:`HistoryEntry`'s fields, then (``district``) the district."""
    q = (
        "SELECT h.id, h.at, h.version, h.kind, h.action, h.author, h.reason, h.previous,"
        " v.status" + (", h.district" if district else "") + " FROM catalogue_history h"
        " JOIN catalogue_versions v USING (version)"
    )
    if where:
        q += " WHERE " + " AND ".join(where)
    q += " ORDER BY h.id DESC LIMIT %s"
    args.append(limit)
    return conn.execute(q, args).fetchall()


def history(
    conn: psycopg.Connection, kind: str | None = None, limit: int = 200
) -> list[HistoryEntry]:
    """The history, newest first."""
    where = [] if kind is None else ["h.kind = %s"]
    args: list[Any] = [] if kind is None else [kind]
    return [HistoryEntry(*r) for r in _history_rows(conn, where, args, limit, district=False)]


def shadow_started(conn: psycopg.Connection, version: str) -> datetime | None:
    """When ``version`` last went into shadow."""
    row = conn.execute(
        "SELECT max(at) FROM catalogue_history WHERE version = %s AND action = 'shadow_started'",
        [version],
    ).fetchone()
    return row[0] if row else None


def last_shadow_start(conn: psycopg.Connection) -> datetime | None:
    """When a catalogue last went into shadow (any version), or None if none ever did."""
    row = conn.execute(
        "SELECT version, at FROM catalogue_history WHERE action = 'shadow_started'"
        " ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return row[1] if row else None


# ------------------------------------------------------------------ changes


def publish(
    conn: psycopg.Connection,
    version: str,
    files: Files,
    *,
    author: str,
    reason: str,
    kind: str = CATALOGUE,
    action: str = "published",
) -> bool:
    """Store ``files`` as ``version`` (if new) and make it the active one.

    Returns False when it already was active (nothing recorded). Publishing
    the version in shadow is a promotion; publishing an older version again
    makes it active again (a roll-back), recorded like any other change.
    """
    with conn.transaction():
        lock(conn)
        prev = with_status(conn, kind, "active")
        if prev == version:
            return False
        insert(conn, version, kind, files, author, reason, prev)
        if prev is not None:
            set_status(conn, prev, "retired")
        set_status(conn, version, "active")
        add_history(conn, version, kind, action, author, reason, prev)
    return True


def record_in_use(conn: psycopg.Connection, version: str, files: Files) -> bool:
    """At start-up, with no active catalogue stored: record the one in use."""
    with conn.transaction():
        lock(conn)
        if with_status(conn, CATALOGUE, "active") is not None:
            return False
        insert(conn, version, CATALOGUE, files, "trygg", "catalogue in use at start-up", None)
        set_status(conn, version, "active")
        add_history(
            conn, version, CATALOGUE, "started", "trygg", "catalogue in use at start-up", None
        )
    return True


def start_shadow(
    conn: psycopg.Connection, version: str, files: Files, *, author: str, reason: str
) -> None:
    """Store ``files`` as ``version`` and run it in shadow beside the active one."""
    with conn.transaction():
        lock(conn)
        cur = current(conn)
        if cur.get("active") == version:
            raise VersionError(f"{version} is the active catalogue already")
        if "shadow" in cur:
            if cur["shadow"] == version:
                raise VersionError(f"{version} is in shadow already")
            raise VersionError(
                f"{cur['shadow']} is in shadow already: promote it or stop it first"
                " (trygg rules promote / trygg rules shadow --stop)"
            )
        district = overlay_in_shadow(conn)
        if district is not None:
            raise VersionError(
                f"district {district}'s overlay is in shadow: a catalogue cannot be shadowed"
                f" beside it (trygg rules promote --district {district}, or --stop it first)"
            )
        insert(conn, version, CATALOGUE, files, author, reason, cur.get("active"))
        set_status(conn, version, "shadow")
        add_history(conn, version, CATALOGUE, "shadow_started", author, reason, cur.get("active"))


def stop_shadow(conn: psycopg.Connection, *, author: str, reason: str) -> str:
    """Stop the shadow run; the candidate is kept, retired. Returns its version."""
    with conn.transaction():
        lock(conn)
        shadow = with_status(conn, CATALOGUE, "shadow")
        if shadow is None:
            raise VersionError("no catalogue is in shadow")
        set_status(conn, shadow, "retired")
        add_history(conn, shadow, CATALOGUE, "shadow_stopped", author, reason, None)
    return shadow


def promote(conn: psycopg.Connection, *, author: str, reason: str) -> tuple[str, str | None]:
    """The shadow version becomes active, the active one retired: ``(new, previous)``."""
    with conn.transaction():
        lock(conn)
        cur = current(conn)
        shadow = cur.get("shadow")
        if shadow is None:
            raise VersionError("no catalogue is in shadow: nothing to promote")
        prev = cur.get("active")
        if prev is not None:
            set_status(conn, prev, "retired")
        set_status(conn, shadow, "active")
        add_history(conn, shadow, CATALOGUE, "promoted", author, reason, prev)
    return shadow, prev


# ------------------------------------------------------------------ reports


@dataclass(frozen=True)
class AlertRow:
    id: str
    rule: str
    resident: str
    device: str | None
    raised_at: datetime
    fires: int
    outcome: str | None
    state: str
    catalogue_version: str
    shadow: bool


def alerts_in(
    conn: psycopg.Connection, start: datetime, end: datetime, *, shadow: bool
) -> list[AlertRow]:
    """Alerts raised in ``[start, end)``, shadow ones or the others, oldest first.

    ``raised_at`` is the time the rule decided (the signal's time) where the
    raised record has it, so live and back-test times compare.
    """
    rows = conn.execute(
        "SELECT id::text, rule, resident, device,"
        " coalesce((snapshot ->> 'signal_at')::timestamptz, raised_at),"
        " 1 + repeat_count,"
        " coalesce(outcome, CASE WHEN cancel_reason = 'false_alarm' THEN 'false_alarm' END),"
        " state, catalogue_version, shadow"
        " FROM alerts WHERE shadow = %s AND raised_at >= %s AND raised_at < %s"
        " ORDER BY raised_at, id",
        [shadow, start, end],
    ).fetchall()
    return [AlertRow(*r) for r in rows]


# ------------------------------------------------------------------ district overlays
#
# A district's overlay (rules/districts/<district>.yaml) versioned like the
# catalogue (schema 11): kind 'overlay' with its district; per district one
# active and at most one in shadow. A district's shadow runs beside the active
# catalogue for that district's residents only (docs/rules.md, "Versions per
# district"). One shadow run at a time per resident: a district's overlay may not
# be shadowed while a whole catalogue is, nor the other way round.

OVERLAY = "overlay"


def overlays_in(conn: psycopg.Connection, status: str) -> dict[str, tuple[str, str]]:
    """district -> (version, text) of the overlays with ``status`` (active or shadow).
    An empty mapping on a schema older than 11."""
    try:
        with conn.transaction():
            rows = conn.execute(
                "SELECT district, version, files FROM catalogue_versions"
                " WHERE kind = 'overlay' AND status = %s ORDER BY district",
                [status],
            ).fetchall()
    except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable):
        return {}
    return {str(d): (str(v), str(f[0]["text"])) for d, v, f in rows}


def overlay_history(
    conn: psycopg.Connection, district: str | None = None, limit: int = 200
) -> list[tuple[HistoryEntry, str]]:
    """The overlay versions' history, newest first, each with its district."""
    where = ["h.kind = 'overlay'"]
    args: list[Any] = []
    if district is not None:
        where.append("h.district = %s")
        args.append(district)
    rows = _history_rows(conn, where, args, limit, district=True)
    return [(HistoryEntry(*r[:9]), str(r[9])) for r in rows]


def publish_overlay(
    conn: psycopg.Connection, district: str, text: str, *, author: str, reason: str
) -> str | None:
    """Store ``text`` as the district's overlay (if new) and make it active; the
    version, or None when it already was active (nothing recorded)."""
    with conn.transaction():
        lock(conn)
        prev = overlay_with_status(conn, district, "active")
        version = overlay_version(district, text)
        if prev == version:
            return None
        insert_overlay(conn, district, text, author, reason, prev)
        if prev is not None:
            set_status(conn, prev, "retired")
        if overlay_with_status(conn, district, "shadow") == version:
            add_history(conn, version, OVERLAY, "shadow_stopped", author, reason, None, district)
        set_status(conn, version, "active")
        add_history(conn, version, OVERLAY, "published", author, reason, prev, district)
    return version


def start_overlay_shadow(
    conn: psycopg.Connection, district: str, text: str, *, author: str, reason: str
) -> str:
    """Store ``text`` as a candidate overlay of the district and run it in shadow
    for the district's residents. Returns its version."""
    with conn.transaction():
        lock(conn)
        version = overlay_version(district, text)
        active = overlay_with_status(conn, district, "active")
        if active == version:
            raise VersionError(f"{version} is {district}'s active overlay already")
        shadow = overlay_with_status(conn, district, "shadow")
        if shadow is not None:
            raise VersionError(
                f"{shadow} is in shadow for {district} already: promote it or stop it first"
                f" (trygg rules promote --district {district} /"
                f" trygg rules shadow --district {district} --stop)"
            )
        cat = with_status(conn, CATALOGUE, "shadow")
        if cat is not None:
            raise VersionError(
                f"the catalogue {cat} is in shadow: a district's overlay cannot be shadowed"
                " beside it (promote or stop it first)"
            )
        insert_overlay(conn, district, text, author, reason, active)
        set_status(conn, version, "shadow")
        add_history(conn, version, OVERLAY, "shadow_started", author, reason, active, district)
    return version


def stop_overlay_shadow(
    conn: psycopg.Connection, district: str, *, author: str, reason: str
) -> str:
    """Stop the district's shadow run; the candidate is kept, retired."""
    with conn.transaction():
        lock(conn)
        shadow = overlay_with_status(conn, district, "shadow")
        if shadow is None:
            raise VersionError(f"no overlay of {district} is in shadow")
        set_status(conn, shadow, "retired")
        add_history(conn, shadow, OVERLAY, "shadow_stopped", author, reason, None, district)
    return shadow


def promote_overlay(
    conn: psycopg.Connection, district: str, *, author: str, reason: str
) -> tuple[str, str | None]:
    """The district's shadow overlay becomes active: ``(new, previous)``."""
    with conn.transaction():
        lock(conn)
        shadow = overlay_with_status(conn, district, "shadow")
        if shadow is None:
            raise VersionError(f"no overlay of {district} is in shadow: nothing to promote")
        prev = overlay_with_status(conn, district, "active")
        if prev is not None:
            set_status(conn, prev, "retired")
        set_status(conn, shadow, "active")
        add_history(conn, shadow, OVERLAY, "promoted", author, reason, prev, district)
    return shadow, prev
