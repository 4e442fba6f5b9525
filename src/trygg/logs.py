"""Structured logs: JSON lines in production, readable key=value in a terminal.

Log events name ids and counts, never payload contents, names or addresses:
health data stays out of the logs.

``configure`` sets up both paths to stderr:

- trygg's own events (``logs.get(...)``) go through structlog's processors;
- the standard library's logging, which the libraries use (psycopg_pool's
  "error connecting", uvicorn, paho, aiokafka, asyncio), and warnings
  (``logging.captureWarnings``) go through structlog's ``ProcessorFormatter``
  on the root logger, with the same renderer; in JSON mode an uncaught
  exception is logged too (``sys.excepthook``, ``threading.excepthook``), so
  that every line on stderr is one JSON object.

A library's line that repeats (same logger, level and message template) is
written once, then counted: one line a minute with the count
(``trygg.repeats``).
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
import types
from collections.abc import Hashable
from typing import Any

import structlog

from trygg.repeats import OTHER, RepeatLimiter, seconds_text

_write_lock = threading.Lock()


def _write(line: str) -> None:
    """One whole line to whatever ``sys.stderr`` is now, in one write: lines from
    threads (the pool's workers, the main loop) never interleave."""
    with _write_lock:
        stream = sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (ValueError, OSError):  # closed (at exit of an in-process command) or gone
            pass


class _StderrLogger:
    """Writes to whatever ``sys.stderr`` is when a line is logged.

    structlog's PrintLoggerFactory keeps the stream it was given. A command
    run in-process (a test's CliRunner) configures logging while stderr is a
    temporary stream that is closed afterwards; every later log line then
    raised "I/O operation on closed file" in whatever thread logged it.
    """

    def msg(self, message: str) -> None:
        _write(message)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stderr_logger(*args: object) -> _StderrLogger:
    return _StderrLogger()


class _Handler(logging.Handler):
    """The root logger's handler: each record formatted by ProcessorFormatter,
    written as one line to the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception as exc:  # a library's bad format string: say so, in format
            get("trygg.logs").error(
                "a log line could not be formatted",
                logger=record.name,
                error=f"{type(exc).__name__}: {exc}"[:200],
            )
            return
        _write(line)


class _RepeatFilter(logging.Filter):
    """A library's repeated line: the first in full, then a count a minute."""

    def __init__(self, period: float) -> None:
        super().__init__()
        self.limiter = RepeatLimiter(period)
        self._lock = threading.Lock()
        self._last: dict[Hashable, tuple[str, int, str]] = {}  # key -> (message, level, logger)
        self._checked = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, str(record.msg), exc)
        with self._lock:
            full = self.limiter.hit(key)
            if not full:
                try:
                    text = record.getMessage()
                except Exception:
                    text = str(record.msg)
                self._last[key] = (text[:500], record.levelno, record.name)
            due = []
            now = time.monotonic()
            if now - self._checked >= 1.0:
                self._checked = now
                due = self.limiter.due()
        self._say(due)
        return full

    def flush_counts(self, everything: bool = False) -> None:
        with self._lock:
            due = self.limiter.flush() if everything else self.limiter.due()
        self._say(due)

    def _say(self, due: list[Any]) -> None:
        if not due:
            return
        log = structlog.get_logger("trygg.logs")
        for r in due:
            with self._lock:
                text, level, name = self._last.pop(r.key, ("", logging.WARNING, "?"))
            secs = seconds_text(r.seconds)
            if r.key is OTHER:
                text, name = "other repeated log lines", "?"
            log.log(
                level,
                f"{text} ({r.count:,} in the last {secs} s)",
                logger=name,
                count=r.count,
                seconds=round(r.seconds),
            )


_filter: _RepeatFilter | None = None
_hooks_set = False


def flush_repeated(everything: bool = False) -> None:
    """Write the counts of libraries' repeated lines whose minute is over (the
    runner calls this every few seconds; at exit everything is written)."""
    if _filter is not None:
        _filter.flush_counts(everything)


def _log_uncaught(
    typ: type[BaseException], value: BaseException, tb: types.TracebackType | None
) -> None:
    if issubclass(typ, KeyboardInterrupt):
        sys.__excepthook__(typ, value, tb)
        return
    get("trygg").critical("uncaught exception", exc_info=(typ, value, tb))


def _log_uncaught_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    get("trygg").critical(
        "uncaught exception in a thread",
        thread=getattr(args.thread, "name", None),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def configure(fmt: str = "console", level: str = "INFO", repeat_period: float = 60.0) -> None:
    global _filter, _hooks_set
    json_mode = fmt == "json"
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json_mode
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    # JSON: a traceback is one string field, not lines of its own.
    tracebacks: list[structlog.types.Processor] = (
        [structlog.processors.format_exc_info] if json_mode else []
    )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    lvl = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            *tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # The standard library's records: the same renderer, the library's logger name.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            stamp,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tracebacks,
            renderer,
        ],
    )
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(h)  # configured again (in-process commands in tests)
    handler = _Handler()
    handler.setFormatter(formatter)
    _filter = _RepeatFilter(repeat_period)
    handler.addFilter(_filter)
    root.addHandler(handler)
    root.setLevel(lvl)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per POST is noise
    # matplotlib (the A3 page's charts) says "generated new fontManager" at INFO the
    # first time it runs on a machine: not the command's business, and it broke the
    # A3 command's one-line report on a fresh machine. Its warnings still show.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    # Off, then on: captureWarnings(True) is a no-op while it holds an earlier
    # showwarning, which a warnings.catch_warnings() since then may have replaced
    # (configured again in-process: commands in tests).
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    if json_mode:
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_thread
    else:  # configured again in console mode (in-process commands in tests)
        if sys.excepthook is _log_uncaught:
            sys.excepthook = sys.__excepthook__
        if threading.excepthook is _log_uncaught_thread:
            threading.excepthook = threading.__excepthook__
    if not _hooks_set:
        _hooks_set = True
        atexit.register(flush_repeated, True)


def handler() -> logging.Handler:
    """The handler ``configure`` put on the root logger (structlog's
    ProcessorFormatter, the repeat filter); configured first if it was not."""
    for h in logging.getLogger().handlers:
        if isinstance(h, _Handler):
            return h
    configure()
    return handler()


def dict_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for a library that sets logging up itself,
    so that its records keep going through trygg's handler.

    Faust's worker does (mode's ``Worker`` calls ``mode.utils.logging.setup_logging``
    at start: it clears the root logger's handlers and applies this instead of
    its own, a colorlog handler on stdout whose ``[WARNING] ...`` prefix broke
    every JSON line). The handler is the same object, so its repeat counts go on.
    """
    mine = handler()  # now: mode takes the root logger's handlers off before applying it
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"trygg": {"()": lambda: mine}},
        "root": {"level": logging.getLevelName(level.upper()), "handlers": ["trygg"]},
    }


def get(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
