"""Verification of the hash-chained trail (``trygg audit verify``).

Each chained table is walked in chain order from its newest anchor (the
genesis, or where retention last cut the chain). A row is sound when

1. its chain position follows the previous one (a gap: rows were removed),
2. its ``prev_hash`` is the previous row's ``hash`` (else rows were removed,
   inserted or reordered), and
3. its ``hash`` equals the hash recomputed from its current content (else the
   row was changed).

The first broken link of each table is reported, naming the row. A removed
*last* row leaves no gap behind it, and a wiped table is an empty chain: both
are found by comparing with heads recorded outside the database earlier
(``trygg audit anchor`` writes them to a file, ``trygg audit verify --anchor
FILE`` compares): the head in the file must still be in the chain, with the
same hash, or have been removed by retention behind an anchor.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from trygg.store.audit import CHAINED_TABLES, anchors, chain_row_at, chain_rows, database_name

ANCHOR_FORMAT = "trygg-chain-heads/1"


@dataclass
class Break:
    table: str
    row_id: int | None
    chain_seq: int | None
    problem: str

    def __str__(self) -> str:
        if self.row_id is None:
            return f"{self.table}: {self.problem}"
        pos = f" (chain position {self.chain_seq})" if self.chain_seq is not None else ""
        return f"{self.table}: row id {self.row_id}{pos}: {self.problem}"


@dataclass
class TableResult:
    table: str
    rows: int = 0
    anchor: int = 0
    head_seq: int = 0
    head_hash: str = ""
    broken: Break | None = None
    # how the chain compares with an anchor file (verify --anchor), when it does
    anchor_file: str = ""


@dataclass
class VerifyResult:
    tables: list[TableResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.broken is None for t in self.tables)

    @property
    def first_break(self) -> Break | None:
        for t in self.tables:
            if t.broken is not None:
                return t.broken
        return None


def verify_table(conn: psycopg.Connection[Any], table: str) -> TableResult:
    res = TableResult(table)
    anchor_list = anchors(conn, table)
    expected_seq: int | None = None
    prev_hash: bytes | None = None
    prev_id: int | None = None
    for row in chain_rows(conn, table):
        res.rows += 1
        if res.broken is not None:
            continue  # count the rows, report the first break only
        if row.chain_seq is None or row.hash is None:
            res.broken = Break(
                table,
                row.id,
                None,
                "not in the chain (no position or hash: written with the chain trigger disabled)",
            )
            continue
        if expected_seq is None:
            # start from the newest anchor before the first remaining row
            start = [a for a in anchor_list if a.chain_seq < row.chain_seq]
            if not start:
                res.broken = Break(
                    table,
                    row.id,
                    row.chain_seq,
                    "no anchor before the first row: the start of the chain is missing",
                )
                continue
            a = start[-1]
            res.anchor = a.chain_seq
            expected_seq, prev_hash = a.chain_seq + 1, a.hash
        if row.chain_seq != expected_seq:
            after = f"after row id {prev_id}" if prev_id is not None else "at the start"
            res.broken = Break(
                table,
                row.id,
                row.chain_seq,
                f"chain positions {expected_seq}..{row.chain_seq - 1} are missing {after}:"
                " rows were deleted",
            )
            continue
        if row.prev_hash != prev_hash:
            res.broken = Break(
                table,
                row.id,
                row.chain_seq,
                "prev_hash does not match the hash of the row before it"
                + (f" (row id {prev_id})" if prev_id is not None else " (the anchor)")
                + ": rows were removed, inserted or reordered",
            )
            continue
        if row.recomputed != row.hash:
            res.broken = Break(
                table,
                row.id,
                row.chain_seq,
                "content does not match its hash: the row was changed after it was written",
            )
            continue
        expected_seq, prev_hash, prev_id = row.chain_seq + 1, row.hash, row.id
        res.head_seq, res.head_hash = row.chain_seq, row.hash.hex()
    if res.rows == 0 and anchor_list:
        res.anchor = anchor_list[-1].chain_seq
        res.head_seq, res.head_hash = anchor_list[-1].chain_seq, anchor_list[-1].hash.hex()
    return res


def verify(conn: psycopg.Connection[Any], tables: tuple[str, ...] = CHAINED_TABLES) -> VerifyResult:
    return VerifyResult([verify_table(conn, t) for t in tables])


# ------------------------------------------------------------------ anchor files


class AnchorFileError(ValueError):
    """The anchor file cannot be read as one written by ``trygg audit anchor``."""


def heads_document(
    conn: psycopg.Connection[Any], res: VerifyResult, now: datetime
) -> dict[str, Any]:
    """The heads of verified chains, as ``trygg audit anchor`` writes them."""
    return {
        "format": ANCHOR_FORMAT,
        "written_at": now.isoformat(),
        "database": database_name(conn),
        "heads": {
            t.table: {"seq": t.head_seq, "hash": t.head_hash, "rows": t.rows, "anchor": t.anchor}
            for t in res.tables
        },
    }


def write_anchor_file(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically (a crash leaves the old file or the
    new one, never half of one) and durably (fsync'ed, as is the directory)."""
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    directory = path.resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_anchor_file(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AnchorFileError(f"{path}: cannot read it: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != ANCHOR_FORMAT:
        raise AnchorFileError(f"{path}: not an anchor file of trygg audit anchor ({ANCHOR_FORMAT})")
    heads = doc.get("heads")
    if not isinstance(heads, dict):
        raise AnchorFileError(f"{path}: it has no heads")
    for table, h in heads.items():
        try:
            int(h["seq"])
            bytes.fromhex(h["hash"])
        except (KeyError, TypeError, ValueError):
            raise AnchorFileError(
                f"{path}: the head of {table} is not a position and a hash"
            ) from None
    return doc


def check_anchor_file(
    conn: psycopg.Connection[Any], res: VerifyResult, doc: dict[str, Any], name: str
) -> None:
    """Compare verified chains with the heads of an anchor file; a chain that
    no longer reaches its recorded head, or reaches it with another hash, is
    broken (the table was wiped, rewound or rewritten)."""
    written = doc.get("written_at", "?")
    for tr in res.tables:
        if tr.broken is not None:
            continue
        h = doc["heads"].get(tr.table)
        if h is None:
            tr.anchor_file = f"not in {name}"
            continue
        seq, expected = int(h["seq"]), str(h["hash"])
        where = f"{name} (written {written}) has its head at chain position {seq}"
        if tr.head_seq < seq:
            missing = seq - tr.head_seq
            what = (
                "the table was wiped"
                if tr.rows == 0
                else f"the chain was cut back to position {tr.head_seq}"
            )
            tr.broken = Break(
                tr.table,
                None,
                tr.head_seq,
                f"{where}, the table ends at {tr.head_seq}: {missing} rows at the end are"
                f" missing, {what}",
            )
            continue
        row = chain_row_at(conn, tr.table, seq)
        if row is not None:
            if row[1] is None or row[1].hex() != expected:
                tr.broken = Break(
                    tr.table,
                    row[0],
                    seq,
                    f"not the row whose hash {where}: the chain was rewritten from there on",
                )
            else:
                tr.anchor_file = f"reaches the head in {name} ({seq}, {written})"
            continue
        anchor_list = anchors(conn, tr.table)
        exact = [a for a in anchor_list if a.chain_seq == seq]
        if exact and exact[0].hash.hex() != expected:
            tr.broken = Break(
                tr.table,
                None,
                seq,
                f"the anchor at chain position {seq} does not have the hash {where}",
            )
        elif exact and seq == 0:
            tr.anchor_file = f"reaches the head in {name} (the start of the chain, {written})"
        elif exact or any(a.chain_seq > seq for a in anchor_list):
            tr.anchor_file = f"the head in {name} ({seq}) was since removed by retention"
        else:
            tr.broken = Break(
                tr.table,
                None,
                seq,
                f"{where}, which is neither in the table nor behind a retention anchor",
            )
