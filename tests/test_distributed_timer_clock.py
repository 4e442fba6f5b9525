"""The receipt-delay correction (``trygg.runner.timer_clock.ReceiptClock``): how far
absence timers may run on the wall clock while a backlog is worked off. One class,
used by the embedded runner and, per partition, by the distributed worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trygg.runner.timer_clock import ReceiptClock

NOW = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def test_receipt_clock_is_the_wall_clock_with_nothing_received() -> None:
    assert ReceiptClock().clock(NOW, at=100.0) == NOW


def test_receipt_clock_runs_behind_by_the_smallest_delay_of_the_window() -> None:
    rc = ReceiptClock(window_s=2.0)
    rc.note(timedelta(minutes=30), at=100.0)  # a backlog: half an hour old
    assert rc.clock(NOW, at=100.5) == NOW - timedelta(minutes=30)
    rc.note(timedelta(minutes=40), at=100.6)  # older still: the smallest counts
    assert rc.clock(NOW, at=100.7) == NOW - timedelta(minutes=30)
    rc.note(timedelta(seconds=3), at=101.0)  # one fresh event: trygg is live
    assert rc.clock(NOW, at=101.1) == NOW - 3 * S
    # the fresh delay came last, so it stays in the window longest
    assert rc.clock(NOW, at=102.9) == NOW - 3 * S
    assert rc.clock(NOW, at=103.1) == NOW  # nothing within 2 s: the wall clock


def test_receipt_clock_keeps_a_later_larger_delay_once_the_smaller_expires() -> None:
    rc = ReceiptClock(window_s=2.0)
    rc.note(timedelta(seconds=5), at=100.0)
    rc.note(timedelta(minutes=10), at=101.5)  # larger, but newer: may be the minimum later
    assert rc.clock(NOW, at=101.6) == NOW - 5 * S
    assert rc.clock(NOW, at=102.5) == NOW - timedelta(minutes=10)
    assert rc.clock(NOW, at=103.6) == NOW


def test_receipt_clock_never_runs_ahead_of_the_wall_clock() -> None:
    rc = ReceiptClock()
    rc.note(-timedelta(hours=1), at=100.0)  # a device clock an hour ahead
    assert rc.clock(NOW, at=100.1) == NOW
