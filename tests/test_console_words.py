"""The suppression reasons of the alert gates, as the API gives them to the console
(``suppressed_why``): the gates' English sentence taken apart into a code and
its parts, so the console says it in Norwegian or English. And the console's
outcome choices against the lifecycle's outcomes."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trygg.alerts.alert import Outcome
from trygg.alerts.silences import Silence, SilenceScope
from trygg.api.words import suppressed_why


def test_a_silence_reason_in_parts() -> None:
    start = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
    s = Silence(
        id="s-1",
        scope=SilenceScope.RESIDENT,
        target="r-0007",
        start=start,
        end=start + timedelta(hours=3),
        created_by="nurse-7",
        reason="på sykehus (til torsdag), sier datteren",
    )
    assert suppressed_why(s.describe()) == {
        "code": "silenced",
        "reason": "på sykehus (til torsdag), sier datteren",
        "by": "nurse-7",
        "scope": "resident",
        "target": "r-0007",
        "until": "2026-12-06T04:00:00+00:00",
    }


def test_an_offline_device_reason_in_parts() -> None:
    # the shape trygg.alerts.gates gives (and tests/test_api.py checks through the API)
    why = suppressed_why("inhibited: device motion-12 is offline (alert 3f2a-77)")
    assert why == {"code": "inhibited", "device": "motion-12", "alert": "3f2a-77"}


def test_no_reason_and_an_unknown_one() -> None:
    assert suppressed_why(None) is None
    assert suppressed_why("") is None
    assert suppressed_why("something new") == {"code": "other", "text": "something new"}


CONSOLE_JS = Path(__file__).resolve().parents[1] / "src/trygg/api/static/console.js"


def test_the_outcome_dialog_offers_every_staff_outcome_in_both_languages() -> None:
    js = CONSOLE_JS.read_text()
    m = re.search(r"^const OUTCOMES = (\[.*?\]);", js, re.M)
    assert m is not None
    offered = json.loads(m.group(1))
    # every outcome but auto_resolved (trygg's own, never a staff member's)
    assert sorted(offered) == sorted(o.value for o in Outcome if o is not Outcome.AUTO_RESOLVED)
    tables = re.findall(r"^    outcomes: \{(.*?)\},$", js, re.M | re.S)
    assert len(tables) == 2  # nb and en
    for table in tables:
        assert set(re.findall(r"(\w+): \"", table)) == set(offered)
    assert 'not_at_home: "Ikke hjemme"' in tables[0]
    assert 'not_at_home: "Not at home"' in tables[1]


def test_every_rule_of_the_standard_catalogue_has_words_in_both_languages() -> None:
    """Staff and the report see a rule's name, never its id (device-clock was missing)."""
    from tests.conftest import REPO
    from trygg.api.words import RULES
    from trygg.rules import load_catalogue

    rules = load_catalogue([REPO / "rules" / "standard.yaml"]).rule_ids
    assert rules
    missing = [r for r in rules if r not in RULES]
    assert missing == []
    assert all(nb and en and nb != r for r, (nb, en) in RULES.items())
