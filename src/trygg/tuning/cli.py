"""``trygg rules check | test | replay`` (and the version commands of versions_cli)."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Optional

import typer

from trygg.progress import progress as show_progress
from trygg.progress import wanted
from trygg.registry import RegistryError, load_registry
from trygg.rules.careplan import care_plan_problems_in_file
from trygg.rules.catalogue import Catalogue, CatalogueError, default_rules_dir, load_catalogue
from trygg.rules.fixtures import fixture_files, run_file
from trygg.tuning.replay import replay as run_replay

app = typer.Typer(help="Check, test and replay the rule catalogue.", no_args_is_help=True)


def _catalogue(rules: list[Path] | None) -> Catalogue:
    paths = rules or [default_rules_dir()]
    try:
        return load_catalogue(paths)
    except CatalogueError as exc:
        typer.echo("The rule catalogue was refused:", err=True)
        for p in exc.problems:
            typer.echo(f"  {p}", err=True)
        raise typer.Exit(1) from None


DistrictsOpt = typer.Option(
    None,
    "--districts",
    help="District overlays: a directory of <district>.yaml files, or files (repeatable). "
    "Default: districts/ beside the rules, if it exists.",
)


def _overlays(cat: Catalogue, rules: list[Path] | None, districts: list[Path] | None) -> Any:
    """The district overlays (trygg.rules.overlays), checked; exit 1 when refused."""
    from trygg.rules.overlays import OverlayError, Overlays, default_districts_dir, read_overlays

    paths = districts or [d for d in [default_districts_dir(rules)] if d is not None]
    if not paths:
        return Overlays()
    try:
        return read_overlays(cat, paths)
    except OverlayError as exc:
        typer.echo("The district overlays were refused:", err=True)
        for p in exc.problems:
            typer.echo(f"  {p}", err=True)
        raise typer.Exit(1) from None


RulesOpt = typer.Option(
    None,
    "--rules",
    help="Rule file or directory (repeatable; later ones may override earlier ones). "
    "Default: $TRYGG_RULES_DIR or the repository's rules/.",
)


@app.command()
def check(
    rules: Optional[list[Path]] = RulesOpt,  # noqa: UP045
    registry: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--registry", help="Also check the care plans (overrides) in this registry file."
    ),
    districts: Optional[list[Path]] = DistrictsOpt,  # noqa: UP045
) -> None:
    """Validate the rule catalogue, the district overlays (and the care plans of a registry)."""
    cat = _catalogue(rules)
    typer.echo(f"catalogue {cat.version}: {len(cat.specs)} rules from {len(cat.files)} file(s)")
    overlays = _overlays(cat, rules, districts)
    if overlays.by_district:
        n = len(overlays.changes)
        typer.echo(
            f"district overlays: {len(overlays.by_district)} "
            f"({', '.join(overlays.by_district)}), {n} change{'' if n == 1 else 's'} within"
            " the standard's bounds"
        )
    for w in overlays.warnings:
        typer.echo(f"warning: {w}", err=True)
    if registry is not None:
        try:
            reg = load_registry(registry)
        except RegistryError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
        problems = care_plan_problems_in_file(cat, reg, registry)
        if problems:
            typer.echo("Care plans refused:", err=True)
            for p in problems:
                typer.echo(f"  {p}", err=True)
            raise typer.Exit(1)
        from trygg.rules.overlays import unknown_districts

        for w in unknown_districts(reg, overlays):
            typer.echo(f"warning: {w}", err=True)
        n = sum(1 for r in reg.residents if r.overrides)
        typer.echo(f"registry {registry}: {len(reg.residents)} residents, {n} care plan(s) OK")


@app.command("test")
def test_cmd(
    paths: Optional[list[Path]] = typer.Argument(  # noqa: UP045
        None, help="Test files or directories (default: rules/tests)."
    ),
    rules: Optional[list[Path]] = RulesOpt,  # noqa: UP045
) -> None:
    """Run rule tests (fixture files), like `promtool test rules`."""
    cat = _catalogue(rules)
    files = fixture_files(paths or [default_rules_dir() / "tests"])
    if not files:
        typer.echo("no test files found", err=True)
        raise typer.Exit(1)
    passed = failed = 0
    for f in files:
        for r in run_file(cat, f):
            if r.ok:
                passed += 1
                typer.echo(f"PASS  {r.file}: {r.name}")
            else:
                failed += 1
                typer.echo(f"FAIL  {r.file}: {r.name}")
                for line in r.lines:
                    typer.echo(line)
    typer.echo(f"{passed} passed, {failed} failed (catalogue {cat.version})")
    if failed:
        raise typer.Exit(1)


@app.command()
def replay(
    events: Path = typer.Option(
        ..., "--events", help="JSONL file, one event a line (with device)."
    ),
    registry: Path = typer.Option(..., "--registry", help="Registry YAML (residents, devices)."),
    rules: Optional[list[Path]] = RulesOpt,  # noqa: UP045
    districts: Optional[list[Path]] = DistrictsOpt,  # noqa: UP045
    until: Optional[str] = typer.Option(  # noqa: UP045
        None,
        "--until",
        help="Run the clock on to this ISO time with offset (default: the last event's time).",
    ),
    raw: bool = typer.Option(
        False,
        "--raw",
        help="Print the engine's signals instead (fire and clear, no gates, no dedup).",
    ),
    progress: Optional[bool] = typer.Option(  # noqa: UP045
        None,
        "--progress/--no-progress",
        help="Progress on stderr: a bar on a terminal, else a line every 5 s "
        "(default: on a terminal).",
    ),
    jobs: Optional[int] = typer.Option(  # noqa: UP045
        None,
        "--jobs",
        "-j",
        help="Worker processes, each replaying a shard of the residents; the output is the "
        "same. Default: the cores this machine gives us (a file under 8 MB: 1); "
        "1: in this process.",
    ),
) -> None:
    """Replay events through the catalogue; print one JSON line per alert staff
    would have been paged for (DESIGN.md, contract: replay)."""
    if jobs is not None and jobs < 1:
        raise typer.BadParameter("--jobs must be at least 1")
    cat = _catalogue(rules)
    try:
        reg = load_registry(registry)
    except RegistryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    problems = care_plan_problems_in_file(cat, reg, registry)
    if problems:
        for p in problems:
            typer.echo(p, err=True)
        raise typer.Exit(1)
    from trygg.rules.overlays import apply_overlays

    reg = apply_overlays(reg, _overlays(cat, rules, districts))
    end: datetime | None = None
    if until is not None:
        try:
            end = datetime.fromisoformat(until)
        except ValueError:
            typer.echo(f"--until: not an ISO time: {until!r}", err=True)
            raise typer.Exit(2) from None
        if end.tzinfo is None:
            typer.echo("--until needs an offset, e.g. 2026-03-30T00:00+02:00", err=True)
            raise typer.Exit(2)
    try:
        fh = events.open("rb")
    except OSError as exc:
        typer.echo(f"{events}: cannot read: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    n = jobs if jobs is not None else _replay_jobs(events)
    if n > 1 and events.is_file():  # every worker reads the file: not a pipe
        fh.close()
        stats = _replay_sharded(events, reg, cat, end, raw, n, wanted(progress))
    else:
        with fh, _replay_progress(fh, wanted(progress)) as lines:
            _, stats = run_replay(
                lines, reg, cat, until=end, out=sys.stdout, err=sys.stderr, raw=raw
            )
    clock = f"clock run to {stats.until.isoformat()}" if stats.until is not None else "no events"
    what = (
        f"{stats.alerts} signals"
        if raw
        else f"{stats.alerts} alerts ({stats.inhibited} inhibited by an offline device, "
        f"{stats.folded} device-offline folded into the resident's open one)"
    )
    typer.echo(
        f"replayed {stats.events} events ({stats.bad} bad, {stats.unknown_device} unknown device, "
        f"{stats.repeated} repeated, {stats.late} late); {clock}: {what}; "
        f"{stats.pending} timer{'' if stats.pending == 1 else 's'} pending",
        err=True,
    )


SHARD_FROM_BYTES = 8 << 20
"""Without ``--jobs``, a smaller file is replayed in this process: under a
second's work, less than starting the workers costs."""


