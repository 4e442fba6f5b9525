"""Verification of the hash-chained trail (``trygg audit verify``).

Each chained table is walked in chain order from its newest anchor (the
genesis, or where retention last cut the chain). A row is sound when

1. its chain position follows the previous one (a gap: rows were removed),
2. its ``prev_hash`` is the previous row's ``hash`` (else rows were removed,
   inserted or reordered), and
3. its ``hash`` equals the hash recomputed from its current content (else the
   row was changed).

The first broken link of each table is reported, naming the row. A removed
*last* row leaves no gap behind it; compare the printed head (position and
hash) with one recorded earlier to detect that (docs/auditing.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from trygg.store.audit import CHAINED_TABLES, anchors, chain_rows


@dataclass
class Break:
    table: str
    row_id: int
    chain_seq: int | None
    problem: str

    def __str__(self) -> str:
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
