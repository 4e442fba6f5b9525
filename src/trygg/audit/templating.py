"""What the HTML pages share (the response-time report, the A3 page, the
deviation report): the Jinja2 environment with the catalogue's words and the
formats of the page's language as filters (its settings, ``html_env``, also the
back-test's page's), and trygg's records in words (a rule, an outcome group, a
lifecycle step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

    from trygg.locale import Words


def rule_name(rule: str, lang: str) -> str:
    """A rule in words (the console's words for it, trygg.api.words), else its id."""
    from trygg.api.words import rule_words

    return rule_words(rule).get(lang, rule)


def html_env(package: str, extensions: list[str] | None = None) -> jinja2.Environment:
    """Jinja2 for the HTML templates in ``package``'s ``templates/``: autoescaped,
    block tags on lines of their own leave no blank lines."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=extensions or [],
    )


def jinja_env(w: Any, timezone: str) -> Any:
    """Jinja2 with the catalogue's words (``_``, ``ngettext``) and the formats of
    ``w`` (a ``trygg.locale.Words``) as filters; shared by the HTML pages."""
    env = html_env("trygg.audit", extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(w.tr, newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(
        secs=w.secs,
        pct=w.pct,
        within=lambda v: w.pct(v, floor=True),
        num=w.num,
        target=w.target,
        days=lambda d: w.n("plot.days", round(d or 0)),
        when=lambda t: w.when(t, timezone),
        clock=lambda t, ref=None: w.clock(t, timezone, ref),
        rule=lambda r: rule_name(str(r), w.lang),
        severity=lambda s: w(f"severity.{s}"),
        step=lambda s: w(f"step.{s}") if f"step.{s}" in STEPS else str(s),
        breach=lambda b: w(f"breach.{b}"),
        outcome=lambda o: outcome_words(str(o), w),
    )
    return env


def page_env(lang: str, timezone: str) -> tuple[Words, Any]:
    """A page's words in ``lang`` and its Jinja2 (``jinja_env``) with them."""
    from trygg.locale import Words

    w = Words(lang)
    return w, jinja_env(w, timezone)


STEPS = {
    f"step.{s}"
    for s in (
        "raised",
        "notified",
        "escalated",
        "acknowledged",
        "assigned",
        "accepted",
        "arrived",
        "resolved",
        "cancelled",
        "note",
    )
}
OUTCOMES = (
    "helped",
    "no_help_needed",
    "not_at_home",
    "false_alarm",
    "technical",
    "test",
    "other",
    "auto_resolved",
)
CANCEL_REASONS = ("device_reset", "auto_resolved", "false_alarm", "duplicate", "test")


def outcome_words(group: str, w: Any) -> str:
    """An outcome group of ``trygg.store.kpi_queries.breakdown`` in words."""
    if group in OUTCOMES:
        return str(w(f"outcome.{group}"))
    if group in ("open", "suppressed", "unknown"):
        return str(w(f"outcome_group.{group}"))
    if group.startswith("cancelled:"):
        reason = group.split(":", 1)[1]
        why = w(f"cancel.{reason}") if reason in CANCEL_REASONS else reason
        return str(w("outcome_group.cancelled", reason=why))
    return group
