"""trygg.progress: plain lines at most every 5 s when stderr is not a terminal
(a fake clock), and `trygg rules replay --progress` / `trygg simulate` writing
them to stderr while stdout keeps only the command's own output."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trygg import progress
from trygg.progress import Lines, wanted

LINE = re.compile(r"^(replay|simulate): [\d,]+ (events|messages), \d+ %, [\d,]+ s(, done)?$")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_lines_at_most_every_five_seconds_and_a_last_one_only_after_any() -> None:
    clock, out = Clock(), io.StringIO()
    p = Lines("replay", 2_000_000, "events", out, clock=clock)
    for i in range(1, 41):  # 40 updates, 0.5 s apart: 20 s
        clock.t += 0.5
        p.update(i * 30_000, count=i * 30_000)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "replay: 300,000 events, 15 %, 5 s",
        "replay: 600,000 events, 30 %, 10 s",
        "replay: 900,000 events, 45 %, 15 s",
        "replay: 1,200,000 events, 60 %, 20 s",
        "replay: 1,200,000 events, 100 %, 20 s, done",
    ]
    out2 = io.StringIO()
    short = Lines("replay", 10, "events", out2, clock=Clock())
    short.update(10, count=10)
    short.close()
    assert out2.getvalue() == ""  # a short run writes nothing


def test_lines_without_a_total_or_a_count() -> None:
    clock, out = Clock(), io.StringIO()
    p = Lines("report", None, "stages", out, clock=clock)
    clock.t += 6
    p.advance(note="plots")
    p.close(ok=False)  # failed: no "done" line
    assert out.getvalue() == "report: 6 s, plots\n"


def test_wanted_an_explicit_option_wins_else_a_terminal() -> None:
    pipe = io.StringIO()
    assert wanted(True, pipe) is True
    assert wanted(False, pipe) is False
    assert wanted(None, pipe) is False


def _replay_files(tmp_path: Path, n: int) -> tuple[Path, Path]:
    reg = tmp_path / "registry.yaml"
    reg.write_text(
        "residents: [{id: r-1, team: a}]\ndevices: [{id: b-1, resident: r-1, kind: button}]\n"
    )
    ev = tmp_path / "ev.jsonl"
    with ev.open("w") as f:
        for i in range(n):
            m, s = divmod(i, 60)
            f.write(
                f'{{"id":"{i}","type":"button.pressed",'
                f'"time":"2026-05-05T{10 + m // 60:02d}:{m % 60:02d}:{s:02d}+02:00",'
                f'"device":"b-1"}}\n'
            )
    return reg, ev


def test_replay_progress_lines_on_stderr_and_stdout_stays_the_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trygg.tuning import cli

    reg, ev = _replay_files(tmp_path, 3000)
    args = ["replay", "--events", str(ev), "--registry", str(reg)]
    runner = CliRunner()
    plain = runner.invoke(cli.app, args)
    assert plain.exit_code == 0, plain.output
    # A line at every chunk read (small chunks, no wait): stderr is not a terminal.
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    monkeypatch.setattr(cli, "REPLAY_CHUNK", 16_384)
    r = runner.invoke(cli.app, [*args, "--progress"])
    assert r.exit_code == 0, r.output
    assert r.stdout == plain.stdout  # the alerts, and nothing else
    assert all(json.loads(x)["rule"] == "button" for x in r.stdout.splitlines())
    lines = [x for x in r.stderr.splitlines() if x.startswith("replay: ")]
    assert len(lines) > 5, r.stderr
    assert all(LINE.match(x) for x in lines), lines
    counts = [int(x.split()[1].replace(",", "")) for x in lines]
    assert counts == sorted(counts) and counts[-1] == 3000
    assert re.search(r", 100 %, [\d,]+ s, done$", lines[-1]), lines[-1]
    # --no-progress, and the default off a terminal: none
    r = runner.invoke(cli.app, [*args, "--no-progress"])
    assert "replay: " not in r.stderr
    r = runner.invoke(cli.app, args)
    assert "replay: " not in r.stderr


def test_simulate_jsonl_progress_lines_and_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    from trygg.simulate.cli import register

    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # a group, so "simulate" is a sub-command
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    args = ["simulate", "--residents", "20", "--days", "2", "--start", "2026-03-01"]
    r = CliRunner().invoke(app, [*args, "--jsonl", "-"])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stderr.splitlines() if x.startswith("simulate: ")]
    assert lines and all(LINE.match(x) for x in lines), lines
    assert lines[-1].endswith(", done")
    assert all(json.loads(x)["device"] for x in r.stdout.splitlines())  # stdout: JSONL only
    q = CliRunner().invoke(app, [*args, "--jsonl", "-", "--quiet"])
    assert q.stderr == "" and q.stdout == r.stdout
