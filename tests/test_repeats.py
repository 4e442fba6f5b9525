"""trygg.repeats: repeated events as one line per key and minute, on a fake clock;
and trygg.logs: the standard library's records through structlog, rate-limited."""

from __future__ import annotations

import io
import json
import logging
import sys
import warnings
from typing import Any

import pytest

from trygg import logs
from trygg.repeats import OTHER, Repeated, RepeatLimiter, RepeatLog, shape


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_first_in_full_then_one_count_a_minute_under_a_steady_stream() -> None:
    clock = Clock()
    lim = RepeatLimiter(60, clock=clock)
    full = 0
    reports: list[Repeated] = []
    for _ in range(240):  # four a second for a minute
        full += lim.hit("a")
        clock.t += 0.25
        reports += lim.due()
    assert full == 1
    assert reports == [Repeated("a", 240, 60.0)]
    for _ in range(240):  # the next minute: no line in full, one count
        full += lim.hit("a")
        clock.t += 0.25
        reports += lim.due()
    assert full == 1
    assert [r.count for r in reports] == [240, 240]


def test_a_single_occurrence_gives_no_count_and_a_quiet_key_is_forgotten() -> None:
    clock = Clock()
    lim = RepeatLimiter(60, clock=clock)
    assert lim.hit("a") is True
    clock.t += 61
    assert lim.due() == []  # nothing was held back
    assert len(lim) == 0
    assert lim.hit("a") is True  # so the next one is logged in full again


def test_a_count_window_with_no_occurrence_ends_the_key() -> None:
    clock = Clock()
    lim = RepeatLimiter(60, clock=clock)
    lim.hit("a")
    lim.hit("a")
    clock.t += 60
    assert lim.due() == [Repeated("a", 2, 60.0)]
    clock.t += 60
    assert lim.due() == []
    assert lim.hit("a") is True


def test_keys_are_counted_apart_and_not_before_their_minute() -> None:
    clock = Clock()
    lim = RepeatLimiter(60, clock=clock)
    assert lim.hit(("bed-1", "not JSON")) and lim.hit(("bed-2", "not JSON"))
    assert lim.hit(("bed-1", "unknown device")) is True
    for _ in range(3):
        lim.hit(("bed-1", "not JSON"))
    clock.t += 59.9
    assert lim.due() == []
    clock.t += 0.1
    assert lim.due() == [Repeated(("bed-1", "not JSON"), 4, pytest.approx(60.0))]


def test_keys_beyond_the_limit_are_folded_into_one_count() -> None:
    clock = Clock()
    lim = RepeatLimiter(60, clock=clock, max_keys=3)
    assert [lim.hit(k) for k in "abcdef"] == [True, True, True, False, False, False]
    lim.hit("a")
    lim.hit("g")
    assert len(lim) == 4  # a, b, c and OTHER
    clock.t += 60
    got = {r.key: r.count for r in lim.due()}
    assert got == {"a": 2, OTHER: 4}


def test_flush_gives_everything_held_back_at_exit() -> None:
    clock = Clock()
    lim = RepeatLimiter(60, clock=clock)
    lim.hit("a")
    lim.hit("a")
    lim.hit("b")
    clock.t += 5
    assert lim.flush() == [Repeated("a", 2, 5.0)]
    assert len(lim) == 0


def test_shape_leaves_out_numbers_and_quoted_names() -> None:
    assert shape("event.time is 0:05:02.123456 old (limit 0:05:00)") == (
        "event.time is N old (limit N)"
    )
    assert shape("event[17].type: Input should be 'a', 'b' or 'c'") == (
        "event[N].type: Input should be '...'"
    )
    assert shape("unknown device 'x-1': register it") == "unknown device '...': register it"
    assert shape("payload of 1,234,567 bytes exceeds the limit of 262144") == (
        "payload of N bytes exceeds the limit of N"
    )


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((level, event, kw))


