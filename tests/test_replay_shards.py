"""`trygg rules replay --jobs N` (issue 22): replay sharded by resident across
worker processes prints the single process's stdout and stderr byte for byte
-- on a simulated month across the spring-forward night with care plans,
repeats, late, bad and unknown-device lines; the order of alerts at the same
instant across shards; live's dedup window turning over; and a killed shard
fails the run with nothing on stdout."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.conftest import trygg_cli
from tests.helpers import wait_until
from tests.shard_kill import assert_failed_whole, kill_a_worker, workers
from trygg.registry import Registry, parse_registry
from trygg.rules.catalogue import Catalogue, default_rules_dir, load_catalogue
from trygg.simulate import build_homes, generate, make_rates
from trygg.simulate.homes import registry_data
from trygg.simulate.output import write_jsonl
from trygg.tuning.replay import ReplayStats, replay
from trygg.tuning.replay_shard_worker import shard_of_residents
from trygg.tuning.replay_shards import replay_sharded

OSLO = ZoneInfo("Europe/Oslo")
START = datetime(2026, 3, 15, tzinfo=OSLO)  # across the spring-forward night (29 March)
END = datetime(2026, 4, 15, tzinfo=OSLO)
HOMES = 10
CARE_PLANS = {
    "r-0002": {"bed-exit-no-return": {"wait": "25m"}},
    "r-0005": {"inactivity": {"for": "3h"}},
    "r-0007": {"device-offline": {"heartbeats": 2}},
}


@dataclass
class Month:
    events: Path
    registry: Path
    reg: Registry
    lines: int


def _inject(lines: list[str], devices: list[str]) -> list[str]:
    """The simulator's lines plus the awkward ones a real file has, at fixed places."""
    out = list(lines)

    def time_at(i: int) -> datetime:
        return datetime.fromisoformat(json.loads(out[i])["time"])

    def device_at(i: int) -> str:
        return str(json.loads(out[i])["device"])

    n = len(out)
    spots = [n // 11 * k for k in range(1, 11)]
    extra: dict[int, str] = {}
    for k, i in enumerate(spots):
        t = time_at(i)
        ts = t.isoformat()
        dev = devices[(k * 7) % len(devices)]
        extra[i] = [
            "this is not json",
            "",
            json.dumps(
                {
                    "device": "ghost-0001",
                    "id": f"g-{k}",
                    "type": "heartbeat",
                    "time": t.isoformat(),
                },
                separators=(",", ":"),
            ),
            # an escaped key: the byte scan cannot place it, every shard validates it
            f'{{"d\\u0065vice":"{dev}","id":"esc-{k}","type":"heartbeat","time":"{ts}"}}',
            # a device only in a nested object: a bad line, reported once
            f'{{"x":{{"device":"{dev}"}},"id":"nest-{k}","type":"heartbeat","time":"{ts}"}}',
            # late for its device (three hours behind its own newest event)
            json.dumps(
                {
                    "device": device_at(i),
                    "id": f"late-{k}",
                    "type": "heartbeat",
                    "time": (t - timedelta(hours=3)).isoformat(),
                }
            ),
            # spaces after the colons (json.dumps' default) and before one
            f'{{"device" : "{dev}", "id": "sp-{k}", "type": "heartbeat", "time": "{ts}"}}',
            json.dumps(
                {"device": dev, "id": f"tp-{k}", "type": "no.such.type", "time": t.isoformat()}
            ),
            # a repeat of the line just before
            out[i - 1],
            json.dumps(
                {"device": dev, "id": f"ok-{k}", "type": "heartbeat", "time": t.isoformat()}
            ),
        ][k]
    return [x for i, line in enumerate(out) for x in ([extra[i], line] if i in extra else [line])]


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    """A month of 10 simulated homes (hourly heartbeats), three with care plans,
    with re-sends and device outages, and the awkward lines of ``_inject``."""
    tmp = tmp_path_factory.mktemp("month")
    _, homes = build_homes(HOMES, seed=3, heartbeat=timedelta(hours=1))
    rates = make_rates({"device-offline": 0.15, "night-exit-no-return": 0.2, "duplicate": 0.5})
    buf = io.StringIO()
    write_jsonl(generate(homes, START, END, 3, rates, []), buf)
    data = registry_data(homes)
    for r in data["residents"]:
        if r["id"] in CARE_PLANS:
            r["overrides"] = CARE_PLANS[r["id"]]
    reg = parse_registry(data)
    lines = _inject(buf.getvalue().splitlines(), sorted(d.id for d in reg.devices))
    events = tmp / "month.jsonl"
    events.write_text("\n".join(lines) + "\n")
    registry = tmp / "registry.yaml"
    registry.write_text(yaml.safe_dump(data, sort_keys=False))
    return Month(events, registry, reg, len(lines))


def cli(m: Month, jobs: int, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["rules", "replay", "--events", str(m.events), "--registry", str(m.registry)]
    return trygg_cli(*args, "--no-progress", "--jobs", str(jobs), *extra, timeout=300)


def _ties(out: str) -> list[tuple[str, str]]:
    """Neighbouring alerts at the same instant of residents out of id order."""
    docs = [json.loads(x) for x in out.splitlines()]
    return [
        (a["resident"], b["resident"])
        for a, b in itertools.pairwise(docs)
        if a["at"] == b["at"] and a["resident"] > b["resident"]
    ]


def test_sharded_cli_output_is_byte_identical(month: Month) -> None:
    one = cli(month, 1)
    three = cli(month, 3)
    assert three.stdout == one.stdout
    assert three.stderr == one.stderr
    # not a vacuous comparison: every kind of stderr line, alerts of residents in
    # every shard, the care plans at work
    err = one.stderr
    for what in ("repeated event", "late event", "unknown device", "pending at the end"):
        assert what in err, what
    summary = err.splitlines()[-1]
    assert summary.startswith("replayed ") and "(0 bad" not in summary, summary
    alerts = [json.loads(x) for x in one.stdout.splitlines()]
    shards = shard_of_residents(month.reg, 3)
    assert {shards[a["resident"]] for a in alerts} == {0, 1, 2}
    assert {"r-0002", "r-0007"} & {a["resident"] for a in alerts}
    assert len(alerts) > 50


DEFAULT_OVERLAY = """- rule: bed-exit-no-return
  wait: 30m
  reason: our residents take longer to get back to bed
"""


def test_sharded_raw_until_and_districts_are_byte_identical(month: Month, tmp_path: Path) -> None:
    districts = tmp_path / "districts"
    districts.mkdir()
    (districts / "default.yaml").write_text(DEFAULT_OVERLAY)
    outs = {}
    options = (
        ("--raw",),
        ("--until", "2026-04-20T12:00:00+02:00"),
        ("--districts", str(districts)),
    )
    for extra in options:
        one = cli(month, 1, *extra)
        two = cli(month, 2, *extra)
        assert two.stdout == one.stdout, extra
        assert two.stderr == one.stderr, extra
        outs[extra[0]] = one.stdout
    plain = cli(month, 1).stdout
    assert '"action": "clear"' in outs["--raw"]
    assert outs["--until"] != plain  # the clock ran on: more alerts
    assert outs["--districts"] != plain  # the overlay moved bed exits


def _single(path: Path, reg: Registry, cat: Catalogue, **kw: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with path.open("rb") as fh:
        replay(fh, reg, cat, out=out, err=err, **kw)
    return out.getvalue(), err.getvalue()


def _sharded(
    path: Path, reg: Registry, cat: Catalogue, jobs: int, **kw: Any
) -> tuple[Any, str, str]:
    out, err = io.StringIO(), io.StringIO()
    run = replay_sharded(path, reg, cat, jobs=jobs, out=out, err=err, **kw)
    return run, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def month_single(month: Month) -> tuple[str, str, ReplayStats]:
    """The month replayed in this process, through the library call."""
    out, err = io.StringIO(), io.StringIO()
    with month.events.open("rb") as fh:
        _, stats = replay(fh, month.reg, load_catalogue([default_rules_dir()]), out=out, err=err)
    return out.getvalue(), err.getvalue(), stats


@pytest.mark.parametrize("jobs", [1, 2, 3, 5])
def test_any_number_of_shards_gives_the_same_output(
    month: Month, month_single: tuple[str, str, ReplayStats], jobs: int
) -> None:
    cat = load_catalogue([default_rules_dir()])
    run, out, err = _sharded(month.events, month.reg, cat, jobs)
    assert (out, err) == month_single[:2]
    assert run.stats == month_single[2]
    assert not run.one_process and len(run.runs) == jobs
    assert run.stats.lines == month.lines


# ---------------------------------------------------- the order at one instant --

TIE_REGISTRY = {
    "residents": [{"id": r, "team": "t"} for r in ("r-a", "r-b", "r-c", "r-d")],
    "devices": [
        {"id": f"button-{r}", "resident": f"r-{r}", "kind": "button", "heartbeat": "10m"}
        for r in "abcd"
    ]
    + [{"id": "pir-b", "resident": "r-b", "kind": "motion", "room": "hallway", "heartbeat": "10m"}],
}


def _line(dev: str, eid: str, typ: str, t: datetime) -> str:
    return json.dumps({"device": dev, "id": eid, "type": typ, "time": t.isoformat()})


def test_alerts_at_one_instant_keep_the_decided_order_across_shards(tmp_path: Path) -> None:
    """Buttons pressed at the same instant print in line order (r-d before r-a);
    an alert decided at an event comes before one the clock's run fires at the
    same instant; the clock's run fires by (deadline, resident)."""
    t0 = datetime(2026, 3, 29, 1, 0, tzinfo=OSLO)
    t30 = t0 + timedelta(minutes=30)  # every button's device-offline deadline
    lines = [
        _line("button-d", "1", "heartbeat", t0),
        _line("button-b", "2", "heartbeat", t0),
        _line("pir-b", "2b", "heartbeat", t0),  # offline with button-b: folded into its alert
        _line("button-c", "3", "heartbeat", t0),
        _line("button-a", "4", "heartbeat", t0),
        _line("button-d", "5", "button.pressed", t0 + timedelta(minutes=5)),
        _line("button-a", "6", "button.pressed", t0 + timedelta(minutes=5)),
        _line("button-c", "7", "button.pressed", t30),
        _line("button-d", "8", "heartbeat", t0 + timedelta(hours=2)),
    ]
    path = tmp_path / "ties.jsonl"
    path.write_text("\n".join(lines) + "\n")
    reg = parse_registry(TIE_REGISTRY)
    cat = load_catalogue([default_rules_dir()])
    for raw in (False, True):
        want = _single(path, reg, cat, raw=raw)
        _, stats = replay(path.read_bytes().splitlines(), reg, cat, raw=raw)
        assert len(_ties(want[0])) >= 2 or raw
        assert stats.folded == (0 if raw else 1)
        for jobs in (2, 4):
            run, out, err = _sharded(path, reg, cat, jobs, raw=raw)
            assert (out, err) == want, (raw, jobs)
            assert run.stats == stats
    docs = [json.loads(x) for x in want[0].splitlines() if '"fire"' in x]
    order = [(d["resident"], d["rule"]) for d in docs]
    assert order.index(("r-d", "button")) < order.index(("r-a", "button"))
    at30 = [(d["resident"], d["rule"]) for d in docs if d["at"] == t30.isoformat()]
    assert at30[0] == ("r-c", "button")


# ---------------------------------------------------- live's dedup window --

WINDOW_REGISTRY = {
    "residents": [{"id": f"r-{i}", "team": "t"} for i in range(3)],
    "devices": [
        {
            "id": f"pir-{i}",
            "resident": f"r-{i}",
            "kind": "motion",
            "room": "livingroom",
            "heartbeat": "1h",
        }
        for i in range(3)
    ],
}


def _window_file(path: Path, repeats: dict[int, int]) -> None:
    """Events of three residents in turn, a minute apart; ``repeats``: line ->
    the earlier line it repeats (its device and id, at the new line's time)."""
    t0 = datetime(2026, 3, 20, 8, 0, tzinfo=OSLO)
    rows: list[tuple[str, str]] = []
    text = []
    for n in range(1, 121):
        t = t0 + timedelta(minutes=n)
        if n in repeats:
            dev, eid = rows[repeats[n] - 1]
        else:
            dev, eid = f"pir-{n % 3}", f"e-{n}"
        rows.append((dev, eid))
        text.append(_line(dev, eid, "motion.detected", t) + "\n")
    path.write_text("".join(text))


def test_the_dedup_window_turns_over_as_the_single_process_does(tmp_path: Path) -> None:
    """With a set of 8 keys (generations of 4): a repeat 3 lines on is dropped;
    one whose shard alone added 8 keys since is not (the window has turned
    over); both decided in the shards. One 9 lines on, with fewer of its own
    keys between, depends on the others' keys: replayed in one process."""
    reg = parse_registry(WINDOW_REGISTRY)
    cat = load_catalogue([default_rules_dir()])
    decided = tmp_path / "decided.jsonl"
    # line 4 is pir-1 again: 3 lines after line 1 (pir-1); line 60 repeats line 3
    # (pir-0): 19 of pir-0's own keys later
    _window_file(decided, {4: 1, 60: 3, 90: 87})
    want = _single(decided, reg, cat, dedup_capacity=8)
    assert "line 4: repeated event" in want[1] and "line 90: repeated event" in want[1]
    assert "line 60:" not in want[1]  # out of the window: replayed again
    for jobs in (2, 3):
        run, out, err = _sharded(decided, reg, cat, jobs, dedup_capacity=8)
        assert (out, err) == want
        assert not run.one_process
    undecided = tmp_path / "undecided.jsonl"
    _window_file(undecided, {4: 1, 30: 21})  # 9 lines on, 3 own keys between
    want = _single(undecided, reg, cat, dedup_capacity=8)
    run, out, err = _sharded(undecided, reg, cat, 3, dedup_capacity=8)
    assert run.one_process
    assert (out, err) == want
    # with live's own window (500,000 keys) the same repeat is plainly inside it
    run, out, err = _sharded(undecided, reg, cat, 3)
    assert not run.one_process and (out, err) == _single(undecided, reg, cat)


# ---------------------------------------------------- a shard that dies --


def _reading(pid: int, path: Path) -> list[int]:
    """The two workers of ``pid``, once both have ``path`` open (else none)."""
    found = []
    for w in workers(pid):
        try:
            fds = list(Path(f"/proc/{w}/fd").iterdir())
            if any(os.readlink(fd) == str(path) for fd in fds):
                found.append(w)
        except OSError:
            continue
    return found if len(found) == 2 else []


def test_a_killed_shard_fails_the_run_and_prints_nothing(month: Month, tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    body = month.events.read_bytes()
    big.write_bytes(body * 6)
    args = ["rules", "replay", "--events", str(big), "--registry", str(month.registry)]
    run = kill_a_worker(
        [*args, "--jobs", "2", "--no-progress"],
        # mid-run: both workers are reading the file
        lambda pid: wait_until(lambda: _reading(pid, big), 60),
    )
    assert_failed_whole(run, "replay", "no alerts were printed")
    assert "line " not in run.stderr
