"""Care plans as versions: the residents' stored overrides as one YAML file.

Loading the registry (trygg.store.registry) records the stored care plans as a
version of kind ``care_plans`` in the same transaction when they changed, so
their history reads like the catalogue's (trygg rules history).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg
import yaml

from trygg.store.version_rows import add_history, lock, set_status, with_status
from trygg.store.versions import CARE_PLANS, insert


def care_plans_file(overrides: dict[str, dict[str, Any]]) -> tuple[str, str, str]:
    """``(version, name, text)`` of a set of care plans (resident -> overrides).

    The text is YAML, one resident a key in id order, so that two versions
    diff line by line; the version is ``care-plans+<12 hex of its sha256>``.
    """
    plans = {r: overrides[r] for r in sorted(overrides) if overrides[r]}
    text = yaml.safe_dump(
        json.loads(json.dumps(plans, default=str)), sort_keys=True, allow_unicode=True
    )
    if not plans:
        text = "{}\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"care-plans+{digest}", "care-plans.yaml", text


def record_care_plans(conn: psycopg.Connection, *, author: str, reason: str) -> str | None:
    """Record the stored care plans as a version if they differ from the active
    one (call inside the transaction that changed them). Returns the new version."""
    rows = conn.execute(
        "SELECT id, overrides FROM residents WHERE overrides <> '{}'::jsonb"
    ).fetchall()
    version, name, text = care_plans_file({str(i): dict(o) for i, o in rows})
    lock(conn)
    prev = with_status(conn, CARE_PLANS, "active")
    if prev == version or (prev is None and not rows):
        return None
    insert(conn, version, CARE_PLANS, [(name, text)], author, reason, prev)
    if prev is not None:
        set_status(conn, prev, "retired")
    set_status(conn, version, "active")
    add_history(conn, version, CARE_PLANS, "care_plans_changed", author, reason, prev)
    return version
