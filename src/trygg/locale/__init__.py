"""trygg's message catalogue: the words of the reports, in Bokmål and English.

One gettext ``.po`` file per language, ``locale/<lang>/LC_MESSAGES/trygg.po``,
read at run time with Babel (``read_po``) and turned into standard
``gettext.GNUTranslations`` in memory, so there is no compile step and no
``.mo`` file to keep in step. Message ids are keys (``report.title``), not
English sentences: both languages are translations of the key, and a test
checks that they have the same keys and placeholders (``%(name)s``,
python-format, as Jinja2's i18n extension uses them).

Shared with the console where the words are the same things: the outcomes
(``outcome.*``) and severities (``severity.*``) here are the ones the
console's word table in ``trygg/api/static/console.js`` shows, and
``tests/test_locale.py`` holds the two to the same words. The console keeps
its own table for its screen texts: it is static JavaScript with no build
step (docs/auditing.md, "Languages").

Numbers, percentages and times are formatted here too (``Words.num``,
``Words.pct``, ``Words.when``): decimal comma and a non-breaking thin space
grouping in Bokmål, and a share *within a limit* is floored, never rounded up
(``floor_share``): 97.45 % against a 97.5 % target reads 97,4 %, not 97,5 %.
"""

from __future__ import annotations

import gettext
import io
import math
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

LANGUAGES = ("nb", "en")
DEFAULT_LANGUAGE = "nb"
BABEL_LOCALE = {"nb": "nb_NO", "en": "en_GB"}
LOCALE_DIR = Path(__file__).resolve().parent


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / "trygg.po"


def check_language(lang: str) -> str:
    """``lang`` if trygg has a catalogue for it; ValueError otherwise."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: must be one of {', '.join(LANGUAGES)}")
    return lang


@cache
def translations(lang: str) -> gettext.GNUTranslations:
    """The catalogue of ``lang`` as standard gettext translations (read with Babel)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    check_language(lang)
    with po_path(lang).open("rb") as f:
        catalog = read_po(f, locale=BABEL_LOCALE[lang].split("_")[0])
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


def floor_share(share: float, decimals: int = 1) -> float:
    """``share`` (0..1) as a percentage floored to ``decimals``: never rounded up.

    The product is first rounded to 9 places so that float noise (0.975 * 100
    = 97.49999999999999) does not push an exact value down a step."""
    f = 10**decimals
    return float(math.floor(round(share * 100 * f, 9)) / f)


class Words:
    """The words and number formats of one language."""

    def __init__(self, lang: str = DEFAULT_LANGUAGE) -> None:
        self.lang = check_language(lang)
        self.locale = BABEL_LOCALE[lang]
        self.tr = translations(lang)

    def __call__(self, key: str, **kw: Any) -> str:
        return self.tr.gettext(key) % kw  # python-format: a literal % is written %%

    def n(self, key: str, num: int, **kw: Any) -> str:
        """The plural form of ``key`` for ``num`` (``%(num)s`` in the text)."""
        return self.tr.ngettext(key, key, num) % {"num": self.num(num), **kw}

    # ------------------------------------------------------------ numbers --
    def num(self, v: float | int | None, decimals: int = 0) -> str:
        from babel.numbers import format_decimal

        if v is None:
            return "-"
        fmt = "#,##0" + ("." + "0" * decimals if decimals else "")
        return format_decimal(Decimal(str(v)), format=fmt, locale=self.locale)

    def pct(self, share: float | None, decimals: int = 1, floor: bool = False) -> str:
        """A share 0..1 as a percentage; ``floor``: a share within a limit, never
        rounded up into compliance (97.45 % -> 97,4 %)."""
        if share is None:
            return "-"
        v = floor_share(share, decimals) if floor else round(100 * share, decimals)
        return self.num(v, decimals) + "\u00a0%"

    def target(self, share: float) -> str:
        """A target share exactly as set: 97,5 %, 99 %, 98,55 %."""
        text = f"{100 * share:.4f}".rstrip("0").rstrip(".")
        d = len(text.split(".")[1]) if "." in text else 0
        return self.num(float(text), d) + "\u00a0%"

    def secs(self, v: float | None) -> str:
        if v is None:
            return "-"
        if v < 120:
            return self.num(round(v)) + "\u00a0s"
        if v < 7200:
            return self.num(round(v / 60, 1), 1) + "\u00a0min"
        return self.num(round(v / 3600, 1), 1) + "\u00a0h"

    # -------------------------------------------------------------- times --
    @staticmethod
    def when(t: Any, tz: str, seconds: bool = False) -> str:
        """Local time with its UTC offset: 2026-03-29 03:00 +02:00."""
        if not isinstance(t, datetime):
            return "-" if t is None else str(t)
        lt = t.astimezone(ZoneInfo(tz))
        off = lt.strftime("%z")
        return lt.strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else "")) + f" {off[:3]}:{off[3:]}"

    @staticmethod
    def clock(t: Any, tz: str, ref: Any = None) -> str:
        """Local time of day, with its offset when it is not that of ``ref`` (the
        time the line is read against): 03:00:10 +02:00 after 01:59:30 +01:00."""
        if not isinstance(t, datetime):
            return "-" if t is None else str(t)
        zone = ZoneInfo(tz)
        lt = t.astimezone(zone)
        off = lt.strftime("%z")
        if isinstance(ref, datetime) and ref.astimezone(zone).strftime("%z") == off:
            return lt.strftime("%H:%M:%S")
        return lt.strftime("%H:%M:%S") + f" {off[:3]}:{off[3:]}"
