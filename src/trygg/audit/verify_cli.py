"""``trygg audit verify`` and ``trygg audit anchor``: the hash chains of the
trail checked, and their heads written outside the database (trygg.audit.verify).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from trygg.audit.cli_common import connect, settings_for
from trygg.cli_support import ConfigOpt, DatabaseUrlOpt
from trygg.cli_support import fail as _fail


def verify_command(
    table: list[str] = typer.Option([], "--table", help="only these tables (repeatable)"),
    anchor: Path | None = typer.Option(
        None,
        "--anchor",
        help="an anchor file of `trygg audit anchor`: each chain must still reach its head",
    ),
    config: Path | None = ConfigOpt,
    database_url: str | None = DatabaseUrlOpt,
) -> None:
    """Recompute the hash chains; report the first broken link (exit 1) if any.

    With --anchor FILE, also compare each chain with the head recorded in FILE
    outside the database: a wiped or cut-back table, or one rewritten after
    that head, is broken.
    """
    from trygg.audit.verify import AnchorFileError, check_anchor_file, read_anchor_file, verify
    from trygg.store.audit import CHAINED_TABLES

    for t in table:
        if t not in CHAINED_TABLES:
            raise typer.BadParameter(f"{t} is not chained ({', '.join(CHAINED_TABLES)})")
    doc = None
    if anchor is not None:
        try:
            doc = read_anchor_file(anchor)
        except AnchorFileError as exc:
            _fail(str(exc))
    s = settings_for(config, database_url)
    with connect(s.database_url) as conn:
        res = verify(conn, tuple(table) or CHAINED_TABLES)
        if doc is not None and anchor is not None:
            check_anchor_file(conn, res, doc, anchor.name)
            _warn_other_database(conn, doc, anchor)
    _print_verify(res)
    if not res.ok:
        raise typer.Exit(1)


def _print_verify(res: Any) -> None:
    for tr in res.tables:
        if tr.broken is None:
            typer.echo(
                f"{tr.table}: ok, {tr.rows} rows from anchor {tr.anchor};"
                f" head {tr.head_seq} {tr.head_hash[:16]}"
                + (f"; {tr.anchor_file}" if tr.anchor_file else "")
            )
        else:
            typer.echo(f"{tr.table}: BROKEN: {tr.broken}")


def _warn_other_database(conn: Any, doc: dict[str, Any], path: Path) -> None:
    from trygg.store.audit import database_name

    name = database_name(conn)
    if doc.get("database") and name is not None and doc["database"] != name:
        typer.echo(
            f"warning: {path.name} was written for database {doc['database']!r}, this is {name!r}",
            err=True,
        )


def anchor_command(
    out: str = typer.Option(
        ...,
        "--out",
        help="file for the heads, on another machine or medium than the database ('-': stdout)",
    ),
    config: Path | None = ConfigOpt,
    database_url: str | None = DatabaseUrlOpt,
) -> None:
    """Verify the chains and write their heads to a file outside the database.

    `trygg audit verify --anchor FILE` later checks that every chain still
    reaches the head recorded here: removing the last rows, or every row,
    leaves no gap for verify to see on its own. Refuses (exit 1) when a chain
    is broken, or when FILE exists and the database no longer reaches the
    heads it records (it is evidence: move it away first).
    """
    from trygg.audit.verify import (
        AnchorFileError,
        check_anchor_file,
        heads_document,
        read_anchor_file,
        verify,
        write_anchor_file,
    )

    s = settings_for(config, database_url)
    path = None if out == "-" else Path(out)
    previous = None
    if path is not None and path.exists():
        try:
            previous = read_anchor_file(path)
        except AnchorFileError as exc:
            _fail(f"{exc}; not overwriting it")
    with connect(s.database_url) as conn:
        res = verify(conn)
        if previous is not None and path is not None:
            check_anchor_file(conn, res, previous, path.name)
        if not res.ok:
            _print_verify(res)
            _fail("not anchoring a broken chain" + (f"; {path} left as it was" if path else ""))
        doc = heads_document(conn, res, datetime.now(UTC))
    if path is None:
        sys.stdout.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        return
    try:
        write_anchor_file(path, doc)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc}")
    heads = ", ".join(f"{t.table} {t.head_seq} {t.head_hash[:16]}" for t in res.tables)
    typer.echo(f"wrote the heads to {path}: {heads}")
