"""`trygg simulate`: realistic traffic from simulated homes (see docs/simulator.md)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import typer

from trygg.durations import parse_duration
from trygg.progress import Progress
from trygg.progress import progress as show_progress
from trygg.registry import DEFAULT_TIMEZONE
from trygg.simulate.events import SimEvent
from trygg.simulate.generate import generate
from trygg.simulate.homes import DEFAULT_TEAMS, build_homes, registry_yaml
from trygg.simulate.incidents import DEFAULT_RATES, Truth, make_rates
from trygg.simulate.output import WriteStats, malformed_line, write_jsonl, write_truth

_INCIDENTS = ", ".join(DEFAULT_RATES)


def parse_start(text: str | None, tz: ZoneInfo) -> datetime:
    """``2026-03-27``, ``2026-03-27T06:00``, with or without offset; naive is local."""
    if not text or text == "now":
        return datetime.now(tz).replace(microsecond=0)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"not a date or time: {text!r} (write e.g. 2026-03-27 or 2026-03-27T06:00)",
            param_hint="--start",
        ) from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)


def parse_rates(items: list[str], scale: float) -> dict[str, float]:
    over: dict[str, float] = {}
    for item in items:
        name, sep, val = item.partition("=")
        try:
            if not sep:
                raise ValueError
            over[name.strip()] = float(val)
        except ValueError:
            raise typer.BadParameter(
                f"{item!r}: write NAME=RATE, e.g. fall=0.05", param_hint="--rate"
            ) from None
    try:
        return make_rates(over, scale)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rate") from None


@contextlib.contextmanager
def _open_out(path: str | None) -> Iterator[IO[str] | None]:
    if path is None:
        yield None
    elif path == "-":
        yield sys.stdout
        sys.stdout.flush()
    else:
        with open(path, "w", encoding="utf-8") as fh:
            yield fh


def simulate(
    residents: int = typer.Option(20, "--residents", "-n", min=0, help="Number of homes."),
    seed: int = typer.Option(1, help="Random seed: the same seed gives the same homes and events."),
    start: str | None = typer.Option(
        None,
        help="Start of the simulated period (ISO date or time; local if no offset). Default: now.",
    ),
    duration: str | None = typer.Option(
        None, help="Length of the period, e.g. 12h, 7d. Default: 1d."
    ),
    days: float | None = typer.Option(
        None, help="Length of the period in days (instead of --duration)."
    ),
    speed: float = typer.Option(
        1.0, min=0.001, help="Publishing pace: simulated seconds per real second (1 = real time)."
    ),
    as_fast_as_possible: bool = typer.Option(
        False,
        "--as-fast-as-possible",
        help="Publish without pacing, as fast as the broker acknowledges.",
    ),
    mqtt_url: str | None = typer.Option(
        None,
        envvar="TRYGG_MQTT_URL",
        help="Publish to this broker: mqtt://user:pass@host:port (mqtts:// for TLS).",
    ),
    site: str = typer.Option(
        "demo", envvar="TRYGG_SITE", help="The {site} in trygg/{site}/devices/..."
    ),
    batch: int = typer.Option(
        1, min=1, help="Publish JSON arrays of up to N events per device (gateway style)."
    ),
    client_id: str | None = typer.Option(None, help="MQTT client id (default: random)."),
    jsonl: str | None = typer.Option(
        None, "--jsonl", help="Write events in the replay format to FILE ('-' for stdout)."
    ),
    registry_out: Path | None = typer.Option(
        None, help="Write the registry YAML of the simulated homes."
    ),
    truth: Path | None = typer.Option(
        None, help="Write the ground truth of injected incidents (JSONL)."
    ),
    malformed_out: Path | None = typer.Option(
        None,
        help="Write malformed payloads here (JSONL, raw bytes in base64) when not publishing them.",
    ),
    rate: list[str] = typer.Option(
        [],
        "--rate",
        help=f"Incidents per resident-day, NAME=RATE (repeatable). Names: {_INCIDENTS}.",
    ),
    incident_scale: float = typer.Option(
        1.0, min=0.0, help="Multiply every incident rate by this."
    ),
    dispenser_share: float = typer.Option(
        0.4, min=0.0, max=1.0, help="Share of homes with a dispenser."
    ),
    fall_share: float = typer.Option(
        0.3, min=0.0, max=1.0, help="Share of homes with a fall detector."
    ),
    smoke_share: float = typer.Option(
        0.8, min=0.0, max=1.0, help="Share of homes with a smoke detector."
    ),
    thermometer_share: float = typer.Option(
        0.5, min=0.0, max=1.0, help="Share of homes with a thermometer."
    ),
    teams: str = typer.Option(",".join(DEFAULT_TEAMS), help="Comma-separated team names."),
    timezone: str = typer.Option(DEFAULT_TIMEZONE, help="The residents' timezone (IANA name)."),
    heartbeat: str = typer.Option("5m", help="Heartbeat interval of every device."),
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="No progress or summary on stderr (progress: a bar on a terminal, "
        "else a line every 5 s).",
    ),
) -> None:
    """Simulate homes: routines, incidents, heartbeats; publish to MQTT and/or write files."""
    try:
        tz = ZoneInfo(timezone)
    except Exception:
        raise typer.BadParameter(
            f"unknown timezone {timezone!r}", param_hint="--timezone"
        ) from None
    t0 = parse_start(start, tz)
    if duration is not None and days is not None:
        raise typer.BadParameter("give --duration or --days, not both")
    try:
        span = timedelta(days=days) if days is not None else parse_duration(duration or "1d")
        hb = parse_duration(heartbeat)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    rates = parse_rates(rate, incident_scale)
    team_list = tuple(t.strip() for t in teams.split(",") if t.strip())
    if not team_list:
        raise typer.BadParameter("at least one team", param_hint="--teams")
    if mqtt_url is None and jsonl is None and registry_out is None:
        raise typer.BadParameter("nothing to do: give --mqtt-url, --jsonl and/or --registry-out")

    _, homes = build_homes(
        residents,
        seed,
        teams=team_list,
        timezone=timezone,
        dispenser_share=dispenser_share,
        fall_share=fall_share,
        smoke_share=smoke_share,
        thermometer_share=thermometer_share,
        heartbeat=hb,
    )
    if registry_out is not None:
        registry_out.write_text(registry_yaml(homes), encoding="utf-8")
    if mqtt_url is None and jsonl is None:
        return

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    truth_list: list[Truth] = []
    events: Iterator[SimEvent] = generate(homes, t0, t0 + span, seed, rates, truth_list)
    wstats = WriteStats()
    say(
        f"simulating {residents} homes from {t0.isoformat()} for {span} "
        f"(seed {seed}{', to ' + mqtt_url.split('@')[-1] if mqtt_url else ''})"
    )
    try:
        with (
            _open_out(jsonl) as out,
            _open_out(str(malformed_out) if malformed_out else None) as bad_out,
            show_progress(
                "simulate", span.total_seconds(), unit="messages", enabled=not quiet
            ) as bar,
        ):
            if not quiet:
                events = _with_progress(events, bar, t0, every=1 if mqtt_url else 256)
            if mqtt_url is None:
                assert out is not None
                write_jsonl(events, out, malformed_out=bad_out, stats=wstats)
            else:
                from trygg.simulate.publisher import PublishStats, publish

                stream: Any = events
                if out is not None:
                    stream = _tee(events, out, wstats)
                elif bad_out is not None:
                    stream = _tee_malformed(events, bad_out)

                def progress(st: PublishStats) -> None:
                    bar.update(note=f"{st.messages:,} published, {st.acked:,} acknowledged")

                try:
                    pst = publish(
                        stream,
                        mqtt_url,
                        site,
                        None if as_fast_as_possible else speed,
                        batch=batch,
                        client_id=client_id,
                        on_progress=progress,
                    )
                except (ConnectionError, TimeoutError, ValueError) as exc:
                    say(f"error: {exc}")
                    raise typer.Exit(2) from None
                say(
                    f"published {pst.events} events ({pst.duplicates} duplicates) and "
                    f"{pst.malformed} malformed payloads in {pst.messages} messages, "
                    f"{pst.seconds:.1f} s"
                )
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        if truth is not None:
            with open(truth, "w", encoding="utf-8") as fh:
                n = write_truth(truth_list, fh)
            say(f"wrote {n} ground-truth records to {truth}")
    if jsonl is not None:
        say(
            f"wrote {wstats.events} events ({wstats.duplicates} duplicates; "
            f"{wstats.malformed} malformed payloads not in the JSONL) to {jsonl}"
        )


def _with_progress(
    events: Iterator[SimEvent], bar: Progress, start: datetime, every: int
) -> Iterator[SimEvent]:
    """The events, telling ``bar`` how far through the simulated period they are."""
    t0 = start.timestamp()
    n = 0
    for ev in events:
        n += 1
        if n % every == 0:
            bar.update(ev.ts - t0, count=n)
        yield ev
    bar.update(count=n)


def _tee(events: Iterator[SimEvent], out: IO[str], st: WriteStats) -> Iterator[SimEvent]:
    for ev in events:
        if ev.raw is None:
            write_jsonl((ev,), out, stats=st)
        else:
            st.malformed += 1
        yield ev


def _tee_malformed(events: Iterator[SimEvent], out: IO[str]) -> Iterator[SimEvent]:
    for ev in events:
        if ev.raw is not None:
            out.write(malformed_line(ev) + "\n")
        yield ev


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to the main ``trygg`` app."""
    app.command(
        "simulate",
        help="Simulate homes with sensors: realistic routines, incidents and ground truth. "
        "Publishes to MQTT (--mqtt-url) and/or writes replay JSONL (--jsonl).",
    )(simulate)
