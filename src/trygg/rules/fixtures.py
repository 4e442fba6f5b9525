"""Rule tests a care specialist can read and write (``trygg rules test``).

In the manner of ``promtool test rules``: a file has a registry, named test
cases, each a list of timed events and the alerts expected. Times are local
wall-clock times in the resident's timezone::

    rules: [bed-exit-no-return]       # only these rules' alerts are compared
    registry:
      residents: [{id: r-1}]
      devices:
        - {id: bed-1, resident: r-1, kind: bed, room: bedroom}
    tests:
      - name: out of bed at night and not back
        events:
          - {at: "2026-03-29 01:50", device: bed-1, type: bed.vacant}
        eval_until: "2026-03-29 04:00"
        expect:
          - {rule: bed-exit-no-return, resident: r-1, at: "2026-03-29 03:10"}

A time in the hour that repeats when clocks go back is read as its first
occurrence; write ``"2026-10-25 02:30 (second)"`` for the second one, or give
an explicit offset (``2026-10-25T02:30+01:00``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import ValidationError

from trygg.durations import parse_duration
from trygg.model import Event, EventPayload, SignalAction
from trygg.registry import Registry, RegistryError, parse_registry
from trygg.rules.catalogue import Catalogue
from trygg.rules.engine import CarePlanError, Engine

_LOCAL = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[ T](\d{1,2}:\d{2}(?::\d{2})?)\s*(\((first|second|1st|2nd)\))?$"
)


class FixtureError(ValueError):
    pass


def parse_local(text: Any, tz: ZoneInfo) -> datetime:
    """A fixture time: local ``YYYY-MM-DD HH:MM[:SS]`` (optionally ``(second)``),
    or ISO 8601 with an offset."""
    if isinstance(text, datetime):
        return text if text.tzinfo is not None else text.replace(tzinfo=tz)
    s = str(text).strip()
    m = _LOCAL.match(s)
    if m:
        naive = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}")
        fold = 1 if m.group(4) in ("second", "2nd") else 0
        dt = naive.replace(tzinfo=tz, fold=fold)
        back = datetime.fromtimestamp(dt.timestamp(), tz).replace(tzinfo=None)
        if back != naive:
            raise FixtureError(
                f"{s!r} does not exist in {tz.key}: the clocks skip that hour that night"
            )
        return dt
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise FixtureError(f'not a time: {text!r} (write e.g. "2026-03-29 01:50")') from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)


def show(dt: datetime, tz: ZoneInfo) -> str:
    loc = dt.astimezone(tz)
    return (
        loc.strftime("%Y-%m-%d %H:%M:%S") + loc.strftime(" %z")[:-2] + ":" + loc.strftime("%z")[-2:]
    )


@dataclass
class CaseResult:
    file: str
    name: str
    ok: bool
    lines: list[str] = field(default_factory=list)


def _registry(raw: Any, source: str) -> Registry:
    if not isinstance(raw, dict):
        raise FixtureError(f"{source}: 'registry' must have residents and devices")
    res = []
    for r in raw.get("residents", []) or []:
        r = {"id": r} if isinstance(r, str) else dict(r)
        r.setdefault("team", "test")
        res.append(r)
    try:
        return parse_registry({"residents": res, "devices": raw.get("devices", []) or []}, source)
    except RegistryError as exc:
        raise FixtureError(str(exc)) from None


def run_case(
    catalogue: Catalogue,
    registry: Registry,
    case: dict[str, Any],
    rules: Sequence[str] | None,
    source: str,
) -> CaseResult:
    name = str(case.get("name", "(unnamed)"))
    result = CaseResult(source, name, True)
    residents = registry.resident_by_id()
    devices = registry.device_by_id()
    default_tz = next(iter(residents.values())).tz if residents else ZoneInfo("Europe/Oslo")
    try:
        engine = Engine(catalogue, registry)
    except CarePlanError as exc:
        return CaseResult(source, name, False, [str(exc)])
    events: list[Event] = []
    received: list[datetime | None] = []  # when trygg got it, if the case says
    for n, raw in enumerate(case.get("events", []) or [], 1):
        if not isinstance(raw, dict):
            raise FixtureError(f"{source}: {name}: event {n} must be a mapping")
        dev = devices.get(str(raw.get("device")))
        if dev is None:
            raise FixtureError(f"{source}: {name}: event {n}: unknown device {raw.get('device')!r}")
        tz = residents[dev.resident].tz
        if "at" not in raw:
            raise FixtureError(f"{source}: {name}: event {n}: needs 'at'")
        at = parse_local(raw["at"], tz)
        received.append(parse_local(raw["received"], tz) if "received" in raw else None)
        payload = {
            "id": str(raw.get("id", f"e{n}")),
            "type": raw.get("type"),
            "time": at,
            "value": raw.get("value"),
            "room": raw.get("room"),
        }
        try:
            p = EventPayload.model_validate(payload)
        except ValidationError as exc:
            msg = "; ".join(e["msg"] for e in exc.errors())
            raise FixtureError(f"{source}: {name}: event {n}: {msg}") from None
        events.append(
            Event(
                device=dev.id,
                id=p.id,
                type=p.type,
                time=p.time,
                resident=dev.resident,
                kind=dev.kind,
                room=p.room or dev.room,
                value=p.value,
            )
        )
    # Events reach the engine in the order written: the order trygg received them,
    # which for a late event is not the order of their times (docs/rules.md).
    # The latest by instant (aware datetimes in one ZoneInfo compare by wall time,
    # ignoring fold).
    last = max(events, key=lambda e: e.time.timestamp()).time if events else None
    eu = case.get("eval_until")
    if eu is None:
        if last is None:
            raise FixtureError(f"{source}: {name}: no events and no eval_until")
        until = last
    elif isinstance(eu, str) and eu.strip().startswith("+"):
        if last is None:
            raise FixtureError(f"{source}: {name}: a relative eval_until needs events")
        until = last + parse_duration(eu.strip()[1:])
    else:
        until = parse_local(eu, default_tz)
    signals = []
    for ev, rx in zip(events, received, strict=True):
        signals.extend(engine.process(ev, rx))
    if eu is None:
        # The last event by the home's clock: a device whose clock runs ahead
        # does not move the end of the test (docs/rules.md, late events).
        until = engine.watermark() or until
    signals.extend(engine.advance(until))
    signals = [s for s in signals if s.at.timestamp() <= until.timestamp()]

    def want(kind: str, key: str) -> list[tuple[str, str, datetime]]:
        out = []
        for e in case.get(key, []) or []:
            if not isinstance(e, dict) or not {"rule", "resident", "at"} <= set(e):
                raise FixtureError(f"{source}: {name}: each {key} item needs rule, resident and at")
            rid = str(e["resident"])
            tz = residents[rid].tz if rid in residents else default_tz
            out.append((str(e["rule"]), rid, parse_local(e["at"], tz)))
        return out

    checks = [("fire", "expect", SignalAction.FIRE)]
    if "expect_clears" in case:
        checks.append(("clear", "expect_clears", SignalAction.CLEAR))
    for label, key, action in checks:
        exp = want(label, key)
        got = [
            (s.rule, s.resident, s.at)
            for s in signals
            if s.action is action and (rules is None or s.rule in rules)
        ]
        exp_keys = sorted((r, p, t.timestamp()) for r, p, t in exp)
        got_keys = sorted((r, p, round(t.timestamp(), 3)) for r, p, t in got)
        if exp_keys != got_keys:
            result.ok = False
            what = "alerts" if label == "fire" else "clears"
            result.lines.append(f"  {what} expected:")
            result.lines.extend(_fmt(exp, residents, default_tz) or ["    (none)"])
            result.lines.append(f"  {what} got:")
            result.lines.extend(_fmt(got, residents, default_tz) or ["    (none)"])
            missing = [k for k in exp_keys if k not in got_keys]
            extra = [k for k in got_keys if k not in exp_keys]
            for tag, items in (("-", missing), ("+", extra)):
                for r, who, ts in items:
                    tz = residents[who].tz if who in residents else default_tz
                    when = show(datetime.fromtimestamp(ts, tz), tz)
                    result.lines.append(f"  {tag} {r} {who} at {when}")
    return result


def _fmt(
    items: list[tuple[str, str, datetime]], residents: dict[str, Any], tz: ZoneInfo
) -> list[str]:
    out = []
    for r, p, t in sorted(items, key=lambda x: (x[2], x[0], x[1])):
        z = residents[p].tz if p in residents else tz
        out.append(f"    {r:<22} {p:<10} at {show(t, z)}")
    return out


def run_file(catalogue: Catalogue, path: Path) -> list[CaseResult]:
    src = str(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return [CaseResult(src, "(file)", False, [f"  cannot read: {exc}"])]
    if not isinstance(doc, dict) or "tests" not in doc:
        return [
            CaseResult(src, "(file)", False, ["  a test file needs 'tests:' (and 'registry:')"])
        ]
    rules = doc.get("rules")
    if isinstance(rules, str):
        rules = [rules]
    unknown = [r for r in rules or [] if r not in catalogue.raw]
    if unknown:
        return [CaseResult(src, "(file)", False, [f"  unknown rule(s): {', '.join(unknown)}"])]
    out = []
    for case in doc["tests"] or []:
        name = str(case.get("name", "(unnamed)")) if isinstance(case, dict) else "(unnamed)"
        try:
            if not isinstance(case, dict):
                raise FixtureError(f"{src}: each test must be a mapping with name, events, expect")
            reg = _registry(case.get("registry", doc.get("registry")), src)
            crules = case.get("rules", rules)
            if isinstance(crules, str):
                crules = [crules]
            out.append(run_case(catalogue, reg, case, crules, src))
        except (FixtureError, ValueError) as exc:
            out.append(CaseResult(src, name, False, [f"  error: {exc}"]))
    return out


def fixture_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(x for x in p.iterdir() if x.suffix in (".yaml", ".yml")))
        else:
            files.append(p)
    return files
