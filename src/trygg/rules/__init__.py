"""The rule engine: events and a clock in, signals out. Pure: no I/O, no wall clock.

See docs/rules.md for the catalogue format, the rule kinds and the late-event policy.
"""

from trygg.rules.careplan import care_plan_problems, check_overrides
from trygg.rules.catalogue import Catalogue, CatalogueError, load_catalogue
from trygg.rules.engine import DEFAULT_LATENESS, CarePlanError, Engine

__all__ = [
    "DEFAULT_LATENESS",
    "CarePlanError",
    "Catalogue",
    "CatalogueError",
    "Engine",
    "care_plan_problems",
    "check_overrides",
    "load_catalogue",
]
