"""Spool records the database cannot store, as dead letters.

A record the database refuses (``POISON``) would fail the same way on every
try; trygg.store.spooled isolates it and stores it as a dead letter instead,
as it does a spool line that cannot be read at all. Spool records are plain
JSON-able dicts (``spooled.Record``).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import psycopg

from trygg.model import DeadLetter

# What a record that PostgreSQL (or the driver) cannot take raises: a value it
# cannot hold (NUL in text, a number or time out of range: SQLSTATE class 22),
# a constraint it breaks (class 23), text Python cannot encode (a lone
# surrogate), or a record of the wrong shape. Such a record is poison: it will
# fail the same way on every try, so it is isolated instead of retried.
# Anything else (the server gone, a missing table) is the database's state,
# not the data's, and is retried.
POISON: tuple[type[BaseException], ...] = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    ValueError,  # UnicodeEncodeError included
    TypeError,
    KeyError,
    OverflowError,
)


def _clean(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL and lone surrogates escaped."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def poison_letter(record: dict[str, Any], error: BaseException) -> DeadLetter:
    """A record the database refused, as a dead letter: the record's JSON
    (ASCII, so any text survives) and the database's reason."""
    raw = json.dumps(record, ensure_ascii=True, default=str, sort_keys=True).encode()
    if isinstance(error, KeyError):
        reason = f"the record has no field {error}"
    else:
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
    device = record.get("d") if record.get("op") == "ev" else record.get("device")
    rx = record.get("rx")
    try:
        received = datetime.fromisoformat(rx) if isinstance(rx, str) else None
    except ValueError:
        received = None
    return DeadLetter(
        _clean(f"spool/{record.get('op', '?')}"),
        raw[: 64 * 1024],
        _clean(f"stored from the spool: the database refused this record: {reason[:300]}"),
        received or datetime.now(UTC),
        _clean(device) if isinstance(device, str) else None,
    )


def unreadable_letter(r: dict[str, Any]) -> DeadLetter:
    """A spool line that is not JSON (a damaged disk, an old bug) as a dead letter."""
    return DeadLetter(
        "spool/unreadable",
        base64.b64decode(r["raw"]),
        _clean(f"a spool line that could not be read: {r['error']}"),
        datetime.now(UTC),
        None,
    )
