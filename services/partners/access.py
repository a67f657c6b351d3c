"""Who is calling and what they may touch. Partners see only their own stores, terminals
and transactions; the operator's admin key may do admin calls."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
from sqlalchemy import Row

from services.common.auth import bind_principal, hash_api_key, require_bearer_token, require_operator_certificate
from services.common.errors import FailedPrecondition, PermissionDenied, Unauthenticated
from services.partners import model
from services.partners.app import App
from services.partners.facts import Facts
from services.partners.store import partners as partner_store


@dataclass(frozen=True, slots=True)
class Caller:
    partner_id: str  # "operator" for the admin key
    is_admin: bool
    active: bool = True
    programme_currency: str = ""
    # SHA-256 of the partner's API key (empty for the admin key): what rate limits are kept by.
    key_hash: str = ""


async def authenticate(app: App, context: grpc.aio.ServicerContext) -> Caller:
    token = require_bearer_token(context)
    if app.admin_key.matches(token):
        require_operator_certificate(context)
        bind_principal(model.OPERATOR)
        return Caller(model.OPERATOR, is_admin=True)
    key_hash = hash_api_key(token)
    row = app.facts.api_keys.get(key_hash)
    if row is None:
        row = await _load_key(app, key_hash)
    if row is None:
        raise Unauthenticated("INVALID_API_KEY", "the API key is unknown or revoked; ask the operator for a key")
    bind_principal(row.partner_id)
    return Caller(
        row.partner_id,
        is_admin=False,
        active=row.status == "active",
        programme_currency=row.programme_currency_code or "",
        key_hash=key_hash,
    )


async def _load_key(app: App, key_hash: str) -> Row | None:
    """One database read per key at a time; calls arriving within KEY_READ_JOIN_SECONDS_MAX of its
    start share it, so the freshness bound of `facts` holds for them too."""
    now = time.monotonic()
    started, loading = app.key_loads.get(key_hash, (0.0, None))
    if loading is None or now - started > KEY_READ_JOIN_SECONDS_MAX:
        loading = asyncio.ensure_future(_read_key(app, key_hash))
        app.key_loads[key_hash] = (now, loading)
        loading.add_done_callback(lambda done: _forget_load(app, key_hash, done))
    return await asyncio.shield(loading)


# A call joins a read of its key only if that read began this recently; otherwise it reads anew,
# so a key revoked before the call arrived is never accepted on an older read's word.
KEY_READ_JOIN_SECONDS_MAX = 0.1


def _forget_load(app: App, key_hash: str, done: asyncio.Future) -> None:
    if app.key_loads.get(key_hash, (0.0, None))[1] is done:
        del app.key_loads[key_hash]


async def _read_key(app: App, key_hash: str) -> Row | None:
    keys = app.facts.api_keys
    loaded_at = keys.now()
    row = await app.read_statement(lambda connection: partner_store.partner_of_key(connection, key_hash))
    if row is not None:
        keys.put(key_hash, row, loaded_at)
    return row


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise PermissionDenied("ADMIN_REQUIRED", "this call needs the operator's admin key")


def require_partner(caller: Caller) -> None:
    """POS calls act for one partner: they need that partner's key."""
    if caller.is_admin:
        raise PermissionDenied("PARTNER_KEY_REQUIRED", "point-of-sale calls need a partner's API key")


def require_active(caller: Caller) -> None:
    if not caller.active:
        raise FailedPrecondition(
            "PARTNER_SUSPENDED",
            "the partner is suspended; contact the operator",
            partner_id=caller.partner_id,
        )


def require_self_or_admin(caller: Caller, partner_id: str) -> None:
    if not caller.is_admin and caller.partner_id != partner_id:
        raise PermissionDenied("OTHER_PARTNER", "a partner may only read its own data", partner_id=partner_id)


def check_point_of_sale(connection, facts: Facts, caller: Caller, store_id: str, terminal_id: str) -> None:
    """The store and terminal must exist and belong to the caller."""
    model.check_local_id(store_id, "point_of_sale.store_id")
    model.check_local_id(terminal_id, "point_of_sale.terminal_id")
    owner = facts.store_owners.get_or_load(store_id, lambda: _owner(partner_store.get_store(connection, store_id)))
    if owner != caller.partner_id:
        # Store ids are not secret (the operator assigns them), so say why.
        raise PermissionDenied("STORE_NOT_OWNED", "the store is not one of your stores", store_id=store_id)
    terminal = (store_id, terminal_id)
    if not facts.terminals.get_or_load(
        terminal, lambda: partner_store.get_terminal(connection, *terminal) is not None or None
    ):
        raise PermissionDenied(
            "TERMINAL_NOT_OWNED", "the terminal is not registered in this store", terminal_id=terminal_id
        )


def _owner(store_row) -> str | None:
    return None if store_row is None else store_row.partner_id
