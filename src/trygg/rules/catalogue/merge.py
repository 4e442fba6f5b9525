"""Merging a catalogue's items across its files.

Each file's items (``- rule:``, ``- list:``, ``- macro:``, ``- version:``)
are merged in file order into one :class:`Entry` per name: a later file
changes an earlier definition only explicitly (``override: {field:
replace|append}`` or ``append: true``) or switches a rule off with
``enabled: false`` alone. Each field keeps the line it was last given at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trygg.plain import Loc, Path_
from trygg.rules.catalogue.errors import FieldError
from trygg.rules.catalogue.specs import RULE_ID

ITEM_KINDS = ("rule", "list", "macro", "version")


@dataclass
class Entry:
    """A list, macro or rule after merging overrides, with the line of each field."""

    what: str
    name: str
    data: dict[str, Any]
    locs: dict[Path_, Loc]
    origin: Loc


def merge_item(
    item: Any,
    here: Loc,
    locs: dict[Path_, Loc],
    entries: dict[tuple[str, str], Entry],
    order: list[str],
) -> str | None:
    """Merge one item of a file (at ``here``; its fields at ``locs``) into
    ``entries``, a new rule's name onto ``order``; a ``- version:`` item's
    version is returned. Raises FieldError at the field at fault."""
    if not isinstance(item, dict):
        raise FieldError((), "each item must be a mapping starting with rule:, list: or macro:")
    whats = [k for k in ITEM_KINDS if k in item]
    if len(whats) != 1:
        raise FieldError((), "each item needs exactly one of rule:, list:, macro: or version:")
    for k in item:
        if not isinstance(k, str):
            hint = (
                " (YAML reads on/off/yes/no as true/false: quote the key)"
                if isinstance(k, bool)
                else ""
            )
            raise FieldError((), f"key {k!r} is not a text{hint}")
    what = whats[0]
    if what == "version":
        if len(item) != 1:
            raise FieldError((), "a version item has only 'version'")
        return str(item["version"])
    name = item[what]
    if not isinstance(name, str) or not name:
        raise FieldError((what,), f"the {what} name must be a text")
    if what == "rule" and not re.match(RULE_ID, name):
        raise FieldError((what,), f"rule id {name!r} must be lower case letters, digits, '.', '-'")
    key = (what, name)
    override = item.get("override")
    append = item.get("append", False)
    fields = {k: v for k, v in item.items() if k not in (what, "override", "append")}
    existing = entries.get(key)
    toggle = what == "rule" and set(fields) == {"enabled"} and override is None and not append
    if existing is None:
        if override is not None or append or toggle:
            raise FieldError(
                (what,),
                f"{what} {name!r} is not defined in an earlier file, so it cannot be changed here",
            )
        if what == "list":
            items = fields.get("items")
            if set(fields) != {"items"} or not isinstance(items, list):
                raise FieldError((what,), f"list {name!r} needs 'items:' and nothing else")
        if what == "macro" and not ({"match", "window"} & set(fields)):
            raise FieldError((what,), f"macro {name!r} needs 'match:' or 'window:'")
        entries[key] = Entry(what, name, {what: name, **fields}, dict(locs), here)
        if what == "rule":
            order.append(name)
        return None
    if toggle:
        existing.data["enabled"] = fields["enabled"]
        existing.locs[("enabled",)] = locs.get(("enabled",), here)
        return None
    if override is None and not append:
        f, ln = existing.origin
        raise FieldError(
            (what,),
            f"{what} {name!r} is already defined at {f}:{ln}; "
            "to change it, add 'override: {field: replace}' (or append)",
        )
    if override is not None and not isinstance(override, dict):
        raise FieldError(("override",), "override must map each field to replace or append")
    for fname, value in fields.items():
        mode = "append" if append else None
        if override is not None:
            mode = override.get(fname)
        if mode not in ("replace", "append"):
            raise FieldError(
                (fname,), f"field {fname!r} is not listed in override (as replace or append)"
            )
        if mode == "replace":
            existing.data[fname] = value
            # the earlier file's lines inside the replaced value no longer apply:
            # a problem in the new value is reported at the new file's lines
            for k in [k for k in existing.locs if k[:1] == (fname,)]:
                del existing.locs[k]
        else:
            old = existing.data.get(fname)
            if isinstance(old, list):
                value = value if isinstance(value, list) else [value]
                existing.data[fname] = old + value
            elif isinstance(old, dict) and isinstance(value, dict):
                existing.data[fname] = {**old, **value}
            elif old is None:
                existing.data[fname] = value
            else:
                raise FieldError(
                    (fname,), f"cannot append to {fname!r}: it is not a list or mapping"
                )
        for k, v in locs.items():
            if k[:1] == (fname,):
                existing.locs[k] = v
    if override is not None:
        for fname in override:
            if fname not in fields:
                raise FieldError(
                    ("override", fname), f"override names {fname!r} but gives no value"
                )
    return None
