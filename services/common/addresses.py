"""Where a client finds a service: one rule for the services, the demo and the finance tool.

`COALITION_<SERVICE>_ADDRESS` when set; otherwise the address the service itself listens on
(`COALITION_<SERVICE>_LISTEN_ADDRESS`, a wildcard host dialled as 127.0.0.1); otherwise the
default port. So a stack moved to other ports with the listen settings is found by its own tools
in the same environment, and never by another stack's.
"""

from __future__ import annotations

from services.common.config import env_str

DEFAULT_LISTEN_ADDRESSES = {
    "ledger": "127.0.0.1:50051",
    "partners": "127.0.0.1:50052",
    "settlement": "127.0.0.1:50053",
}
# service -> (where clients dial it, where it listens)
SETTINGS = {
    "ledger": ("COALITION_LEDGER_ADDRESS", "COALITION_LEDGER_LISTEN_ADDRESS"),
    "partners": ("COALITION_PARTNERS_ADDRESS", "COALITION_PARTNERS_LISTEN_ADDRESS"),
    "settlement": ("COALITION_SETTLEMENT_ADDRESS", "COALITION_SETTLEMENT_LISTEN_ADDRESS"),
}
_WILDCARD_HOSTS = {"", "0.0.0.0", "[::]", "::"}


def dial_address(service: str) -> str:
    """Where to call `service` (ledger, partners or settlement) from this machine."""
    dial_setting, listen_setting = SETTINGS[service]
    return env_str(dial_setting, "") or dialable(env_str(listen_setting, DEFAULT_LISTEN_ADDRESSES[service]))


def dialable(address: str, port: int | None = None) -> str:
    """A listen address as a client dials it: a wildcard host becomes 127.0.0.1; `port`, when
    given, replaces the configured one (the port actually bound, for a listen port 0)."""
    host, _, configured_port = address.rpartition(":")
    host = "127.0.0.1" if host in _WILDCARD_HOSTS else host
    return f"{host}:{configured_port if port is None else port}"
