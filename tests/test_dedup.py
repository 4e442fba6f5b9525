"""Ingest's memory of recent event keys: re-deliveries dropped, memory bounded."""

from __future__ import annotations

from trygg.ingest.dedup import RecentKeys


def test_a_redelivered_key_is_dropped() -> None:
    keys = RecentKeys(capacity=100)
    assert keys.seen(("bed-1", "e1")) is False
    assert keys.seen(("bed-1", "e1")) is True
    assert keys.seen(("bed-2", "e1")) is False  # an id is unique per device only


def test_at_least_half_the_capacity_is_remembered_and_never_more_than_it() -> None:
    keys = RecentKeys(capacity=1000)
    for i in range(10_000):
        keys.seen(("d", str(i)))
        assert len(keys) <= 1000
    # The last 500 are certainly remembered ...
    assert all(keys.seen(("d", str(i))) for i in range(9_500, 10_000))
    # ... and the oldest are forgotten.
    assert not keys.seen(("d", "0"))
