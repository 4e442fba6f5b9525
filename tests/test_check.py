"""`trygg check` (issue 18, items 1 and 2), run as a user runs it: real files in a
temporary directory, the installed command, its output and exit code.

Every problem of a set of broken files is reported in one run, each with its
file and line; `trygg run` refuses to start on the same problems in the same
words; a setting out of its range is one plain line naming the variable, what
it holds and what would be valid.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

from tests.conftest import REPO, trygg_cli
from trygg.settings import Settings
from trygg.settings_load import valid_text

RULES = str(REPO / "rules")

# Line numbers below are the files' own (line 1 is "residents:").
REGISTRY = """\
residents:
  - id: r-0001
    team: stovner-nord
    overrides:
      inactivity: {for: soon}
  - id: r-0002
    team: stovner-nord
    timezone: Mars/Olympus
devices:
  - {id: bed-0001, resident: r-0001, kind: bed, room: bedroom}
  - {id: door-0001, resident: r-0009, kind: door}
  - {id: bed-0002, resident: r-0002, kind: toaster}
"""

ROUTING = """\
version: 1
recipients:
  leader:
    contacts:
      - {channel: email, address: leder.example.no}
teams:
  stovner-nord:
    contacts: [{channel: console, address: stovner-nord}]
    on_duty: {day: [leader], night: [nobody]}
    leader: leader
"""

SITE_RULES = """\
- rule: inactivity
  for: forever
  override: {for: replace}
