"""The district overlays in force, as the distributed processes read them.

The worker's engine and the bridge's relay judge a resident by the same rules: the
standard catalogue, the district's overlay, the care plan (docs/rules.md,
"Districts"). Both take the overlays from here, at start and at each reload.
"""

from __future__ import annotations

from pathlib import Path

from trygg.rules.overlays import OverlayInputs
from trygg.settings import Settings


def rules_dirs(settings: Settings) -> list[Path]:
    """Where the catalogue and its district overlay files are: ``TRYGG_RULES_DIR``, or
    the packaged standard."""
    from trygg.rules.catalogue import default_rules_dir

    return [Path(settings.rules_dir) if settings.rules_dir else default_rules_dir()]


def overlay_inputs(settings: Settings, rules_dirs: list[Path]) -> OverlayInputs:
    """The district overlays in force: the files beside the rules and each district's
    stored active version, which wins over its file (docs/rules.md, "Versions per
    district"). The worker and the bridge's relay run the same."""
    import psycopg

    from trygg.rules.overlays import district_overlay_texts
    from trygg.store.versions import overlays_in

    texts = district_overlay_texts(rules_dirs)
    if not settings.database_url:
        return texts, {}
    with psycopg.connect(settings.database_url, connect_timeout=10, autocommit=True) as conn:
        return texts, overlays_in(conn, "active")
