"""``trygg check``'s warnings about a routing file: what works but probably not
as meant. A webhook the file names that is not configured, an ``${VAR}`` in an
apprise address that is not set here, a resident's team that no route reaches.

Kept apart from trygg.check, which finds the routing file's problems
(trygg.alerts.routing_config) and then, when there are none, adds these; they
never fail the check.
"""

from __future__ import annotations

import os
import re
from typing import Any

from trygg.plain import Path_, Problem, YamlDoc, dotted, line_of
from trygg.settings import Settings


def _contacts(data: dict[str, Any]) -> list[tuple[Path_, dict[str, Any]]]:
    out: list[tuple[Path_, dict[str, Any]]] = []
    for section in ("recipients", "teams"):
        entries = data.get(section)
        for name, entry in entries.items() if isinstance(entries, dict) else []:
            contacts = entry.get("contacts") if isinstance(entry, dict) else None
            for i, c in enumerate(contacts if isinstance(contacts, list) else []):
                if isinstance(c, dict):
                    out.append(((section, name, "contacts", i), c))
    return out


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def routing_warnings(doc: YamlDoc, source: str, s: Settings) -> list[Problem]:
    from trygg.runner.wiring import webhook_urls

    configured = set(webhook_urls(s))
    out = []
    for path, c in _contacts(doc.data):
        _, line = line_of(doc.locs, path, (source, 0))
        at = dotted(path)
        if c.get("channel") == "webhook" and c.get("address") not in configured:
            out.append(
                Problem(
                    source,
                    line,
                    f"{at}: webhook {c.get('address')!r} is not configured (TRYGG_WEBHOOKS, "
                    "TRYGG_WEBHOOK_URL): its notifications will fail",
                )
            )
        if c.get("channel") == "apprise":
            for var in _ENV_REF.findall(str(c.get("address", ""))):
                if var not in os.environ:
                    out.append(
                        Problem(
                            source,
                            line,
                            f"{at}: ${{{var}}} is not set here: its notifications will fail "
                            "where it is not set either",
                        )
                    )
    return out


def unrouted_teams(routing: dict[str, Any], registry: YamlDoc, source: str) -> list[Problem]:
    """Residents whose team the routing file does not reach (no such team, no
    default_team and no fallback): their alerts would reach nobody."""
    teams = routing["teams"] if isinstance(routing.get("teams"), dict) else {}
    if routing.get("default_team") or routing.get("fallback"):
        return []
    raw = registry.data.get("residents") if isinstance(registry.data, dict) else None
    out = []
    for i, r in enumerate(raw if isinstance(raw, list) else []):
        team = r.get("team") if isinstance(r, dict) else None
        if isinstance(team, str) and team not in teams:
            _, line = line_of(registry.locs, ("residents", i, "team"), (source, 0))
            out.append(
                Problem(
                    source,
                    line,
                    f"resident {r.get('id')!r}: team {team!r} is not in the routing file, "
                    "which has no default_team or fallback: its alerts reach nobody",
                )
            )
    return out
