"""Reading the settings: defaults < TOML config file < ``TRYGG_*`` environment <
explicit overrides, and every problem found on the way in one plain line that
names the variable (or the file's line), what it holds and what would be valid.

Kept apart from trygg.settings, which says what the settings are; this module
says where they come from and, when a value is wrong, why, in words
(:func:`valid_text` reads the units of trygg.settings_units back).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
)

from trygg.plain import plain_message
from trygg.settings import Settings

SECRET = frozenset({"webhook_secret", "smtp_password", "oidc_client_secret"})
_URLS = frozenset({"mqtt_url", "database_url", "webhook_url", "public_url", "oidc_issuer"})


class SettingsError(ValueError):
    """Settings that cannot be used; one plain line a problem (``.problems``)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def env_name(field: str) -> str:
    return f"TRYGG_{field.upper()}"


def valid_text(field: str) -> str | None:
    """What a valid value of ``field`` is, in words: 'a whole number of seconds from 0 to 60'."""
    info = Settings.model_fields.get(field)
    if info is None:
        return None
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if isinstance(extra.get("valid"), str):
        return str(extra["valid"])
    ann = info.annotation
    args = [a for a in get_args(ann) if a is not type(None)]
    if args:
        ann = args[0]
    lits = get_args(ann) if get_origin(ann) is Literal else ()
    if lits:
        return "one of " + ", ".join(str(x) for x in lits)
    if ann is bool:
        return "true or false"
    if ann not in (int, float):
        return None
    lo, hi = _bounds(info)
    unit = extra.get("unit")
    if unit == "port":
        noun = "a port number"
    else:
        noun = "a whole number" if ann is int else "a number"
        if unit:
            noun += f" of {unit}"
    return noun + _range(lo, hi)


def _bounds(info: FieldInfo) -> tuple[tuple[str, float] | None, tuple[str, float] | None]:
    """A field's lower and upper bound from its Field(ge/gt/le/lt=...) metadata."""
    lo: tuple[str, float] | None = None
    hi: tuple[str, float] | None = None
    for m in info.metadata:
        for kind in ("ge", "gt"):
            if isinstance(getattr(m, kind, None), int | float):
                lo = (kind, float(getattr(m, kind)))
        for kind in ("le", "lt"):
            if isinstance(getattr(m, kind, None), int | float):
                hi = (kind, float(getattr(m, kind)))
    return lo, hi


def _n(x: float) -> str:
    return str(int(x)) if x.is_integer() else f"{x:g}"


def _range(lo: tuple[str, float] | None, hi: tuple[str, float] | None) -> str:
    if lo and hi and lo[0] == "ge" and hi[0] == "le":
        return f" from {_n(lo[1])} to {_n(hi[1])}"
    parts = []
    if lo:
        parts.append(f"at least {_n(lo[1])}" if lo[0] == "ge" else f"more than {_n(lo[1])}")
    if hi:
        parts.append(f"at most {_n(hi[1])}" if hi[0] == "le" else f"less than {_n(hi[1])}")
    return (", " + " and ".join(parts)) if parts else ""


def _shown(field: str, value: Any) -> str:
    """A value as the user wrote it, secrets hidden."""
    if field in SECRET:
        return "(hidden)"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if field in _URLS and isinstance(text, str) and "://" in text:
        try:
            u = urlsplit(text)
            if u.password:
                netloc = u.netloc.replace(f":{u.password}@", ":***@")
                text = urlunsplit(u._replace(netloc=netloc))
        except ValueError:
            pass
    return text


