"""The README's first command, as a new user runs it: ``trygg demo``.

It must show a red alarm at once (not after minutes of simulated life), print
each alert once, and leave no work directory behind.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import trygg_cli


def test_the_demo_shows_a_red_alarm_at_once_and_cleans_up() -> None:
    r = trygg_cli("demo", "--seconds", "20", "--homes", "4", timeout=180)
    out = r.stdout
    work = re.search(r"mosquitto in (\S+)", out)
    assert work is not None, out
    assert not Path(work.group(1)).exists(), "the demo left its work directory behind"
    alerts = [line for line in out.splitlines() if line.lstrip().startswith("ALERT")]
    assert any(" red " in line for line in alerts), out
    m = re.search(r"trygg demo: (\d+) events, (\d+) stored, (\d+) alerts", out)
    assert m is not None and int(m.group(1)) > 0 and m.group(1) == m.group(2), out
    # Each alert printed once: reminders and retries are not new alerts (52 ALERT
    # lines for 13 alerts were seen before).
    assert len(alerts) <= int(m.group(3)), out
