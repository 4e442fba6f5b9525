"""``trygg rules publish|shadow|promote|history --district D``: a district's overlay
as versions (trygg.tuning.district_versions, trygg.store.versions schema 11).

The commands of trygg.tuning.versions_cli hand over here when ``--district`` is
given; without it they work on the whole catalogue as before.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typer

from trygg.cli_support import fail
from trygg.locale import Words
from trygg.registry import Registry
from trygg.rules.catalogue import Catalogue, CatalogueError, default_rules_dir, load_catalogue
from trygg.rules.engine import CarePlanError, Engine
from trygg.rules.overlays import (
    LiveOverlays,
    Overlay,
    OverlayError,
    Overlays,
    apply_overlays,
    district_overlay_texts,
    with_stored,
)
from trygg.settings import Settings
from trygg.tuning.district_versions import candidate_text, check_overlay, district_residents
from trygg.tuning.rule_inputs import active_catalogue, refuse


def catalogue_in_use(conn: Any, s: Settings) -> Catalogue:
    """The active stored catalogue, else the rules directory's: what the overlays
    are checked against, as trygg run does."""
    try:
        return active_catalogue(conn) or load_catalogue([s.rules_dir or default_rules_dir()])
    except CatalogueError as exc:
        refuse("The rule catalogue was refused", exc.problems)


def overlays_in_force(conn: Any, cat: Catalogue, s: Settings) -> Overlays:
    """Each district's stored active overlay, else its file beside the rules."""
    from trygg.store.versions import overlays_in

    live = LiveOverlays()
    try:
        live.update(
            cat,
            district_overlay_texts([s.rules_dir or default_rules_dir()]),
            overlays_in(conn, "active"),
        )
    except OverlayError as exc:
        refuse("The district overlays in force was refused", exc.problems)
    return live.overlays


def _registry(conn: Any, district: str) -> Registry:
    from trygg.store.registry import load_registry

    reg = load_registry(conn)
    if district not in reg.district_ids():
        known = ", ".join(reg.district_ids()) or "none"
        fail(f"no district {district!r} in the stored registry (districts: {known})", 2)
    return reg


def candidate(
    conn: Any, s: Settings, district: str, paths: list[Path] | None
) -> tuple[Catalogue, Overlays, Overlay, str]:
    """The candidate overlay read and checked: within the standard's bounds, and
    the district's residents' care plans still fit on top of it."""
    if not paths:
        fail(f"give the candidate overlay of {district} with --candidate FILE", 2)
    reg = _registry(conn, district)
    cat = catalogue_in_use(conn, s)
    try:
        src, text = candidate_text(district, paths or [])
        overlay = check_overlay(cat, district, src, text)
    except OverlayError as exc:
        refuse(f"The candidate overlay of {district} was refused", exc.problems)
    now = overlays_in_force(conn, cat, s)
    try:
        Engine(cat, apply_overlays(reg, with_stored(now, {district: overlay})))
    except CarePlanError as exc:
        refuse(
            f"The candidate overlay of {district} (a care plan does not fit on it) was refused",
            exc.problems,
        )
    return cat, now, overlay, text


def publish(
    district: str, paths: list[Path] | None, reason: str, author: str | None, s: Settings, conn: Any
) -> None:
    from trygg.store import versions

    _, _, _, text = candidate(conn, s, district, paths)
    v = versions.publish_overlay(
        conn, district, text, author=author or getpass.getuser(), reason=reason
    )
    if v is None:
        typer.echo(f"that overlay is {district}'s active version already")
        return
    typer.echo(
        f"published {v} as {district}'s overlay; a running trygg takes it into use within "
        f"{s.registry_reload_seconds:g} s"
    )


def shadow(
    district: str,
    paths: list[Path] | None,
    stop: bool,
    reason: str,
    author: str | None,
    s: Settings,
    conn: Any,
) -> None:
    from trygg.store import versions

    who = author or getpass.getuser()
    if stop:
        try:
            v = versions.stop_overlay_shadow(conn, district, author=who, reason=reason)
        except versions.VersionError as exc:
            fail(str(exc))
        typer.echo(f"shadow run of {v} ({district}) stopped")
        return
    _, _, _, text = candidate(conn, s, district, paths)
    try:
        v = versions.start_overlay_shadow(conn, district, text, author=who, reason=reason)
    except versions.VersionError as exc:
        fail(str(exc))
    n = len(district_residents(_registry(conn, district), district))
    typer.echo(
        f"{v} runs in shadow for {district}'s {n} residents from trygg's next reload (within "
        f"{s.registry_reload_seconds:g} s); back-test it with trygg rules backtest --district"
        f" {district}"
    )


def promote(district: str, reason: str, author: str | None, s: Settings, conn: Any) -> None:
    from trygg.store import versions

    shadows = versions.overlays_in(conn, "shadow")
    if district not in shadows:
        fail(f"no overlay of {district} is in shadow: nothing to promote")
    version, text = shadows[district]
    candidate_path = Path(f"{version}/{district}.yaml")
    cat = catalogue_in_use(conn, s)
    try:
        overlay = check_overlay(cat, district, str(candidate_path), text)
    except OverlayError as exc:
        refuse(f"The shadow overlay {version} was refused", exc.problems)
    now = overlays_in_force(conn, cat, s)
    try:
        Engine(
            cat, apply_overlays(_registry(conn, district), with_stored(now, {district: overlay}))
        )
    except CarePlanError as exc:
        refuse(
            f"The shadow overlay {version} (a care plan does not fit on it) was refused",
            exc.problems,
        )
    try:
        new, prev = versions.promote_overlay(
            conn, district, author=author or getpass.getuser(), reason=reason
        )
    except versions.VersionError as exc:
        fail(str(exc))
    typer.echo(
        f"promoted {new} as {district}'s overlay (was {prev or 'its file or none'}); a running"
        f" trygg alerts by it within {s.registry_reload_seconds:g} s"
    )


def history(district: str, limit: int, s: Settings, conn: Any) -> list[list[Any]]:
    from trygg.store import versions

    tz = ZoneInfo(s.report_timezone)
    return [
        [
            Words.when(h.at, tz.key, seconds=True),
            h.version,
            f"overlay {d}",
            h.action + (f" (was {h.previous})" if h.previous else ""),
            h.status,
            h.author,
            h.reason,
        ]
        for h, d in versions.overlay_history(conn, district, limit)
    ]