def _toml_key_lines(text: str) -> dict[str, int]:
    """The line of each top-level key (or [table]) of a TOML settings file."""
    out: dict[str, int] = {}
    key = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=""")
    table = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]")
    in_table = False
    for n, line in enumerate(text.splitlines(), 1):
        if m := table.match(line):
            out.setdefault(m.group(1), n)
            in_table = True
        elif not in_table and (m := key.match(line)):
            out.setdefault(next(g for g in m.groups() if g), n)
    return out


class _Env(EnvSettingsSource):
    """The environment source, but a variable that is not valid JSON (a dict
    setting) is noted and left out instead of stopping at the first."""

    def __init__(self, settings_cls: type[BaseSettings], bad: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self.bad = bad

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError:
            self.bad[field_name] = f"must be JSON, such as {_JSON_EXAMPLE.get(field_name, '{}')}"
            return None


_JSON_EXAMPLE = {
    "webhooks": '{"leader": "https://..."}',
    "notify_give_up": '{"email": "2h", "green": "10m"}',
}


class _Without(PydanticBaseSettingsSource):
    """A source with some fields left out (those already reported as wrong)."""

    def __init__(
        self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource, drop: set[str]
    ) -> None:
        super().__init__(settings_cls)
        self.inner = inner
        self.drop = drop

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.inner().items() if k not in self.drop}


def _env_value(field: str) -> tuple[str, str] | None:
    want = env_name(field).upper()
    for k, v in os.environ.items():
        if k.upper() == want:
            return k, v
    return None


def read_settings(config: Path | None = None, **overrides: object) -> tuple[Settings, list[str]]:
    """Settings from defaults < config file < environment < explicit overrides, and
    every problem found on the way, one plain line each. A wrong value is left out
    (its default is used) so that the rest can still be checked."""
    problems: dict[str, str] = {}  # field (or a file's key) -> line
    path = config
    toml: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is None and os.environ.get("TRYGG_CONFIG"):
        path = Path(os.environ["TRYGG_CONFIG"])
        if not path.is_file():
            problems["TRYGG_CONFIG"] = f"TRYGG_CONFIG={path}: no such file"
            path = None
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
            toml = tomllib.loads(text)
            lines = _toml_key_lines(text)
        except OSError as exc:
            problems[str(path)] = f"{path}: cannot read: {exc.strerror}"
            path = None
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            m = re.search(r"\s*\(at line (\d+), column \d+\)$", msg)
            where = f"{path}:{m.group(1)}" if m else str(path)
            problems[str(path)] = f"{where}: not valid TOML: {msg[: m.start()] if m else msg}"
            path = None
    values = {k: v for k, v in overrides.items() if v is not None}

    def origin(field: str) -> str:
        if field in values:
            return f"--{field.replace('_', '-')}={_shown(field, values[field])}"
        env = _env_value(field)
        if env is not None:
            return f"{env[0]}={_shown(field, env[1])}"
        if field in toml:
            ln = lines.get(field)
            at = f"{path}:{ln}" if ln else str(path)
            return f"{at}: {field} = {_shown(field, toml[field])}"
        return f"{env_name(field)} (default)"

    drop: set[str] = set()
    for _ in range(len(Settings.model_fields) + 2):
        env_bad: dict[str, str] = {}
        try:
            s = _build(path, {k: v for k, v in values.items() if k not in drop}, drop, env_bad)
        except ValidationError as exc:
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else ""
                if field in drop:
                    continue
                drop.add(field)
                problems.setdefault(field, _problem(field, err, origin, toml, lines, path))
            continue
        finally:
            for field, reason in env_bad.items():
                problems.setdefault(field, f"{origin(field)}: {reason}")
        for field, reason in _cross_checks(s):
            problems.setdefault(field, f"{origin(field)}: {reason}")
        return s, list(problems.values())
    raise AssertionError("settings did not settle")  # pragma: no cover


def _problem(
    field: str,
    err: Any,
    origin: Any,
    toml: dict[str, Any],
    lines: dict[str, int],
    path: Path | None,
) -> str:
    if err["type"] == "extra_forbidden":
        near = difflib.get_close_matches(field, list(Settings.model_fields), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        ln = lines.get(field)
        at = f"{path}:{ln}" if ln else str(path)
        return f"{at}: {field}: not a trygg setting{hint}"
    if err["type"] in ("value_error", "assertion_error") or len(err["loc"]) > 1:
        reason = plain_message(err)
    else:
        valid = valid_text(field)
        reason = f"must be {valid}" if valid else plain_message(err)
    return f"{origin(field)}: {reason}"


def _cross_checks(s: Settings) -> list[tuple[str, str]]:
    out = []
    if s.notify_retry_max_s < s.notify_retry_initial_s:
        out.append(
            (
                "notify_retry_max_s",
                f"must be at least TRYGG_NOTIFY_RETRY_INITIAL_S ({s.notify_retry_initial_s:g} s)",
            )
        )
    return out


def _build(
    path: Path | None, values: dict[str, Any], drop: set[str], env_bad: dict[str, str]
) -> Settings:
    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, _Env(settings_cls, env_bad)]
            if path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(_Without(settings_cls, src, drop) for src in sources)

    checked = _FromFile(**values)
    # A plain Settings (picklable, no sources of its own) with the values just validated.
    return Settings.model_construct(_fields_set=checked.model_fields_set, **dict(checked))


def load_settings(config: Path | None = None, **overrides: object) -> Settings:
    """Settings from defaults < config file < environment < explicit overrides.

    Raises SettingsError (a ValueError) listing every problem, one plain line each.
    """
    s, problems = read_settings(config, **overrides)
    if problems:
        raise SettingsError(problems)
    return s
