"""trygg's message catalogue (src/trygg/locale): the same keys and placeholders in
every language, every key the reports use is there, and the words the console
shows for the same things are the catalogue's words (issue 18, item 5)."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.pofile import read_po
from jinja2.ext import babel_extract

from trygg.alerts.alert import Outcome
from trygg.locale import LANGUAGES, Words, po_path

SRC = Path(__file__).resolve().parents[1] / "src/trygg"
CONSOLE_JS = SRC / "api/static/console.js"
PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


def messages(lang: str) -> dict[str, tuple[str, ...]]:
    with po_path(lang).open("rb") as f:
        cat = read_po(f)
    out: dict[str, tuple[str, ...]] = {}
    for m in cat:
        if not m.id:
            continue
        key = m.id[0] if isinstance(m.id, tuple) else m.id
        out[key] = tuple(m.string) if isinstance(m.string, tuple) else (m.string,)
    return out


def test_every_language_has_every_key_with_the_same_placeholders() -> None:
    cats = {lang: messages(lang) for lang in LANGUAGES}
    keys = set(cats["nb"])
    for lang, cat in cats.items():
        assert set(cat) == keys, (lang, sorted(set(cat) ^ keys))
        for k, texts in cat.items():
            assert all(texts), f"{lang}: {k} has no text"
    for k in keys:
        holders = {
            lang: {frozenset(PLACEHOLDER.findall(t)) for t in cats[lang][k]} for lang in cats
        }
        assert holders["nb"] == holders["en"], (k, holders)
        for lang in cats:  # python-format: every text formats with its own placeholders
            for t in cats[lang][k]:
                names = {n for n in PLACEHOLDER.findall(t) if n}
                t % {n: "x" for n in names | {"num"}}


def _used_keys() -> set[str]:
    """Literal keys in the templates (Babel's Jinja2 extractor) and the Python code."""
    used: set[str] = set()
    for tpl in (SRC / "audit/templates").glob("*.j2"):
        with tpl.open("rb") as f:
            for _line, _func, msg, _comments in babel_extract(
                f, ("_", "gettext", "ngettext"), [], {"extensions": "jinja2.ext.i18n"}
            ):
                for m in msg if isinstance(msg, tuple) else (msg,):
                    if m and "." in m:
                        used.add(m)
    for py in (SRC / "audit").glob("*.py"):
        used |= set(
            re.findall(r"""\bw(?:\.n)?\(\s*["']([a-z0-9_]+\.[a-z0-9_.]+)["']""", py.read_text())
        )
    return used


def test_every_key_the_reports_use_is_in_the_catalogue() -> None:
    used = _used_keys()
    assert len(used) > 80
    have = set(messages("nb"))
    assert used - have == set()


def test_the_console_shows_the_catalogues_words_for_outcomes_and_severities() -> None:
    """The console keeps its own word table (static JavaScript, no build step);
    for the things both name, the words are the catalogue's."""
    js = CONSOLE_JS.read_text()
    tables = re.findall(r"^    outcomes: \{(.*?)\},$", js, re.M | re.S)
    assert len(tables) == 2
    sev = re.search(r"^const SEV_WORD = (\{.*\});$", js, re.M)
    assert sev is not None
    for lang, table in zip(("nb", "en"), tables, strict=True):
        w = Words(lang)
        console = dict(re.findall(r'(\w+): "([^"]*)"', table))
        assert console, lang
        for outcome, word in console.items():
            assert Outcome(outcome)  # a real outcome
            assert w(f"outcome.{outcome}") == word, (lang, outcome)
        words = re.search(lang + r": \{([^}]*)\}", sev.group(1))
        assert words is not None
        for s, word in re.findall(r'(\w+): "([^"]*)"', words.group(1)):
            assert w(f"severity.{s}") == word, (lang, s)


def test_numbers_and_times_in_each_language() -> None:
    from datetime import UTC, datetime

    nb, en = Words("nb"), Words("en")
    assert nb.num(12345) == "12\u00a0345" and en.num(12345) == "12,345"
    assert nb.pct(0.123) == "12,3\u00a0%" and en.pct(0.123) == "12.3\u00a0%"
    assert nb.n("plot.days", 1) == "1 dag" and nb.n("plot.days", 3) == "3 dager"
    assert en.n("plot.days", 1) == "1 day"
    t = datetime(2026, 3, 29, 1, 0, 10, tzinfo=UTC)  # 03:00:10 CEST, the first hour of summer
    assert nb.when(t, "Europe/Oslo") == "2026-03-29 03:00 +02:00"
    assert nb.clock(t, "Europe/Oslo") == "03:00:10 +02:00"
    before = datetime(2026, 3, 29, 0, 59, 30, tzinfo=UTC)  # 01:59:30 CET
    assert nb.clock(t, "Europe/Oslo", before) == "03:00:10 +02:00"
    assert nb.clock(before, "Europe/Oslo", before) == "01:59:30"