def _replay_jobs(events: Path) -> int:
    """``--jobs``' default: the cores we may use, 1 for a small file."""
    try:
        small = events.stat().st_size < SHARD_FROM_BYTES
    except OSError:
        small = True
    return 1 if small else default_jobs()


def _replay_sharded(
    events: Path, reg: Any, cat: Catalogue, end: datetime | None, raw: bool, jobs: int, bar: bool
) -> Any:
    """``--jobs N``: the replay sharded by resident (trygg.tuning.replay_shards);
    exit 1, with nothing on stdout, if a shard fails."""
    from trygg.tuning.replay_shards import replay_sharded
    from trygg.tuning.shards import ShardFailed

    try:
        size = events.stat().st_size or None
    except OSError:
        size = None
    with show_progress("replay", size, unit="events", enabled=bar) as p:

        def tick(done: int, lines: int) -> None:
            p.update(done if size else None, count=lines)

        try:
            run = replay_sharded(
                events,
                reg,
                cat,
                jobs=jobs,
                until=end,
                out=sys.stdout,
                err=sys.stderr,
                raw=raw,
                progress=tick,
            )
        except ShardFailed as exc:
            fail(str(exc))
    return run.stats


REPLAY_CHUNK = 1 << 20  # bytes read at a time when progress is shown


