"""Development or production: which defaults may be used at all.

Production is the default, so a service started without `COALITION_ENV` never runs on a
published development secret; `make run`, `make demo` and the tests set `development`.
"""

from __future__ import annotations

from services.common.config import ConfigError, env_choice, env_str

ENV_SETTING = "COALITION_ENV"
DEVELOPMENT = "development"
PRODUCTION = "production"


def environment() -> str:
    return env_choice(ENV_SETTING, PRODUCTION, (PRODUCTION, DEVELOPMENT))


def is_development() -> bool:
    return environment() == DEVELOPMENT


def secret_setting(name: str, development_default: str) -> str:
    """A secret's value; its development default only in development, else a refusal naming it."""
    value = env_str(name, "")
    if is_development():
        return value or development_default
    if value == development_default:
        raise ConfigError(
            f"{name} is the published development value: production ({ENV_SETTING}={PRODUCTION}, the default) "
            f"needs a secret of its own"
        )
    if value:
        return value
    raise ConfigError(
        f"{name} is not set: production ({ENV_SETTING}={PRODUCTION}, the default) needs its own secret; "
        f"set {name}, or {ENV_SETTING}={DEVELOPMENT} for the published development value"
    )
