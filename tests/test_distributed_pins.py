"""The distributed runner's pinned dependencies, and the shape of every Faust, mode and
aiokafka internal that trygg's patches touch or rely on (issue 17, "Pinned
dependencies").

trygg.distributed.worker.faust_patches patches Faust where its at-least-once processing loses
records (docs/distributed.md, "Faust's holes") and reads a few private fields. A new
release can rename, move or re-order any of them without a word: the patch then does
nothing, or breaks the worker, and only a take-over under load shows it. These tests
fail first, naming the patch. Each check reads the installed library, not trygg.

Moving to a newer Faust, mode or aiokafka: change constraints/distributed.txt, read the
library code each failing check names, then run the distributed tests
(tests/test_distributed_*.py, the tansu ones included).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

faust = pytest.importorskip("faust")

from tests.conftest import REPO  # noqa: E402

CONSTRAINTS = REPO / "constraints" / "distributed.txt"


def pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, ver = line.partition("==")
            assert ver, f"{path.name}: {line!r} is not pinned with =="
            out[name.strip()] = ver.strip()
    return out


def src(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


def need(cond: bool, patch: str, what: str) -> None:
    """Fail naming the patch whose premise no longer holds."""
    if not cond:
        pytest.fail(
            f"{patch}: {what}. The patch was written against the versions in "
            f"constraints/distributed.txt; read the changed library code and "
            f"docs/distributed.md before using this version.",
            pytrace=False,
        )


def test_the_installed_set_is_the_pinned_one() -> None:
    wrong = []
    for name, want in pins().items():
        try:
            got = version(name)
        except PackageNotFoundError:
            got = "not installed"
        if got != want:
            wrong.append(f"{name} {got} (pinned {want})")
    assert not wrong, (
        "installed versions differ from constraints/distributed.txt, which the Faust "
        "patches were checked against: " + ", ".join(wrong) + ". Install with "
        "`pip install -c constraints/distributed.txt ...` (scripts/setup does)."
    )


def test_the_pins_hold_faust_and_all_it_pulls_in() -> None:
    """Every distribution faust-streaming needs, transitively, is pinned."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement

    def norm(n: str) -> str:
        return re.sub(r"[-_.]+", "-", n).lower()

    pinned = {norm(n) for n in pins()}
    seen: set[str] = set()
    todo = ["faust-streaming"]
    while todo:
        name = todo.pop()
        if norm(name) in seen:
            continue
        seen.add(norm(name))
        for r in distribution(name).requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    assert seen <= pinned, f"not pinned: {sorted(seen - pinned)}"
    for name in ("faust-streaming", "mode-streaming", "aiokafka"):
        assert norm(name) in pinned


def test_keep_records_across_rebalance_premises() -> None:
    """``_keep_records_across_rebalance``: Faust seeks to the committed offsets and
    then resumes the flow, and resuming clears the agents' queues; the patch replaces
    ``FlowControlEvent.resume`` on the app's instance (its private events) and wraps
    ``Consumer.perform_seek`` to clear first."""
    from faust.tables import recovery
    from faust.transport.consumer import Consumer
    from mode.utils.queues import FlowControlEvent

    patch = "_keep_records_across_rebalance (worker/faust_patches.py)"
    fc = FlowControlEvent()
    need(
        hasattr(fc, "_suspend") and hasattr(fc, "_resume"),
        patch,
        "mode's FlowControlEvent no longer has the _suspend/_resume events",
    )
    body = src(FlowControlEvent.resume)
    need(
        "_suspend.clear()" in body and "_resume.set()" in body,
        patch,
        "FlowControlEvent.resume no longer clears _suspend and sets _resume",
    )
    need(
        "self.clear()" in body,
        patch,
        "FlowControlEvent.resume no longer clears the queues (the patch may be moot)",
    )
    need(callable(getattr(fc, "clear", None)), patch, "FlowControlEvent.clear is gone")
    need(
        inspect.iscoroutinefunction(Consumer.perform_seek)
        and list(inspect.signature(Consumer.perform_seek).parameters) == ["self"],
        patch,
        "Consumer.perform_seek is no longer `async def perform_seek(self)`",
    )
    rec = src(recovery)
    need(
        re.search(r"perform_seek\(\).*?flow_control\.resume\(\)", rec, re.S) is not None,
        patch,
        "faust.tables.recovery no longer seeks (perform_seek) before it resumes the flow",
    )


def test_track_handed_premises() -> None:
    """``_track_handed``: the consumer is built with the conductor's ``on_message`` as
    its callback, and the fetch loop hands each record to that callback."""
    from faust.app.base import App
    from faust.transport.conductor import Conductor
    from faust.transport.consumer import Consumer

    patch = "_track_handed (worker/faust_patches.py)"
    need(
        "callback=self.topics.on_message" in src(App._new_consumer),
        patch,
        "App._new_consumer no longer passes topics.on_message as the consumer's callback",
    )
    need(
        "self.on_message = self._compile_message_handler()" in src(Conductor.__init__),
        patch,
        "Conductor.on_message is no longer a plain attribute set at construction",
    )
    drain = src(Consumer._drain_messages)
    need(
        "callback = self.callback" in drain and "callback(message)" in drain,
        patch,
        "Consumer._drain_messages no longer hands each record to self.callback",
    )


