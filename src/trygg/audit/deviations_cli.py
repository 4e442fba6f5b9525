"""``trygg report deviations``: each district's deviations from the city
standard (trygg.audit.deviations), called by ``trygg report``
(trygg.audit.cli) with its options.
"""

from __future__ import annotations

import getpass
from pathlib import Path

import typer

from trygg.audit.cli_common import (
    check_lang,
    connect,
    fail_problems,
    period,
    settings_for,
    write_out,
)
from trygg.tuning.rule_inputs import active_catalogue


def deviations_command(
    *,
    start: str,
    end: str,
    district: str | None,
    districts: list[Path],
    rules: list[Path],
    fmt: str,
    out: Path | None,
    lang: str,
    by: str | None,
    config: Path | None,
    database_url: str | None,
) -> None:
    """`trygg report deviations`: the districts' deviations from the city standard
    (trygg.audit.deviations)."""
    from trygg.audit.deviations import build, to_csv, to_html, to_json
    from trygg.rules.catalogue import CatalogueError, default_rules_dir, load_catalogue
    from trygg.rules.overlays import OverlayError, default_districts_dir, read_overlays
    from trygg.store.access_log import log_access
    from trygg.store.registry import load_registry

    if fmt not in ("csv", "json", "html"):
        raise typer.BadParameter("--format is csv, json or html")
    lang = check_lang(lang)
    s = settings_for(config, database_url)
    t1, t2 = period(start, end, s.report_timezone)
    with connect(s.database_url) as conn:
        try:
            cat = (
                load_catalogue(rules)
                if rules
                else active_catalogue(conn) or load_catalogue([s.rules_dir or default_rules_dir()])
            )
        except CatalogueError as exc:
            fail_problems("the catalogue does not load", exc.problems)
        paths = districts or [
            d for d in [default_districts_dir(rules or [s.rules_dir or default_rules_dir()])] if d
        ]
        try:
            overlays = read_overlays(cat, paths) if paths else None
        except OverlayError as exc:
            fail_problems("the district overlays were refused", exc.problems)
        if overlays is None:
            from trygg.rules.overlays import Overlays

            overlays = Overlays()
        if not districts:  # what runs: a district's stored active version wins over its file
            from trygg.rules.overlays import in_force
            from trygg.store.versions import overlays_in

            try:
                overlays = in_force(cat, overlays, overlays_in(conn, "active"))
            except OverlayError as exc:
                fail_problems("a stored district overlay was refused", exc.problems)
        registry = load_registry(conn)
        known = registry.district_ids() + list(overlays.by_district)
        if district is not None and district not in known:
            raise typer.BadParameter(
                f"no district {district!r} (known: {', '.join(known)})", param_hint="--district"
            )
        rep = build(
            conn, cat, overlays, registry, t1, t2, s.report_timezone, district=district, lang=lang
        )
        text = to_html(rep) if fmt == "html" else to_csv(rep) if fmt == "csv" else to_json(rep)
        # The report names the residents whose care plans lie outside the bounds.
        log_access(
            conn,
            actor=by or getpass.getuser(),
            role="specialist",
            action="report_deviations",
            detail={
                "from": t1.isoformat(),
                "to": t2.isoformat(),
                "district": district,
                "format": fmt,
                "residents": rep.residents,
            },
        )
    write_out(text, out)
    marked = rep.marked
    typer.echo(
        f"deviations of {len(rep.districts)} district(s) from catalogue {rep.version}: "
        f"{sum(1 for r in rep.rules for c in r.cells if c.changed)} change(s), "
        f"{len(marked)} marked"
        + "".join(
            f"; {r.rule} in {c.district}: "
            + ", ".join(
                (["no reason"] if c.unexplained else []) + [f"outlier {p}" for p in c.outliers]
            )
            for r, c in marked
        )
        + (f"; wrote {out}" if out is not None else ""),
        err=True,
    )