def test_repeat_log_says_device_reason_and_count_never_the_payload() -> None:
    clock = Clock()
    rec = Recorder()
    dl = RepeatLog(rec, clock=clock)
    start = clock.t
    for i in range(1234):
        dl.note("bed-1", f"not JSON: unexpected character: line 1 column {i % 7 + 1}")
        clock.t += 0.01
    dl.note("bed-2", "unknown device 'bed-2': register it before it publishes")
    dl.flush()
    assert len(rec.lines) == 2  # each first occurrence in full, no count yet
    clock.t = start + 60
    dl.flush()
    assert len(rec.lines) == 3
    level, event, kw = rec.lines[-1]
    assert level == "info"
    assert event == (
        "dead letters: device bed-1, reason not JSON: unexpected character: "
        "line N column N: 1,234 in the last 60 s"
    )
    assert kw == {
        "device": "bed-1",
        "reason": "not JSON: unexpected character: line N column N",
        "count": 1234,
        "seconds": 60,
    }


def _capture_logs(monkeypatch: pytest.MonkeyPatch, fmt: str = "json") -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    logs.configure(fmt, "INFO", repeat_period=60)
    return buf


def test_library_lines_and_warnings_are_json_and_repeats_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    buf = _capture_logs(monkeypatch)
    try:
        pool = logging.getLogger("psycopg.pool")
        for i in range(50):
            pool.warning("error connecting in %r: %s", "pool-1", f"refused\n\tIs it up? {i}")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            # pytest records warnings in each test's own catch_warnings: take them
            # over again inside this block (as a fresh process does at start)
            logging.captureWarnings(False)
            logging.captureWarnings(True)
            warnings.warn("a library's warning", UserWarning, stacklevel=1)
        try:
            raise ZeroDivisionError("x")
        except ZeroDivisionError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        # A library's bad format string: said in JSON (through trygg's handler only,
        # not pytest's, which would raise).
        bad = logging.getLogger("lib.bad")
        bad.propagate = False
        bad.handlers = [h for h in logging.getLogger().handlers if type(h).__name__ == "_Handler"]
        bad.info("bad %d", "format")
        logs.get("trygg.test").info("own line", n=1)
        logs.flush_repeated(everything=True)
    finally:
        bad = logging.getLogger("lib.bad")
        bad.handlers, bad.propagate = [], True
        logging.captureWarnings(False)
        monkeypatch.undo()
        logs.configure("console", "INFO")
    lines = buf.getvalue().splitlines()
    docs = [json.loads(line) for line in lines]  # every line is JSON
    pool_lines = [d for d in docs if d.get("logger") == "psycopg.pool"]
    assert len(pool_lines) == 2  # the first in full, then the count
    assert pool_lines[0]["event"].startswith("error connecting in 'pool-1': refused")
    assert pool_lines[1]["count"] == 50 and "50 in the last" in pool_lines[1]["event"]
    assert any(d.get("logger") == "py.warnings" for d in docs)
    asgi = next(d for d in docs if d.get("logger") == "uvicorn.error")
    assert "ZeroDivisionError" in asgi["exception"] and asgi["level"] == "error"
    assert any(d["event"] == "a log line could not be formatted" for d in docs)
    assert any(d["event"] == "own line" and d["n"] == 1 for d in docs)


def test_the_bridge_counts_dead_letters_instead_of_a_line_each() -> None:
    """The distributed bridge decodes like the runner: 2,000 malformed messages
    from one device give one line now (and a count at the minute), and every one
    of them still goes to the dead-letter topic."""
    pytest.importorskip("aiokafka")
    from trygg.distributed.bridge import Bridge
    from trygg.ingest.mqtt import Message
    from trygg.registry import parse_registry
    from trygg.settings import Settings

    bridge = Bridge(Settings(site="oslo", mqtt_client_id="b-test"))
    bridge._set_registry(
        parse_registry(
            {
                "residents": [{"id": "r-1", "team": "t"}],
                "devices": [{"id": "bed-1", "resident": "r-1", "kind": "bed"}],
            }
        )
    )
    clock = Clock()
    rec = Recorder()
    bridge._dead_log = RepeatLog(rec, clock=clock)
    batch = [
        Message("trygg/oslo/devices/bed-1/events", b"{not json %d" % i, i, 1) for i in range(2000)
    ]
    records, _ = bridge.encode(batch)
    dead = [r for r in records if r[0] == bridge.settings.kafka_dead_letters_topic]
    assert len(dead) == 2000 and bridge.stats.dead_letters == 2000
    assert len(rec.lines) == 1 and rec.lines[0][2]["device"] == "bed-1"
    clock.t += 60
    bridge._dead_log.flush()
    assert len(rec.lines) == 2 and rec.lines[1][2]["count"] == 2000
    assert all("not json 1" not in str(line) for line in rec.lines)  # never the payload