def test_fetch_wait_patch_premises() -> None:
    """``_patch_fetch_wait`` (tests against tansu only): Faust builds the aiokafka
    consumer in ``_create_worker_consumer``, and aiokafka reads its private
    ``_fetch_max_wait_ms`` when it starts, not in the constructor."""
    import aiokafka
    from faust.transport.drivers import aiokafka as drv

    patch = "_patch_fetch_wait (worker/faust_patches.py)"
    fn = getattr(drv.AIOKafkaConsumerThread, "_create_worker_consumer", None)
    need(fn is not None, patch, "AIOKafkaConsumerThread._create_worker_consumer is gone")
    need(
        list(inspect.signature(fn).parameters) == ["self", "transport"],
        patch,
        "_create_worker_consumer(self, transport) changed its signature",
    )
    need(
        "self._fetch_max_wait_ms = fetch_max_wait_ms" in src(aiokafka.AIOKafkaConsumer.__init__),
        patch,
        "aiokafka's consumer no longer keeps fetch_max_wait_ms as _fetch_max_wait_ms",
    )
    need(
        "self._fetch_max_wait_ms" in src(aiokafka.AIOKafkaConsumer.start),
        patch,
        "aiokafka no longer reads _fetch_max_wait_ms when the consumer starts",
    )


def test_what_the_worker_relies_on() -> None:
    """The rest the worker uses: the sink's batching (``take_events`` waits for a full
    batch when ``within`` is 0, hence ``SINK_WAIT_S``), the consumer's seek, earliest
    offsets, the committed offsets it sought to, partition assignment, and Faust's
    rebalance state."""
    from faust.app.base import App
    from faust.streams import Stream
    from faust.transport.consumer import Consumer

    need(
        "if within else None" in src(Stream.take_events),
        "SINK_WAIT_S (worker/app.py)",
        "Stream.take_events no longer treats within=0 as 'wait for a full batch' "
        "(the floor may be moot; check how it batches now)",
    )
    for name in ("seek", "earliest_offsets"):
        need(
            inspect.iscoroutinefunction(getattr(Consumer, name, None)),
            "Worker._read_again / Worker._gone (worker/offsets.py)",
            f"Consumer.{name} is no longer a coroutine function",
        )
    from faust.assignor.partition_assignor import PartitionAssignor

    need(
        callable(getattr(PartitionAssignor, "assigned_actives", None)),
        "Worker._owned (worker/base.py)",
        "PartitionAssignor.assigned_actives is gone",
    )
    # the module's text: Consumer.perform_seek itself is wrapped once a worker is built
    from faust.transport import consumer as consumer_module

    seek = re.search(
        r"async def perform_seek\(self\).*?\n    (?:async )?def ", src(consumer_module), re.S
    )
    need(
        seek is not None
        and "self._committed_offset.update(" in seek.group(0)
        and "self._committed_offset = defaultdict(" in src(Consumer.__init__),
        "Worker._committed (worker/offsets.py)",
        "Consumer.perform_seek no longer keeps the offsets it sought to in _committed_offset",
    )
    need(
        "self.rebalancing = True" in src(App.on_rebalance_start)
        and "self.rebalancing = False" in src(App.on_rebalance_end),
        "Worker._ready (worker/base.py)",
        "App.rebalancing is no longer set at a rebalance's start and end",
    )
    from faust.types.settings import Settings as FaustSettings

    need(
        isinstance(getattr(FaustSettings, "stream_wait_empty", None), property),
        "faust_settings (worker/app.py)",
        "the stream_wait_empty setting is gone",
    )