@contextmanager
def _replay_progress(fh: BinaryIO, enabled: bool) -> Iterator[Iterable[bytes]]:
    """The file's lines, with progress by the bytes read (the lines read as the count):
    read a chunk at a time, so the replay loop still iterates in C."""
    if not enabled:
        yield fh
        return
    try:
        size = os.fstat(fh.fileno()).st_size or None
    except (OSError, ValueError):
        size = None

    with show_progress("replay", size, unit="events") as bar:

        def chunks() -> Iterator[list[bytes]]:
            n = 0
            while chunk := fh.readlines(REPLAY_CHUNK):
                n += len(chunk)
                bar.update(fh.tell() if size else None, count=n)
                yield chunk

        yield itertools.chain.from_iterable(chunks())


# Versions, shadow mode and promotion (database-backed): trygg.tuning.versions_cli.
from trygg.tuning import versions_cli as _versions_cli  # noqa: E402

_versions_cli.register(app)


# ``trygg rules backtest`` (issue 8): trygg.tuning.backtest, trygg.store.history,
# trygg.tuning.backtest_report.
from collections.abc import Callable  # noqa: E402

from trygg.cli_support import ConfigOpt, fail, settings_or_exit  # noqa: E402
from trygg.tuning.backtest_shards import ShardedRunner, ShardFailed, default_jobs  # noqa: E402


@app.command("backtest")
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
    database_url: Optional[str] = typer.Option(  # noqa: UP045
        None, "--database-url", help="overrides TRYGG_DATABASE_URL"
    ),
) -> None:
    """Back-test a candidate catalogue against the current one on stored events."""
    import getpass

    import psycopg

    from trygg.durations import parse_duration
    from trygg.rules.engine import CarePlanError
    from trygg.store import history
    from trygg.store.audit import log_access
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
    if jobs is not None and jobs < 1:
        raise typer.BadParameter("--jobs must be at least 1")
    cand = _catalogue(candidate) if not district else None
    try:
        conn = psycopg.connect(s.database_url)
    except psycopg.Error as exc:
        fail(f"cannot connect to the database: {str(exc).strip()}")
    with conn:
        if rules:
            cur = _catalogue(rules)
        else:
            cur = _active_catalogue(conn) or _catalogue([s.rules_dir or default_rules_dir()])
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
                if plan is not None:
                    res = plan.run(
                        stream,
                        registry,
                        start=t1,
                        end=t2,
                        until=t2 + window,
                        incidents=incidents,
                        records=records,
                        teams=team,
                        match_window=window,
                        **({"runner": runner} if runner is not None else {}),
                    )
                else:
                    assert cand is not None
                    res = backtest(
                        stream,
                        registry,
                        cur,
                        cand,
                        start=t1,
                        end=t2,
                        until=t2 + window,
                        incidents=incidents,
                        records=records,
                        teams=team,
                        match_window=window,
                        **({"runner": runner} if runner is not None else {}),
                    )
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
    from trygg.store.versions import overlay_version
    from trygg.tuning import district_versions as dv
    from trygg.tuning.district_versions_cli import overlays_in_force

    if district not in registry.district_ids():
        fail(f"no district {district!r} in the stored registry")
    try:
        src, text = dv.candidate_text(district, candidate)
        overlay = dv.check_overlay(cat, district, src, text)
    except OverlayError as exc:
        typer.echo(f"The candidate overlay of {district} was refused:", err=True)
        for p in exc.problems:
            typer.echo(f"  {p}", err=True)
        raise typer.Exit(1) from None
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


def _active_catalogue(conn: Any) -> Catalogue | None:
    """The active stored catalogue version, if the database has one."""
    import psycopg

    from trygg.store import versions
    from trygg.tuning.versions import catalogue_of

    try:
        with conn.transaction():
            if "active" not in versions.current(conn):
                return None
            return catalogue_of(versions.get(conn, "active").files, "active")
    except psycopg.errors.UndefinedTable:
        return None


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
