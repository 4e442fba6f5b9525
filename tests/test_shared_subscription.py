"""Scale-out of ingest: two ``trygg run`` processes share the device topics.

Both subscribe through an MQTT v5 shared subscription (``TRYGG_MQTT_SHARED_GROUP``),
so the broker gives each message to one of them. Every event must be stored
exactly once, and both processes must have taken part. Real mosquitto, real
PostgreSQL, two real trygg processes.
"""

from __future__ import annotations

import psycopg

from tests.helpers import TryggProcess, event_counts, publish, wait_until
from tests.test_durability import SITE, _registry, _stream
from trygg.devenv import PrivateMosquitto


def _spooled_by(url: str) -> dict[str, int]:
    """Per ingest process (its spool, named by its client id): bytes written to the store."""
    with psycopg.connect(url) as c:
        rows = c.execute('SELECT spool, segment, "offset" FROM spool_checkpoint').fetchall()
    return {spool: (segment - 1) * (64 << 20) + offset for spool, segment, offset in rows}


def test_two_ingest_processes_share_the_load_and_store_each_event_once(
    tmp_path,  # type: ignore[no-untyped-def]
    broker: PrivateMosquitto,
    db: str,
) -> None:
    _registry(tmp_path, db)
    procs = [
        TryggProcess(
            {
                "TRYGG_MQTT_URL": broker.url,
                "TRYGG_DATABASE_URL": db,
                "TRYGG_SITE": SITE,
                "TRYGG_MQTT_CLIENT_ID": f"trygg-share-{name}",
                "TRYGG_MQTT_SHARED_GROUP": "ingest",
            }
        )
        for name in ("a", "b")
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_connected()
        publish(broker.port, _stream(4000, "shared"))
        wait_until(lambda: event_counts(db)[0] >= 4000, timeout=60)
        assert event_counts(db) == (4000, 4000)
        share = _spooled_by(db)
        assert set(share) == {"trygg-share-a", "trygg-share-b"}
        assert all(n > 0 for n in share.values()), share
    finally:
        for p in procs:
            p.stop()