def test_write_before_commit_premises() -> None:
    """``_write_before_commit`` and the revocation hook of ``Worker`` (the rules
    states written once per commit): every commit goes through
    ``Consumer._commit_tps``, which picks the offsets before its first ``await`` and
    flushes the producer before committing them; a revocation calls the table
    manager's ``on_partitions_revoked`` before it flushes the producer, and drops
    the revoked partitions' acknowledgements uncommitted; a stopping consumer commits."""
    from faust.app.base import App
    from faust.tables.manager import TableManager
    from faust.transport.consumer import Consumer

    patch = "_write_before_commit (worker/faust_patches.py)"
    fn = getattr(Consumer._commit_tps, "_trygg_orig", Consumer._commit_tps)
    need(
        inspect.iscoroutinefunction(fn)
        and list(inspect.signature(fn).parameters) == ["self", "tps", "start_new_transaction"],
        patch,
        "Consumer._commit_tps is no longer "
        "`async def _commit_tps(self, tps, start_new_transaction)`",
    )
    body = src(fn)
    first_await = body.find("await ")
    need(
        0 <= body.find("self._filter_committable_offsets(tps)") < first_await,
        patch,
        "Consumer._commit_tps no longer picks the offsets before its first await",
    )
    commit_offsets = getattr(Consumer._commit_offsets, "_trygg_orig", Consumer._commit_offsets)
    offsets = src(commit_offsets)
    need(
        0 <= offsets.find("await self.app.producer.flush()") < offsets.find("await self._commit("),
        patch,
        "Consumer._commit_offsets no longer flushes the producer before committing",
    )
    need(
        list(inspect.signature(commit_offsets).parameters)
        == ["self", "offsets", "start_new_transaction"],
        patch,
        "Consumer._commit_offsets is no longer "
        "`async def _commit_offsets(self, offsets, start_new_transaction=True)`",
    )
    # the commit awaits what the buffer held: its pending queue, a FIFO asyncio.Queue
    from faust.transport.producer import ProducerBuffer

    need(
        "self.pending = asyncio.Queue()" in src(ProducerBuffer.__post_init__)
        and isinstance(getattr(asyncio.Queue(), "_queue", None), collections.deque),
        patch,
        "ProducerBuffer.pending is no longer an asyncio.Queue over a deque",
    )
    need(
        "except asyncio.TimeoutError:" in src(ProducerBuffer.flush_atmost),
        patch,
        "ProducerBuffer.flush_atmost no longer gives up after a timeout (the wait may be moot)",
    )
    need(
        "self._commit_tps(" in src(Consumer.force_commit)
        and "self.force_commit(" in src(Consumer.commit),
        patch,
        "Consumer.commit no longer goes through force_commit -> _commit_tps",
    )
    need(
        "commit_and_end_transactions()" in src(Consumer.on_stop),
        patch,
        "a stopping consumer no longer commits (the states kept would be lost)",
    )
    revoked = src(App._on_partitions_revoked)
    need(
        0 <= revoked.find("self.tables.on_partitions_revoked") < revoked.find("_producer_flush"),
        patch,
        "App._on_partitions_revoked no longer calls tables.on_partitions_revoked "
        "before it flushes the producer",
    )
    need(
        not inspect.iscoroutinefunction(TableManager.on_partitions_revoked)
        and list(inspect.signature(TableManager.on_partitions_revoked).parameters)
        == ["self", "revoked"],
        patch,
        "TableManager.on_partitions_revoked is no longer "
        "`def on_partitions_revoked(self, revoked)`",
    )
    from faust.tables.table import Table

    key_set = src(Table.on_key_set)
    need(
        "self.send_changelog(self.partition_for_key(key), key, value)" in key_set,
        patch,
        "Table.on_key_set no longer sends the changelog record as "
        "send_changelog(partition, key, value): Worker.flush_rules_state writes as it did",
    )
    need(
        list(inspect.signature(Table.send_changelog).parameters)[:4]
        == ["self", "partition", "key", "value"],
        patch,
        "Table.send_changelog(partition, key, value, ...) changed its signature",
    )


def test_roomy_producer_buffer_premises() -> None:
    """``_roomy_producer_buffer``: Faust's conductor holds every stream while the
    producer buffer holds more than its ``max_messages`` (read per call, so an
    instance value counts), and the app's producer owns that buffer."""
    from faust.transport.conductor import ConductorCompiler
    from faust.transport.producer import ProducerBuffer

    patch = "_roomy_producer_buffer (worker/faust_patches.py)"
    need(
        "self.size > self.max_messages" in src(ProducerBuffer.wait_until_ebb),
        patch,
        "ProducerBuffer.wait_until_ebb no longer compares its size with self.max_messages",
    )
    need(
        "app.producer.buffer.wait_until_ebb" in src(ConductorCompiler.build)
        and "await wait_until_producer_ebb()" in src(ConductorCompiler.build),
        patch,
        "the conductor no longer waits on the producer buffer's wait_until_ebb per record",
    )
    from trygg.distributed.worker.faust_patches import PRODUCER_BUFFER_MAX, _roomy_producer_buffer

    app = faust.App("trygg-pins-buffer", broker="kafka://127.0.0.1:1")
    _roomy_producer_buffer(app)
    need(
        app.producer.buffer.max_messages == PRODUCER_BUFFER_MAX
        and ProducerBuffer.max_messages != PRODUCER_BUFFER_MAX,
        patch,
        "the buffer's limit is not per instance any more",
    )


def test_rebalance_complete_premises() -> None:
    """``Worker`` takes a rebalance's new partitions in (rule timers, the partitions'
    clocks) on ``app.on_rebalance_complete`` (``TimerScan.take_partitions``): Faust
    sends it once the tables are recovered and before the streams resume, on both of
    its paths (with and without a recovery)."""
    from faust.tables.recovery import Recovery

    patch = "on_rebalance_complete (worker/timer_scan.py, take_partitions)"
    for fn in (Recovery.on_recovery_completed, Recovery._resume_streams):
        body = src(fn)
        sent = body.find("await self.app.on_rebalance_complete.send()")
        if sent < 0:
            sent = body.find("await app.on_rebalance_complete.send()")
        need(
            0 <= sent < body.find("flow_control.resume()"),
            patch,
            f"Recovery.{fn.__name__} no longer sends on_rebalance_complete before it "
            "resumes the streams",
        )
