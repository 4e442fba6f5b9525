"""``trygg audit export-fhir``: alerts as VKP FHIR R4 Bundles (trygg.audit.fhir)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from trygg.audit.cli_common import FromOpt, TeamOpt, ToOpt, connect, parse_when, settings_for
from trygg.cli_support import ConfigOpt, DatabaseUrlOpt
from trygg.cli_support import fail as _fail
from trygg.progress import wanted


def export_fhir_command(
    start: str = FromOpt,
    end: str = ToOpt,
    team: str | None = TeamOpt,
    out: Path = typer.Option(..., "--out", help="a directory (one Bundle per alert) or a file"),
    validate: bool = typer.Option(False, "--validate", help="validate with fhir.resources"),
    progress: bool | None = typer.Option(
        None,
        "--progress/--no-progress",
        help="progress on stderr: a bar on a terminal, else a line every 5 s "
        "(default: on a terminal)",
    ),
    config: Path | None = ConfigOpt,
    database_url: str | None = DatabaseUrlOpt,
) -> None:
    """Export alerts as VKP FHIR R4 (DetectedIssue, Encounter, Composition) Bundles."""
    from trygg.audit import fhir
    from trygg.store.audit import alerts_for_export

    s = settings_for(config, database_url)
    t0, t1 = parse_when(start, s.report_timezone), parse_when(end, s.report_timezone)
    with connect(s.database_url) as conn:
        alerts = alerts_for_export(conn, t0, t1, team)
    now = datetime.now(UTC)
    as_dir = out.is_dir() or str(out).endswith("/")
    bundles: list[tuple[Path, dict[str, Any]]] = []
    if as_dir:
        out.mkdir(parents=True, exist_ok=True)
        for a in alerts:
            bundles.append((out / f"{a['id']}.json", fhir.bundle([a], now=now)))
    else:
        bundles.append((out, fhir.bundle(alerts, now=now)))
    from trygg.progress import progress as show_progress

    with show_progress(
        "export-fhir", len(bundles), unit="bundles", enabled=wanted(progress)
    ) as bar:
        for n, (path, b) in enumerate(bundles, 1):
            if validate:
                try:
                    fhir.validate(b)
                except Exception as exc:  # pydantic's ValidationError, or a missing library
                    _fail(f"{path.name}: not valid FHIR R4: {exc}")
            path.write_text(json.dumps(b, ensure_ascii=False, indent=1), encoding="utf-8")
            bar.update(n, count=n)
    typer.echo(f"exported {len(alerts)} alerts in {len(bundles)} bundle(s) to {out}", err=True)
