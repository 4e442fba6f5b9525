"""Trygg's patches of Faust 0.15 and aiokafka internals, in one place.

Each closes a way Faust's at-least-once processing loses or delays records, or
lets the worker hook into its commits (docs/distributed.md, "Faust's holes", "The
rules state: written once per commit"). They touch private code of the versions
pinned in constraints/distributed.txt; tests/test_distributed_pins.py checks the
shape of everything they touch and fails naming the patch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import faust

from trygg import logs


def _patch_fetch_wait(ms: int) -> None:
    """Faust 0.15 passes fetch_max_wait_ms=1500 to aiokafka; tansu only answers a
    waiting fetch when the wait is over, so tests lower it (TEST ONLY)."""
    from faust.transport.drivers import aiokafka as drv

    orig = drv.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(orig, "_trygg_wait", None) == ms:
        return
    base = getattr(orig, "_trygg_orig", orig)

    def create(self: Any, transport: Any) -> Any:
        consumer = base(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    create._trygg_wait = ms  # type: ignore[attr-defined]
    create._trygg_orig = base  # type: ignore[attr-defined]
    drv.AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


def _keep_records_across_rebalance(app: faust.App) -> None:
    """Clear the agents' queues *before* seeking to the committed offsets, not after.

    After a rebalance Faust 0.15 seeks every partition to its committed offset and
    then resumes flow, and resuming clears every agent's queue. Records the fetcher
    delivered between the seek and the resume are dropped while the consumer's read
    position has already moved past them, so no agent ever sees them (measured in the
    take-over test: 38 consecutive events of one partition never reached the rules or
    the sink, and the sink's checkpoint then moved past them). Clearing first and
    then seeking loses nothing: whatever was queued is fetched again from the
    committed offset, and every step here is idempotent (docs/distributed.md).
    Revocation still clears the queues (Faust's own ``flow_control.clear()``)."""
    from faust.transport.consumer import Consumer

    fc = app.flow_control

    def resume() -> None:
        fc._suspend.clear()
        fc._resume.set()

    fc.resume = resume  # type: ignore[method-assign]
    if getattr(Consumer.perform_seek, "_trygg", False):
        return
    seek = Consumer.perform_seek

    async def perform_seek(self: Any) -> None:
        self.app.flow_control.clear()
        await seek(self)

    perform_seek._trygg = True  # type: ignore[attr-defined]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]


def _write_before_commit(app: faust.App, flush: Callable[[], None]) -> None:
    """Call ``flush`` (sync) at the start of every offsets commit, before Faust picks
    the offsets to commit.

    The rules agent keeps each resident's newest state in memory and writes it to
    its table (so to the changelog) only here (``Worker.flush_rules_state``): every
    commit, Faust's timer's or a rebalance's, goes through ``Consumer._commit_tps``,
    which computes the committable offsets before its first ``await`` and then
    flushes the producer before committing them. Faust's flush is not enough (it
    gives up on the buffer after 0.1 s without a send), so ``_commit_offsets`` also
    awaits every record queued when the states were written. So the states written
    here, which took in every record acknowledged so far, reach the changelog before
    the offsets they guard are committed (docs/distributed.md, "The rules state,
    written once per commit")."""
    from faust.transport.consumer import Consumer

    hooks = app.__dict__.setdefault("_trygg_before_commit", [])
    hooks.append(flush)
    if getattr(Consumer._commit_tps, "_trygg", False):
        return
    commit_tps = Consumer._commit_tps
    commit_offsets = Consumer._commit_offsets

    async def _commit_tps(self: Any, tps: Any, start_new_transaction: bool) -> bool:
        for fn in self.app.__dict__.get("_trygg_before_commit", ()):
            fn()
        # What the table writes just queued in the producer buffer (a FIFO): the
        # states' changelog records, and whatever was queued before them.
        self.__dict__["_trygg_queued"] = list(self.app.producer.buffer.pending._queue)
        return await commit_tps(self, tps, start_new_transaction)

    async def _commit_offsets(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        # Faust's own flush before the commit gives up on the buffer after 0.1 s
        # without a send (``ProducerBuffer.flush_atmost``), which a starved worker
        # on one-record produce requests exceeds: the offsets were then committed
        # with the states still queued, and a kill lost them (events skipped for good
        # by the new owner, 2026-12-07). So the commit waits for each of them to be
        # produced and acknowledged; if one fails or takes longer than
        # COMMIT_SEND_WAIT_S, nothing is committed this time.
        queued = self.__dict__.pop("_trygg_queued", None)
        if queued:
            _, late = await asyncio.wait(queued, timeout=COMMIT_SEND_WAIT_S)
            if late or any(f.cancelled() or f.exception() is not None for f in queued):
                # not committed: the records are read again and each step is idempotent
                logs.get("trygg.worker").warning(
                    "offsets not committed: the rules states were not all sent",
                    unsent=len(late),
                )
                return False
        return await commit_offsets(self, offsets, start_new_transaction=start_new_transaction)

    _commit_tps._trygg = True  # type: ignore[attr-defined]
    _commit_tps._trygg_orig = commit_tps  # type: ignore[attr-defined]
    _commit_offsets._trygg_orig = commit_offsets  # type: ignore[attr-defined]
    Consumer._commit_tps = _commit_tps  # type: ignore[method-assign]
    Consumer._commit_offsets = _commit_offsets  # type: ignore[method-assign]


COMMIT_SEND_WAIT_S = 30.0  # how long a commit waits for the rules states to be sent
PRODUCER_BUFFER_MAX = 20_000  # records; Faust's is 100


def _roomy_producer_buffer(app: faust.App, most: int = PRODUCER_BUFFER_MAX) -> None:
    """Let Faust's producer buffer hold ``most`` records before it holds the streams.

    Table writes are synchronous, so Faust queues their changelog records in a
    buffer and, once it holds more than ``max_messages`` (100), its conductor stops
    handing records to every agent until 100 have been sent. The rules states are
    written all at once at each offsets commit (``_write_before_commit``): a burst of
    one record per resident with events since the last commit, at a live rate a few
    hundred, which held every alarm behind it while tansu took them one produce
    request each (the alert latency's p99, bench/RESULTS.md 2026-12-07). The burst is
    bounded by the residents of the worker's partitions (~2.5 KB each: 20,000 is
    ~50 MB at most), and the commit still waits for all of it (Faust flushes the
    producer before it commits the offsets), so nothing is committed early."""
    app.producer.buffer.max_messages = most


class Handed:
    """Per topic partition, the offset of the last record the consumer handed to the
    agents' queues (Faust's conductor), and whether one is being handed right now."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, int], int] = {}
        self.inflight: set[tuple[str, int]] = set()

    def get(self, topic: str, partition: int) -> int | None:
        """The last offset handed over (None: none yet, or one is on its way)."""
        tp = (topic, partition)
        return None if tp in self.inflight else self.last.get(tp)

    def clear(self) -> None:
        self.last.clear()


def _track_handed(app: faust.App) -> Handed:
    """Wrap the conductor's ``on_message`` (the consumer's callback, taken when the
    consumer is built) to note what the consumer handed to the agents. A record that
    was handed over and that an idle agent never received was lost on the way
    (``Worker.check_tails``); the consumer's own read offset cannot say that, as it
    is also the next offset to read after a seek."""
    handed = Handed()
    conductor = app.topics
    deliver = conductor.on_message

    async def on_message(message: Any) -> None:
        tp = (message.topic, message.partition)
        handed.inflight.add(tp)
        try:
            await deliver(message)
        finally:
            handed.inflight.discard(tp)
            handed.last[tp] = message.offset

    conductor.on_message = on_message
    return handed
