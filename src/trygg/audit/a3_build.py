"""Gathering the A3 page's figures (``trygg report a3``, trygg.audit.a3): the
rule's KPIs and breakdown, the other districts as the reference, the
candidate's back-test and the follow-up plan.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg

from trygg.audit.a3 import A3Options, A3Page
from trygg.audit.a3_countermeasure import countermeasure
from trygg.audit.a3_plan import plan
from trygg.audit.report import Progress
from trygg.registry import DEFAULT_DISTRICT
from trygg.rules.catalogue import Catalogue
from trygg.store import kpi_queries as kpi_sql
from trygg.store.registry import district_map


def build_a3(
    conn: psycopg.Connection[Any],
    opts: A3Options,
    current: Catalogue,
    *,
    now: datetime,
    candidate: Catalogue | None = None,
    progress: Progress | None = None,
) -> A3Page:
    """Gather the page's figures; with ``candidate``, back-test it on the stored
    events of the period (read with a server-side cursor, a warm-up before and
    the match window after, as ``trygg rules backtest`` does)."""
    tick = progress or (lambda _s: None)
    try:
        spec = current.spec(opts.rule)
    except KeyError:
        if candidate is None or opts.rule not in candidate.rule_ids:
            raise
        spec = candidate.spec(opts.rule)  # a rule the candidate adds
    # the description and reason in the page's language (English when the
    # catalogue has none in it: a site's own rule)
    description, reason = spec.texts(opts.lang)
    title, code, severity = spec.title, spec.code, str(spec.severity.value)
    texts_in = opts.lang if opts.lang == "en" or spec.translated(opts.lang) else "en"
    p = opts.params()
    rows = kpi_sql.compute_kpis(conn, p)
    tick("KPIs")
    bd = kpi_sql.breakdown(conn, p)
    tick("breakdown")
    page = A3Page(
        options=opts,
        generated_at=now,
        title=title,
        description=description,
        reason=reason,
        texts_lang=texts_in,
        code=code,
        severity=severity,
        kpis=rows,
        breakdown=bd,
    )
    add_reference(conn, page)
    if candidate is not None:
        page.countermeasure = countermeasure(conn, opts, current, candidate)
        tick("back-test")
        page.shadow_started = _shadow_started(conn, candidate.version)
    page.plan = plan(page, now)
    return page


def add_reference(conn: psycopg.Connection[Any], page: A3Page) -> None:
    """The other districts as the reference: the rule's figures per district over
    the page's period (``kpi.district_kpis``, all teams), when the site has more
    than one district; the page's district is its team's (none for the site)."""
    o = page.options
    p = replace(o.params(), team=None)
    teams, names = district_map(conn)
    rows = [k for k in kpi_sql.district_kpis(conn, p) if k.dimension == "district"]
    own = teams.get(o.team, DEFAULT_DISTRICT) if o.team else None
    if len({*teams.values(), *(k.key for k in rows)} - {DEFAULT_DISTRICT}) < 2:
        return  # one district (or none named): nothing to compare with
    page.reference = sorted(rows, key=lambda k: (k.key != own, k.key))
    page.district = own
    page.district_names = names


def _shadow_started(conn: psycopg.Connection[Any], version: str) -> datetime | None:
    from trygg.store import versions

    try:
        with conn.transaction():
            return versions.shadow_started(conn, version)
    except psycopg.errors.UndefinedTable:
        return None
