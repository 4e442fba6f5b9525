"""``trygg rules backtest`` (issue 8): a candidate catalogue, or a district's
candidate overlay (``--district``), against the one in force on the stored
events: the alert outcomes and incidents queried (trygg.store.history), the
events streamed in this process or sharded over workers
(trygg.tuning.backtest_shards), the result (trygg.tuning.backtest) written as
a report (trygg.tuning.backtest_report) and the access logged.

Registered on the ``trygg rules`` app by trygg.tuning.cli.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer

from trygg.cli_support import (
    ConfigOpt,
    DatabaseUrlOpt,
    connect_or_fail,
    fail,
    settings_or_exit,
)
from trygg.progress import progress as show_progress
from trygg.progress import wanted
from trygg.rules.catalogue import Catalogue, default_rules_dir
from trygg.tuning.backtest_shards import ShardedRunner, ShardFailed, default_jobs
from trygg.tuning.rule_inputs import active_catalogue, catalogue_or_exit, check_jobs, refuse


def backtest_cmd(
    candidate: list[Path] = typer.Option(
        ...,
        "--candidate",
        help="The candidate catalogue: rule files or directories, read in order like --rules "
        "(repeatable: `--candidate rules --candidate change.yaml` layers one override file). "
        "With --district: the district's candidate overlay (a file, or a directory with "
        "<district>.yaml).",
    ),
    district: Optional[str] = typer.Option(  # noqa: UP045
        None,
        "--district",
        help="Back-test a district's candidate overlay against its overlay in force, on the "
        "current catalogue, for that district's residents only.",
    ),
    rules: Optional[list[Path]] = typer.Option(  # noqa: UP045
        None,
        "--rules",
        help="The current catalogue (repeatable). Default: the active stored version, "
        "else $TRYGG_RULES_DIR or the repository's rules/.",
    ),
    start: str = typer.Option(
        ..., "--from", help="Start: ISO date (local midnight) or time; local if no offset."
    ),
    end: str = typer.Option(..., "--to", help="End, exclusive: ISO date or time."),
    team: Optional[list[str]] = typer.Option(  # noqa: UP045
        None, "--team", help="Only residents of this team (repeatable)."
    ),
    fmt: str = typer.Option("table", "--format", help="table, json or html"),
    out: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--out", help="Write the report here (default: stdout)."
    ),
    warmup: str = typer.Option(
        "1d", "--warmup", help="Events read before --from to set up state (alerts not counted)."
    ),
    match_window: str = typer.Option(
        "1h",
        "--match-window",
        help="Alerts without a shared cause are the same if at most this far apart; "
        "events are also read this far past --to.",
    ),
    fetch_size: int = typer.Option(20_000, "--fetch-size", help="Rows per database fetch."),
    jobs: Optional[int] = typer.Option(  # noqa: UP045
        None,
        "--jobs",
        "-j",
        help="Worker processes, each back-testing a shard of the residents with its own "
        "database cursor; the report is the same. Default: the cores this machine gives us; "
        "1: in this process.",
    ),
    progress: Optional[bool] = typer.Option(  # noqa: UP045
        None, "--progress/--no-progress", help="Progress bar on stderr (default: on a terminal)."
    ),
    config: Optional[Path] = ConfigOpt,  # noqa: UP045
    database_url: Optional[str] = DatabaseUrlOpt,  # noqa: UP045
) -> None:
    """Back-test a candidate catalogue against the current one on stored events."""
    import getpass

    from trygg.durations import parse_duration
    from trygg.rules.engine import CarePlanError
    from trygg.store import history
    from trygg.store.access_log import log_access
    from trygg.store.registry import load_registry as load_db_registry
    from trygg.times import parse_when
    from trygg.tuning.backtest import RecordedIncident, RuleRecord, backtest
    from trygg.tuning.backtest_report import to_html, to_json, to_table

    if fmt not in ("table", "json", "html"):
        raise typer.BadParameter("--format is table, json or html")
    s = settings_or_exit(config, database_url=database_url)
    try:
        t1 = parse_when(start, s.report_timezone)
        t2 = parse_when(end, s.report_timezone)
        pre = parse_duration(warmup)
        window = parse_duration(match_window)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if t2 <= t1:
        raise typer.BadParameter("--to must be after --from")
    check_jobs(jobs)
    cand = catalogue_or_exit(candidate) if not district else None
    conn = connect_or_fail(s.database_url, "cannot connect to the database")
    with conn:
        if rules:
            cur = catalogue_or_exit(rules)
        else:
            cur = active_catalogue(conn) or catalogue_or_exit([s.rules_dir or default_rules_dir()])
        registry = load_db_registry(conn)
        residents: list[str] | None = None
        plan = None
        if district:  # a district's overlay: its residents and teams only
            plan, team = _district_backtest(conn, s, cur, registry, district, candidate, team)
            residents = plan.residents
        if team and plan is None:
            residents = [r.id for r in registry.residents if r.team in team]
            unknown = sorted(set(team) - {r.team for r in registry.residents})
            if unknown:
                fail(f"no residents in team(s) {', '.join(unknown)}")
        records = [RuleRecord(**r) for r in history.alert_outcomes(conn, t1, t2, team)]
        incidents = [
            RecordedIncident(
                alert_id=r["alert_id"],
                rule=r["rule"],
                resident=r["resident"],
                team=r["team"],
                raised_at=r["raised_at"],
                events=tuple(r["events"] or ()),
                arrived_at=r["arrived_at"],
                device=r["device"],
            )
            for r in history.recorded_incidents(conn, t1, t2, team)
        ]
        conn.commit()
        with _backtest_progress(wanted(progress), t1 - pre, t2 + window) as tick:
            stream = history.EventStream(
                conn,
                registry,
                t1 - pre,
                t2 + window,
                residents=residents,
                itersize=fetch_size,
                progress=tick,
            )
            runner = _shard_runner(
                conn, s.database_url, jobs, residents, t1 - pre, t2 + window, fetch_size, tick
            )
            try:
                common: dict[str, Any] = {
                    "start": t1,
                    "end": t2,
                    "until": t2 + window,
                    "incidents": incidents,
                    "records": records,
                    "teams": team,
                    "match_window": window,
                    **({"runner": runner} if runner is not None else {}),
                }
                if plan is not None:
                    res = plan.run(stream, registry, **common)
                else:
                    assert cand is not None
                    res = backtest(stream, registry, cur, cand, **common)
            except CarePlanError as exc:
                fail(
                    "the stored care plans do not fit a catalogue:\n  " + "\n  ".join(exc.problems)
                )
            except ShardFailed as exc:
                fail(str(exc))
        # A back-test reads residents' events: one access-log row names the period,
        # the teams and every resident the report shows.
        log_access(
            conn,
            actor=getpass.getuser(),
            role="specialist",
            action="backtest",
            detail={
                "from": t1.isoformat(),
                "to": t2.isoformat(),
                "teams": list(team or []),
                "candidate": cand.version if cand is not None else plan_version(plan),
                "district": district,
                "format": fmt,
                "residents": sorted(res.residents),
            },
        )
    tz = s.report_timezone
    if fmt == "json":
        text = to_json(res, tz)
    elif fmt == "html":
        text = to_html(res, tz, generated_at=datetime.now().astimezone())
    else:
        text = to_table(res, tz)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
    n_unknown = runner.unknown_device if runner is not None else stream.unknown_device
    typer.echo(
        f"back-tested {res.events:,} events ({n_unknown} from unknown devices) in "
        f"{res.elapsed_s:.1f} s: {res.current_alerts} -> {res.candidate_alerts} alerts"
        + (f" ({len(runner.runs)} shards)" if runner is not None else "")
        + (f"; wrote {out}" if out is not None else ""),
        err=True,
    )


def _shard_runner(
    conn: Any,
    database_url: str,
    jobs: int | None,
    residents: list[str] | None,
    start: datetime,
    end: datetime,
    fetch_size: int,
    tick: Callable[[int, datetime | None], None] | None,
) -> ShardedRunner | None:
    """``--jobs``: the engines sharded by resident over worker processes
    (trygg.tuning.backtest_shards), or None for this process (``--jobs 1``).
    The shards are the stored residents (of the teams asked for, if any)."""
    from trygg.store import history

    n = jobs if jobs is not None else default_jobs()
    if n <= 1:
        return None
    with conn.transaction():
        shards = history.resident_shards(conn, n)
    if residents is not None:
        wanted_ids = set(residents)
        shards = [[r for r in rs if r in wanted_ids] for rs in shards]
    return ShardedRunner(
        database_url, shards, start, end, itersize=fetch_size, jobs=n, progress=tick
    )


def plan_version(plan: Any) -> str:
    return str(plan.candidate_version) if plan is not None else ""


def _district_backtest(
    conn: Any,
    s: Any,
    cat: Catalogue,
    registry: Any,
    district: str,
    candidate: list[Path],
    team: list[str] | None,
) -> tuple[Any, list[str]]:
    """``trygg rules backtest --district``: the district's overlay in force (stored
    active version, else its file) against the candidate overlay, on ``cat``; the
    district's teams (those of ``--team`` in it, if given). Exits on a refused overlay."""
    from trygg.rules.overlays import OverlayError
    from trygg.store.version_rows import overlay_version
    from trygg.tuning import district_versions as dv
    from trygg.tuning.district_versions_cli import overlays_in_force

    if district not in registry.district_ids():
        fail(f"no district {district!r} in the stored registry")
    try:
        src, text = dv.candidate_text(district, candidate)
        overlay = dv.check_overlay(cat, district, src, text)
    except OverlayError as exc:
        refuse(f"The candidate overlay of {district} was refused", exc.problems)
    now = overlays_in_force(conn, cat, s)
    teams = dv.district_teams(registry, district)
    if team:
        outside = sorted(set(team) - set(teams))
        if outside:
            fail(f"team(s) {', '.join(outside)} not in district {district}")
        teams = [t for t in teams if t in team]
    current = now.by_district.get(district)
    by_id = registry.resident_by_id()
    plan = dv.DistrictBacktest(
        catalogue=cat,
        district=district,
        current=now,
        candidate=overlay,
        candidate_version=overlay_version(district, text),
        current_version=f"{district}: {current.file}" if current else f"{district}: the standard",
        residents=[r for r in dv.district_residents(registry, district) if by_id[r].team in teams],
    )
    return plan, teams


@contextmanager
def _backtest_progress(
    enabled: bool, t0: datetime, t1: datetime
) -> Iterator[Callable[[int, datetime | None], None] | None]:
    """Progress over the period's event time (trygg.progress: a bar with the rate
    in events/s and the time left on a terminal, else a line every 5 s); or nothing."""
    if not enabled:
        yield None
        return
    span = max((t1 - t0).total_seconds(), 1.0)
    with show_progress("back-test", span, unit="events") as bar:

        def tick(n: int, last: datetime | None) -> None:
            done = (last - t0).total_seconds() if last is not None else 0.0
            bar.update(min(max(done, 0.0), span), count=n)

        yield tick
