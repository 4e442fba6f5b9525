"""The rows behind catalogue, care-plan and overlay versions (schema 5, 11).

``catalogue_versions`` holds each version's content, which never changes once
stored (a trigger refuses it), and its status; ``catalogue_history`` is the
append-only record of every change of status. These are the statements every
versioned kind shares; the operations that combine them, each in one
transaction under :func:`lock`, are in trygg.store.versions and
trygg.store.care_plan_versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

_LOCK_KEY = 0x7472_7976  # "tryv"

Files = list[tuple[str, str]]


@dataclass(frozen=True)
class Version:
    version: str
    kind: str
    files: Files
    status: str
    created_at: datetime
    author: str
    reason: str
    parent: str | None
    status_at: datetime


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    at: datetime
    version: str
    kind: str
    action: str
    author: str
    reason: str
    previous: str | None
    status: str  # the version's status now


COLS = "version, kind, files, status, created_at, author, reason, parent, status_at"


def version_of(row: Sequence[Any]) -> Version:
    files = [(str(f["name"]), str(f["text"])) for f in row[2]]
    return Version(row[0], row[1], files, row[3], row[4], row[5], row[6], row[7], row[8])


def lock(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])


def set_status(conn: psycopg.Connection, version: str, status: str) -> None:
    conn.execute(
        "UPDATE catalogue_versions SET status = %s, status_at = now() WHERE version = %s",
        [status, version],
    )


def add_history(
    conn: psycopg.Connection,
    version: str,
    kind: str,
    action: str,
    author: str,
    reason: str,
    previous: str | None,
    district: str | None = None,
) -> None:
    """One change of status; ``district``: an overlay's (schema 11). Other rows name
    no district column, so that they are written on an older schema too."""
    cols = "version, kind, action, author, reason, previous"
    values = [version, kind, action, author, reason, previous]
    if district is not None:
        cols += ", district"
        values.append(district)
    marks = ", ".join(["%s"] * len(values))
    conn.execute(f"INSERT INTO catalogue_history ({cols}) VALUES ({marks})", values)


def with_status(conn: psycopg.Connection, kind: str, status: str) -> str | None:
    row = conn.execute(
        "SELECT version FROM catalogue_versions WHERE kind = %s AND status = %s",
        [kind, status],
    ).fetchone()
    return str(row[0]) if row else None


def overlay_with_status(conn: psycopg.Connection, district: str, status: str) -> str | None:
    row = conn.execute(
        "SELECT version FROM catalogue_versions WHERE kind = 'overlay' AND district = %s"
        " AND status = %s",
        [district, status],
    ).fetchone()
    return str(row[0]) if row else None


def overlay_in_shadow(conn: psycopg.Connection) -> str | None:
    """A district with an overlay in shadow, if any (a catalogue may not be shadowed then)."""
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT district FROM catalogue_versions WHERE kind = 'overlay'"
                " AND status = 'shadow' ORDER BY district LIMIT 1"
            ).fetchone()
    except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable):
        return None
    return str(row[0]) if row else None


def overlay_version(district: str, text: str) -> str:
    """``overlay-<district>+<12 hex of the text's sha256>``."""
    return f"overlay-{district}+{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def insert_overlay(
    conn: psycopg.Connection,
    district: str,
    text: str,
    author: str,
    reason: str,
    parent: str | None,
) -> str:
    version = overlay_version(district, text)
    conn.execute(
        f"INSERT INTO catalogue_versions ({COLS}, district) VALUES"
        " (%s, 'overlay', %s, 'retired', now(), %s, %s, %s, now(), %s)"
        " ON CONFLICT (version) DO NOTHING",
        [
            version,
            Jsonb([{"name": f"{district}.yaml", "text": text}]),
            author,
            reason,
            parent,
            district,
        ],
    )
    return version
