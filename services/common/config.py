"""Reading settings from the environment: one place, explicit units, clear errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_T = TypeVar("_T")


class ConfigError(ValueError):
    """A setting is present but unusable; the process should refuse to start."""


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as error:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from error
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def log_format() -> str:
    return env_choice("COALITION_LOG_FORMAT", "console", ("console", "json"))


def log_level() -> str:
    return env_choice("COALITION_LOG_LEVEL", "info", ("debug", "info", "warning", "error"))


def apply_gil_switch_interval() -> None:
    """Hand the GIL over sooner than Python's 5 ms default.

    A writer thread coming back from a database round trip waits for the event loop thread to
    release the GIL; with 5 ms slices that wait dominates a small batch (make bench: single
    transfers about 10% faster at 0.5 ms on 2 cores).
    """
    sys.setswitchinterval(env_int("COALITION_GIL_SWITCH_INTERVAL_US", 500, minimum=100, maximum=100_000) / 1e6)


def settings_or_exit(read: Callable[[], _T]) -> _T:
    """A process's settings, or exit 2 with the one line that says which setting is wrong."""
    try:
        return read()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


DEFAULT_TIME_ZONE = "Europe/Amsterdam"  # COALITION_TIME_ZONE's default


def zone_of(name: str) -> ZoneInfo:
    """The coalition's time zone (COALITION_TIME_ZONE), or a ConfigError naming the bad value."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ConfigError(f"COALITION_TIME_ZONE {name!r} is not a known time zone") from error
