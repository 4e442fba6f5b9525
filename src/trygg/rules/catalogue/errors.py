"""The catalogue's errors: a catalogue that cannot be used, an override that
does not fit, and a problem at a field while reading (placed at its line)."""

from __future__ import annotations

from collections.abc import Sequence


class OverrideError(ValueError):
    """A care-plan override that does not fit the catalogue: ``problems`` are
    (parameter, or None for the rule as a whole; message naming rule and parameter)."""

    def __init__(self, problems: Sequence[tuple[str | None, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(msg for _, msg in self.problems))


class CatalogueError(ValueError):
    """A catalogue that cannot be used; the message has one ``file:line: reason`` a line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class FieldError(ValueError):
    def __init__(self, path: Sequence[str | int], msg: str) -> None:
        super().__init__(msg)
        self.path = tuple(path)
