"""structlog set-up: JSON in production, readable in a terminal; request context merged first."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from contextvars import ContextVar

import orjson
import structlog

# The request's log context: one variable holding a dict, replaced (never mutated) on each bind,
# so a task started during a request keeps what was bound when it started (a merged batch's
# task starts in `work_context` instead: its lines are no one request's).
# structlog.contextvars keeps a variable per key and walks the whole context on every line.
_request_context: ContextVar[dict | None] = ContextVar("coalition_log_context", default=None)


def start_request(**values: object) -> None:
    """A new request: its log context is these values alone."""
    _request_context.set(values)


def bind(**values: object) -> None:
    """Every later log line of this request (in this task) carries these values too."""
    _request_context.set({**(_request_context.get() or {}), **values})


def work_context(**values: object) -> contextvars.Context:
    """A copy of the current context whose log context is these values alone: for a task that
    does the work of many requests (a merged batch), whose lines belong to none of them. Started
    in the request's own context, it would stamp every line with that one request's id."""
    context = contextvars.copy_context()
    context.run(_request_context.set, values)
    return context


def merge_request_context(_logger, _method_name: str, event_dict: dict) -> dict:
    """The processor that puts the request's context on each line (the line's own keys win)."""
    context = _request_context.get()
    if context:
        for key, value in context.items():
            event_dict.setdefault(key, value)
    return event_dict


class _UtcTimestamp:
    """`timestamp` as structlog's TimeStamper(fmt="iso", utc=True) writes it
    (2026-12-05T03:03:11.656579Z), with the text up to the second made once per second: every
    request logs a line, and formatting a datetime was a tenth of what a line cost."""

    __slots__ = ("_second",)

    def __init__(self) -> None:
        self._second = (-1, "")  # (epoch second, its text), replaced whole: safe across threads

    def __call__(self, _logger, _method_name: str, event_dict: dict) -> dict:
        second, micros = divmod(time.time_ns() // 1000, 1_000_000)
        cached_second, text = self._second
        if second != cached_second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        # As datetime.isoformat, which structlog's stamper uses: no fraction at a whole second.
        event_dict["timestamp"] = f"{text}.{micros:06d}Z" if micros else f"{text}Z"
        return event_dict


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _orjson_dumps(event: dict, **options) -> bytes:
    """orjson with json's tolerance for non-string keys; an integer beyond 64 bits goes through
    `default` as text instead of failing the log call (and with it the request)."""
    try:
        return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS, **options)
    except TypeError:
        return orjson.dumps({key: str(value) for key, value in event.items()}, option=orjson.OPT_NON_STR_KEYS)


def configure_logging(log_format: str = "console", level: str = "info") -> None:
    processors: list = [
        merge_request_context,
        structlog.processors.add_log_level,
        _UtcTimestamp(),
        structlog.processors.format_exc_info,
    ]
    if log_format == "json":
        # orjson renders to bytes several times faster than json, and every request logs a line.
        processors.append(structlog.processors.JSONRenderer(serializer=_orjson_dumps))
        buffer = getattr(sys.stderr, "buffer", None)
        factory = structlog.BytesLoggerFactory(file=buffer) if buffer else structlog.PrintLoggerFactory(sys.stderr)
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