"""


def _files(tmp: Path) -> tuple[Path, Path]:
    reg, routing = tmp / "registry.yaml", tmp / "routing.yaml"
    reg.write_text(REGISTRY)
    routing.write_text(ROUTING)
    return reg, routing


def _no_pydantic_words(text: str) -> None:
    for word in ("errors.pydantic.dev", "Value error", "Input should", "validation error"):
        assert word not in text, f"{word!r} in:\n{text}"
    assert "Traceback" not in text


def test_every_problem_of_broken_files_in_one_run_each_with_its_line(tmp_path: Path) -> None:
    reg, routing = _files(tmp_path)
    r = trygg_cli(
        "check",
        "--registry",
        str(reg),
        "--routing",
        str(routing),
        "--rules",
        RULES,
        env={"TRYGG_TARGET_ANSWER_60S": "97.5"},
        check=False,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout.splitlines()
    expected = [
        # a setting
        "TRYGG_TARGET_ANSWER_60S=97.5: must be a share between 0 and 1, such as 0.975 (or 97.5%)",
        # three registry mistakes
        f"{reg}:8: resident 'r-0002': timezone: unknown timezone 'Mars/Olympus'"
        " (use an IANA name such as Europe/Oslo)",
        f"{reg}:11: device 'door-0001' belongs to unknown resident 'r-0009'",
        f"{reg}:12: device 'bed-0002': kind: must be one of bed, chair, motion, door, button, "
        "pullcord, fall, smoke, water, dispenser, thermometer, seizure, gps, not 'toaster'",
        # a care plan's override of a catalogue rule
        f"{reg}:5: resident 'r-0001': rule 'inactivity': parameter 'for': not a duration: "
        "'soon' (write e.g. 30s, 5m, 1h30m, 2d)",
        # two routing mistakes
        f"{routing}:5: recipients.leader.contacts.0: 'leder.example.no' is not an e-mail address",
        f"{routing}:9: teams.stovner-nord.on_duty.night: unknown recipient 'nobody'",
    ]
    for line in expected:
        assert line in out, f"missing: {line}\n--- got:\n{r.stdout}"
    assert "7 problems found" in out
    _no_pydantic_words(r.stdout + r.stderr)


def test_a_broken_catalogue_override_is_reported_with_the_rest(tmp_path: Path) -> None:
    reg, routing = _files(tmp_path)
    site = tmp_path / "site.yaml"
    site.write_text(SITE_RULES)
    r = trygg_cli(
        "check",
        "--registry",
        str(reg),
        "--routing",
        str(routing),
        "--rules",
        RULES,
        "--rules",
        str(site),
        check=False,
    )
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert (
        f"{site}:2: rule 'inactivity': for: not a duration: 'forever' "
        "(write e.g. 30s, 5m, 1h30m, 2d)" in out
    ), r.stdout
    assert any(x.startswith(f"{reg}:11: ") for x in out)
    assert any(x.startswith(f"{routing}:9: ") for x in out)
    assert "care plans: not checked (the rules do not load)" in out
    _no_pydantic_words(r.stdout + r.stderr)


def test_run_refuses_to_start_on_the_same_problems_in_the_same_words(tmp_path: Path) -> None:
    reg, routing = _files(tmp_path)
    env = {
        "TRYGG_REGISTRY": str(reg),
        "TRYGG_ROUTING": str(routing),
        "TRYGG_RULES_DIR": RULES,
        "TRYGG_SPOOL_DIR": str(tmp_path / "spool"),
    }
    checked = trygg_cli("check", env=env, check=False).stdout.splitlines()
    r = trygg_cli("run", env=env, check=False, timeout=60)
    assert r.returncode == 2, r.stderr
    said = r.stderr.splitlines()
    for line in (
        f"{reg}:11: device 'door-0001' belongs to unknown resident 'r-0009'",
        f"{routing}:9: teams.stovner-nord.on_duty.night: unknown recipient 'nobody'",
    ):
        assert line in checked and line in said, r.stderr
    assert "trygg: not started (trygg check lists the same problems)" in said
    assert not (tmp_path / "spool").exists(), "nothing was started"
    _no_pydantic_words(r.stderr)

    # In JSON log mode every line is JSON, and the problem is the same text.
    r = trygg_cli("run", env={**env, "TRYGG_LOG_FORMAT": "json"}, check=False, timeout=60)
    assert r.returncode == 2
    lines = [json.loads(x) for x in r.stderr.splitlines()]
    problems = [x["problem"] for x in lines if "problem" in x]
    assert f"{reg}:11: device 'door-0001' belongs to unknown resident 'r-0009'" in problems


def test_a_setting_out_of_range_in_plain_words(tmp_path: Path) -> None:
    r = trygg_cli("check", "--rules", RULES, env={"TRYGG_HTTP_PORT": "70000"}, check=False)
    assert r.returncode == 1
    assert "TRYGG_HTTP_PORT=70000: must be a port number from 0 to 65535" in r.stdout
    # the same words from any command that reads the settings, and from the config file
    cfg = tmp_path / "trygg.toml"
    cfg.write_text('site = "oslo"\nstore_stall_s = -1\ntarget_answer_180s = 99\n')
    r = trygg_cli("users", "list", "--config", str(cfg), check=False)
    assert r.returncode == 2
    assert r.stderr.splitlines()[:2] == [
        f"{cfg}:2: store_stall_s = -1: must be a number of seconds, more than 0 and at most 86400",
        f"{cfg}:3: target_answer_180s = 99: must be a share between 0 and 1, such as 0.99 (or 99%)",
    ]
    _no_pydantic_words(r.stderr)
    # a percentage is welcome with its sign
    ok = trygg_cli("check", "--rules", RULES, env={"TRYGG_TARGET_ANSWER_60S": "97.5%"})
    assert "settings: OK" in ok.stdout.splitlines()[0]


def test_all_good_exits_0_with_a_summary_and_wrong_use_exits_2(tmp_path: Path) -> None:
    reg = tmp_path / "registry.yaml"
    reg.write_text(
        "residents:\n  - {id: r-1, team: stovner-nord, overrides: {inactivity: {for: 5h}}}\n"
        "devices:\n  - {id: bed-1, resident: r-1, kind: bed}\n"
    )
    r = trygg_cli(
        "check",
        "--registry",
        str(reg),
        "--routing",
        str(REPO / "routing.example.yaml"),
        "--rules",
        RULES,
        env={"TRYGG_WEBHOOKS": json.dumps({n: "https://example.org/" + n for n in _HOOKS})},
    )
    assert r.returncode == 0
    out = r.stdout.splitlines()
    assert out[-1] == "all good"
    assert f"registry {reg}: 1 resident, 1 device: OK" in out
    assert "care plans: 1 checked against the rules: OK" in out
    assert any(x.startswith("rules ") and x.endswith(": OK") for x in out)
    bad = trygg_cli("check", "--routing", str(tmp_path / "nope.yaml"), check=False)
    assert bad.returncode == 2


_HOOKS = ("stovner-phones", "night-phones", "stovner-leader", "response-centre")


def test_every_number_setting_has_a_range_and_a_unit() -> None:
    for name, info in Settings.model_fields.items():
        ann: Any = info.annotation
        args = [a for a in get_args(ann) if a is not type(None)]
        if (args[0] if args else ann) not in (int, float):
            continue
        text = valid_text(name) or ""
        assert " from " in text or "at least" in text or "more than" in text or "share" in text, (
            f"TRYGG_{name.upper()} has no range: {text!r}"
        )
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        assert extra.get("unit"), f"TRYGG_{name.upper()} has no unit"


def test_the_readme_shows_what_trygg_check_prints(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("```\n$ TRYGG_TARGET_ANSWER_60S=97.5 trygg check ", 1)[1].split("```")[0]
    args, *shown = block.strip().splitlines()
    assert args == "--registry registry.yaml --routing routing.yaml --rules rules"
    _files(tmp_path)
    (tmp_path / "rules").symlink_to(REPO / "rules")
    r = subprocess.run(
        [str(Path(sys.executable).parent / "trygg"), "check", *args.split()],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TRYGG_TARGET_ANSWER_60S": "97.5"},
        timeout=120,
    )

    def same(lines: list[str]) -> list[str]:
        return [re.sub(r"version \S+:", "version V:", x) for x in lines]

    assert same(r.stdout.splitlines()) == same(shown)


def test_the_readme_gives_each_setting_its_range() -> None:
    readme = (REPO / "README.md").read_text()
    for name in Settings.model_fields:
        text = valid_text(name)
        if text is not None:
            assert f"| `TRYGG_{name.upper()}` | " in readme
            row = readme.split(f"| `TRYGG_{name.upper()}` | ", 1)[1].split("\n", 1)[0]
            assert row.split(" | ")[1] == text, f"README's valid column of TRYGG_{name.upper()}"


def test_an_empty_variable_is_unset_as_docker_compose_passes_it(monkeypatch: Any) -> None:
    from trygg.settings_load import read_settings

    monkeypatch.setenv("TRYGG_WEBHOOK_URL", "")  # ${TRYGG_WEBHOOK_URL:-}
    monkeypatch.setenv("TRYGG_WEBHOOK_SECRET", "")
    s, problems = read_settings()
    assert problems == [] and not s.webhook_url


# A registry that is right but for its care plans (line 4: a duration that is not one).
CARE_PLANS = """\
residents:
  - id: r-0001
    team: stovner-nord
    overrides: {inactivity: {for: soon}}
  - id: r-0002
    team: stovner-nord
    overrides: {inactivity: {for: 5h}}
