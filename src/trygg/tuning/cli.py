"""The ``trygg rules`` app: its commands, in the order ``--help`` lists them
(check and test: trygg.tuning.check_cli; the versions: versions_cli; backtest:
backtest_cli), and ``trygg rules replay`` itself."""

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

from trygg.cli_support import fail
from trygg.progress import progress as show_progress
from trygg.progress import wanted
from trygg.rules.careplan import care_plan_problems_in_file
from trygg.rules.catalogue import Catalogue
from trygg.times import parse_offset_time
from trygg.tuning import versions_cli
from trygg.tuning.backtest_cli import backtest_cmd
from trygg.tuning.check_cli import check, test_cmd
from trygg.tuning.replay import replay as run_replay
from trygg.tuning.rule_inputs import (
    DistrictsOpt,
    RulesOpt,
    catalogue_or_exit,
    check_jobs,
    overlays_or_exit,
    registry_or_exit,
)
from trygg.tuning.shards import default_jobs

app = typer.Typer(help="Check, test and replay the rule catalogue.", no_args_is_help=True)

app.command()(check)
app.command("test")(test_cmd)


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
    check_jobs(jobs)
    cat = catalogue_or_exit(rules)
    reg = registry_or_exit(registry)
    problems = care_plan_problems_in_file(cat, reg, registry)
    if problems:
        for p in problems:
            typer.echo(p, err=True)
        raise typer.Exit(1)
    from trygg.rules.overlays import apply_overlays

    reg = apply_overlays(reg, overlays_or_exit(cat, rules, districts))
    end: datetime | None = None
    if until is not None:
        try:
            end = parse_offset_time(until, "--until")
        except ValueError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
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
versions_cli.register(app)

# ``trygg rules backtest`` (issue 8): trygg.tuning.backtest_cli.
app.command("backtest")(backtest_cmd)
