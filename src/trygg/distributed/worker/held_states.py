"""The rules states held between offsets commits, and their write at each commit.

The rules agent keeps each resident's newest state here rather than writing it to
the table per event; ``flush_rules_state`` writes them all at the start of every
offsets commit and of a revocation (``faust_patches._write_before_commit``), so a
resident's events between two commits cost one changelog record, and the committed
offsets never run ahead of the states in the changelog (docs/distributed.md, "The
rules state: written once per commit"). Every reader of the rules table (the steps,
the take-over floor, the timer index) reads through ``rules_state`` /
``rules_items``.
"""

from __future__ import annotations

from trygg.distributed.worker.base import WorkerBase


class HeldRulesStates(WorkerBase):
    """Each resident's newest rules state, not yet in the table (``_unwritten``)."""

    def rules_state(self, resident: str) -> str | None:
        """The resident's newest rules state: one not yet written to the table, else
        the table's."""
        kept = self._unwritten.get(resident)
        return kept[1] if kept is not None else self.rules_table.get(resident)

    def rules_items(self) -> list[tuple[str, str]]:
        """Every resident's newest rules state (the table's, and those not yet in it)."""
        items = dict(self.rules_table.items())
        items.update((rid, st) for rid, (_, st) in self._unwritten.items())
        return list(items.items())

    def flush_rules_state(self) -> None:
        """Write the rules states kept since the last commit to the table (so to its
        changelog, through Faust's producer buffer): at the start of every offsets
        commit and of a revocation (``_write_before_commit``). A resident's events
        between two commits cost one changelog record, not one each; the committed
        offsets never run ahead of the states in the changelog."""
        if not self._unwritten:
            return
        items, self._unwritten = self._unwritten, {}
        table = self.rules_table
        # ``table[rid] = state`` takes the changelog partition from the record being
        # processed (Faust's current event), which a commit has not: the value goes
        # into the store (memory://) and to the resident's own partition as Faust's
        # ``Table.on_key_set`` sends it
        for rid, (partition, state) in items.items():
            table.data[rid] = state
            table.send_changelog(partition, rid, state)
