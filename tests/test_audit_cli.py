"""``trygg audit exception add/list`` (issue 6)."""

from __future__ import annotations

import json

from tests.conftest import trygg_cli
from tests.test_kpi import aid, load_known


def test_exception_reports_round_trip(db: str) -> None:
    load_known(db)
    env = {"TRYGG_DATABASE_URL": db}
    period = ["--from", "2026-03-01", "--to", "2026-11-01"]
    out = trygg_cli("audit", "exception", "list", *period, "--missing", "--format", "json", env=env)
    assert {r["alert"] for r in json.loads(out.stdout)} == {aid("A4"), aid("A5"), aid("A11")}
    trygg_cli(
        "audit",
        "exception",
        "add",
        aid("A4"),
        "--kind",
        "answer",
        "--cause",
        "two alarms at once, one nurse on duty",
        "--action",
        "second nurse on evenings",
        "--outcome",
        "resident unharmed",
        "--by",
        "leader-1",
        env=env,
    )
    out = trygg_cli("audit", "exception", "list", *period, "--format", "json", env=env)
    rows = {r["alert"]: r for r in json.loads(out.stdout)}
    assert rows[aid("A4")]["reports"] == 1
    assert rows[aid("A4")]["cause"] == "two alarms at once, one nurse on duty"
    out = trygg_cli("audit", "exception", "list", *period, "--missing", "--format", "csv", env=env)
    assert aid("A4") not in out.stdout and aid("A5") in out.stdout
    bad = trygg_cli(
        "audit",
        "exception",
        "add",
        "00000000-0000-0000-0000-000000000000",
        "--cause",
        "x",
        "--action",
        "y",
        "--by",
        "z",
        env=env,
        check=False,
    )
    assert bad.returncode == 1 and "no alert" in bad.stderr
    assert trygg_cli("audit", "verify", env=env).returncode == 0
