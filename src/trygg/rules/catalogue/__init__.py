"""The rule catalogue: YAML files of lists, macros and rules, validated on load.

A catalogue file is a YAML sequence of items, in the manner of Falco's rule
files::

    - list: activity_events
      items: [motion.detected, door.opened, door.closed]
    - macro: night
      window: "22:00-07:00"
    - rule: bed-exit-no-return
      kind: sequence
      ...

Files are read in the order given (a directory: its ``*.yaml`` files in name
order). A later file changes an earlier definition only explicitly, with
``override: {field: replace|append}`` (or ``append: true`` for every field
given), or switches a rule off with just ``- rule: x`` and ``enabled: false``.
Every problem is reported as ``file:line: reason``.

A rule may mark parameters as *adjustable* by a district, within bounds::

    adjustable:
      wait: {min: 15m, max: 45m}
      window: {}                 # adjustable, no bounds

A district's overlay (trygg.rules.overlays) may change only those, within the
bounds; a care plan may still change any parameter of its kind, but one
outside the bounds only with a ``reason`` (checked by ``trygg rules check
--registry`` and ``trygg check``, not by the engine).

The code lives in one module per concept; every name is importable from
here, as callers do:

- :mod:`~trygg.rules.catalogue.specs`: what an item may say (the rule specs,
  their parameters and units);
- :mod:`~trygg.rules.catalogue.merge`: merging the items across files;
- :mod:`~trygg.rules.catalogue.checks`: the checks of macros and bounds;
- :mod:`~trygg.rules.catalogue.catalogue`: :class:`Catalogue`, the loaded
  catalogue, which compiles rules and care plans;
- :mod:`~trygg.rules.catalogue.load`: reading, merging and validating files;
- :mod:`~trygg.rules.catalogue.errors`: the errors.
"""

from trygg.durations import Duration
from trygg.rules.catalogue.catalogue import Catalogue
from trygg.rules.catalogue.errors import CatalogueError, FieldError, OverrideError
from trygg.rules.catalogue.load import (
    build_index,
    catalogue_summary,
    default_rules_dir,
    load_catalogue,
    load_catalogue_texts,
    read_catalogue_files,
    read_texts,
    rule_files,
)
from trygg.rules.catalogue.merge import Entry
from trygg.rules.catalogue.specs import (
    REASON,
    RULE_ID,
    SPECS,
    AbsenceSpec,
    Bound,
    ClockSpec,
    CountSpec,
    EventSpec,
    MatchRef,
    MatchSpec,
    OneOrMore,
    RuleSpec,
    RuleTexts,
    SequenceSpec,
    Text,
    ThresholdSpec,
    WindowRef,
    format_value,
    param_value,
)

__all__ = [
    "REASON",
    "RULE_ID",
    "SPECS",
    "AbsenceSpec",
    "Bound",
    "Catalogue",
    "CatalogueError",
    "ClockSpec",
    "CountSpec",
    "Duration",
    "Entry",
    "EventSpec",
    "FieldError",
    "MatchRef",
    "MatchSpec",
    "OneOrMore",
    "OverrideError",
    "RuleSpec",
    "RuleTexts",
    "SequenceSpec",
    "Text",
    "ThresholdSpec",
    "WindowRef",
    "build_index",
    "catalogue_summary",
    "default_rules_dir",
    "format_value",
    "load_catalogue",
    "load_catalogue_texts",
    "param_value",
    "read_catalogue_files",
    "read_texts",
    "rule_files",
]