devices:
  - {id: bed-0001, resident: r-0001, kind: bed}
  - {id: bed-0002, resident: r-0002, kind: bed}
"""


def _problems(text: str, path: Path) -> list[str]:
    return [x for x in text.splitlines() if x.startswith(f"{path}:")]


def _residents(db: str) -> int:
    import psycopg

    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM residents").fetchone()
    return int(row[0]) if row else 0


def test_run_refuses_a_care_plan_that_does_not_fit_in_trygg_checks_words(
    tmp_path: Path, db: str
) -> None:
    """With the database up and no catalogue version in it, the catalogue that runs
    is the rules directory's: `trygg run` refuses the care plan that `trygg check`
    finds, with the same line, stores nothing and starts nothing."""
    reg = tmp_path / "registry.yaml"
    reg.write_text(CARE_PLANS)
    env = {
        "TRYGG_REGISTRY": str(reg),
        "TRYGG_RULES_DIR": RULES,
        "TRYGG_DATABASE_URL": db,
        "TRYGG_MQTT_URL": "mqtt://127.0.0.1:9",  # never reached: refused before
        "TRYGG_SPOOL_DIR": str(tmp_path / "spool"),
    }
    checked = trygg_cli("check", env=env, check=False)
    assert checked.returncode == 1
    expected = [
        f"{reg}:4: resident 'r-0001': rule 'inactivity': parameter 'for': not a duration: "
        "'soon' (write e.g. 30s, 5m, 1h30m, 2d)"
    ]
    assert _problems(checked.stdout, reg) == expected, checked.stdout
    r = trygg_cli("run", env=env, check=False, timeout=90)
    assert r.returncode == 2, r.stderr
    assert _problems(r.stderr, reg) == expected, r.stderr
    assert "trygg: not started (trygg check lists the same problems)" in r.stderr.splitlines()
    assert not (tmp_path / "spool").exists(), "nothing was started"
    assert _residents(db) == 0, "the refused registry file was stored"
    _no_pydantic_words(r.stderr)

    # JSON log mode: the same text, one JSON line each.
    r = trygg_cli("run", env={**env, "TRYGG_LOG_FORMAT": "json"}, check=False, timeout=90)
    assert r.returncode == 2
    lines = [json.loads(x) for x in r.stderr.splitlines()]
    assert [x["problem"] for x in lines if "problem" in x] == expected


def test_run_checks_the_care_plans_against_the_version_in_the_database(
    tmp_path: Path, db: str
) -> None:
    """A promoted catalogue version (here: the inactivity rule's `for` at most
    4h30m) runs instead of the rules directory (at most 6h). A care plan of 5h
    without a reason fits the directory, which `trygg check` reads, but not the
    version that would run: `trygg run` refuses it, in the words `trygg check`
    gives for that catalogue."""
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    text = (REPO / "rules" / "standard.yaml").read_text()
    assert "for: {min: 2h, max: 6h}" in text
    (narrow / "standard.yaml").write_text(text.replace("max: 6h}", "max: 4h30m}", 1))
    trygg_cli("rules", "publish", "--rules", str(narrow), "--reason", "test", "--database-url", db)
    reg = tmp_path / "registry.yaml"
    reg.write_text(CARE_PLANS.replace("{for: soon}", "{for: 3h}"))
    env = {
        "TRYGG_REGISTRY": str(reg),
        "TRYGG_RULES_DIR": RULES,
        "TRYGG_DATABASE_URL": db,
        "TRYGG_MQTT_URL": "mqtt://127.0.0.1:9",
        "TRYGG_SPOOL_DIR": str(tmp_path / "spool"),
    }
    assert trygg_cli("check", env=env, check=False).returncode == 0
    against = trygg_cli("check", "--rules", str(narrow), env=env, check=False)
    assert against.returncode == 1
    expected = _problems(against.stdout, reg)
    assert len(expected) == 1 and expected[0].startswith(f"{reg}:7: resident 'r-0002': "), expected
    r = trygg_cli("run", env=env, check=False, timeout=90)
    assert r.returncode == 2, r.stderr
    assert _problems(r.stderr, reg) == expected, r.stderr
    assert not (tmp_path / "spool").exists()
    assert _residents(db) == 0
    # `trygg check --database` reads the active version as trygg run does: the same line
    stored = trygg_cli("check", "--database", env=env, check=False)
    assert stored.returncode == 1, stored.stdout
    assert _problems(stored.stdout, reg) == expected, stored.stdout
    # ... and says so when nothing in the database differs from the directory
    env_ok = {**env, "TRYGG_RULES_DIR": str(narrow)}
    same = trygg_cli("check", "--database", env=env_ok, check=False)
    assert "the active version is the rules directory's" in same.stdout, same.stdout


def test_worker_refuses_on_the_same_problems(tmp_path: Path, db: str) -> None:
    """`trygg worker` (the distributed runner) refuses a bad routing file with
    `trygg check`'s lines, and stored care plans that do not fit the catalogue it
    runs (the rules directory), before it reaches Kafka (none runs here)."""
    _, routing = _files(tmp_path)
    env = {
        "TRYGG_ROUTING": str(routing),
        "TRYGG_RULES_DIR": RULES,
        "TRYGG_DATABASE_URL": db,
        "TRYGG_KAFKA_BOOTSTRAP": "127.0.0.1:9",
    }
    checked = trygg_cli("check", env=env, check=False)
    expected = _problems(checked.stdout, routing)
    assert len(expected) == 2, checked.stdout
    r = trygg_cli("worker", env=env, check=False, timeout=90)
    assert r.returncode == 2, r.stderr
    assert _problems(r.stderr, routing) == expected, r.stderr
    assert "trygg: not started (trygg check lists the same problems)" in r.stderr.splitlines()

    # Stored care plans (trygg registry load) against a narrower rules directory.
    good = tmp_path / "good.yaml"
    good.write_text(CARE_PLANS.replace("{for: soon}", "{for: 3h}"))
    trygg_cli("registry", "load", str(good), "--database-url", db, env={"TRYGG_RULES_DIR": RULES})
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    text = (REPO / "rules" / "standard.yaml").read_text()
    (narrow / "standard.yaml").write_text(text.replace("max: 6h}", "max: 4h30m}", 1))
    env = {
        **env,
        "TRYGG_RULES_DIR": str(narrow),
        "TRYGG_ROUTING": str(REPO / "routing.example.yaml"),
    }
    for fmt in ("console", "json"):
        r = trygg_cli("worker", env={**env, "TRYGG_LOG_FORMAT": fmt}, check=False, timeout=90)
        assert r.returncode == 2, r.stderr
        said = (
            r.stderr.splitlines()
            if fmt == "console"
            else [json.loads(x).get("problem") for x in r.stderr.splitlines()]
        )
        mine = [x for x in said if x and x.startswith("the registry in the database: ")]
        assert len(mine) == 1 and "resident 'r-0002'" in mine[0], r.stderr
        assert "Traceback" not in r.stderr
