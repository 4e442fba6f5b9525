"""A resident's rule state as bytes and back (``Engine.snapshot`` and
``Engine.restore``): what the distributed worker keeps in a table and a
catalogue hand-over copies from the old engine to the new.

Each rule's state is dumped by its kind (``Rule.dump``/``Rule.load``) under the
rule's id with the kind's name, so that on load the state of a rule the
catalogue no longer has, or whose kind changed, is dropped. ``update_registry``
re-keys a home's per-device state with the same dumps.
"""

from __future__ import annotations

import json
from typing import Any

from trygg.rules.catalogue import Catalogue
from trygg.rules.kinds import NEVER, Res, Rule, device_clocks, load_device_clocks

SNAPSHOT_VERSION = 1


def rule_at(catalogue: Catalogue, res: Res, i: int) -> Rule | None:
    rule = res.rules[i] or catalogue.compiled[i]
    if rule is None:  # disabled everywhere: compile it to (de)serialise its state
        rule = catalogue.compile(catalogue.specs[i].model_copy(update={"enabled": True}), i)
    return rule


def dump_states(catalogue: Catalogue, res: Res) -> dict[str, Any]:
    st: dict[str, Any] = {}
    for i, s in enumerate(res.states):
        if s is None:
            continue
        rule = rule_at(catalogue, res, i)
        if rule is not None:
            st[rule.id] = [type(rule).__name__, rule.dump(res, s)]
    return st


def load_states(catalogue: Catalogue, res: Res, st: dict[str, Any]) -> None:
    ids = {s.rule: i for i, s in enumerate(catalogue.specs)}
    res.states = [None] * len(res.rules)
    for rid, (kind, dumped) in st.items():
        i = ids.get(rid)
        if i is None:
            continue
        rule = rule_at(catalogue, res, i)
        if rule is None or type(rule).__name__ != kind:
            continue
        res.states[i] = rule.load(res, dumped)


def snapshot_doc(catalogue: Catalogue, res: Res | None) -> dict[str, Any]:
    """The resident's rule state as a JSON document (None: never seen, the empty
    state). The distributed worker encodes it inside its own state with orjson,
    about 2 us against the standard library's 40 (docs/distributed.md)."""
    if res is None:
        return {"v": SNAPSHOT_VERSION, "wm": None, "st": {}}
    return {
        "v": SNAPSHOT_VERSION,
        "wm": res.wm,
        "st": dump_states(catalogue, res),
        "dev": {d: [t, q] for d, (t, q) in device_clocks(res).items()},
        "seq": [res.seq, res.back, res.hi if res.hi != NEVER else None],
    }


def snapshot_of(catalogue: Catalogue, res: Res | None) -> bytes:
    """The resident's rule state as bytes (None: never seen, the empty state)."""
    if res is None:
        return json.dumps(snapshot_doc(catalogue, None)).encode()
    return json.dumps(snapshot_doc(catalogue, res), separators=(",", ":")).encode()


def read_snapshot(data: bytes) -> dict[str, Any]:
    """A snapshot's document (ValueError: a version this code does not know)."""
    doc: dict[str, Any] = json.loads(data)
    if doc.get("v") != SNAPSHOT_VERSION:
        raise ValueError(f"unknown snapshot version {doc.get('v')!r}")
    return doc


def load_snapshot(catalogue: Catalogue, pos: dict[str, int], res: Res, doc: dict[str, Any]) -> None:
    """Put a snapshot's state into a fresh resident (``pos``: each device's place
    among its resident's registered devices)."""
    res.wm = doc["wm"]
    # Snapshots before per-device lateness (2026-12) have no device clocks.
    clocks = {str(k): (float(v[0]), int(v[1])) for k, v in doc.get("dev", {}).items()}
    load_device_clocks(res, pos, clocks)
    seq = doc.get("seq", [0, 0, None])
    res.seq, res.back = int(seq[0]), int(seq[1])
    res.hi = NEVER if len(seq) < 3 or seq[2] is None else float(seq[2])
    load_states(catalogue, res, doc["st"])
