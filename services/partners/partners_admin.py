"""Operator use cases: partners, stores, terminals and API keys (rules are in rules_admin.py)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Row

from services.common.auth import hash_api_key, new_api_key
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.ledger_client import CREDIT, DEBIT, AccountSpec
from services.common.page_token import decode_page_token, encode_page_token
from services.partners import admin_requests, model
from services.partners.app import App
from services.partners.store import partners as partner_store

_log = structlog.get_logger("partners")

PARTNER_KINDS = ("retailer", "fuel", "hotel", "airline")
RESERVED_CURRENCIES = (model.COMMON_CURRENCY, model.MONEY_CURRENCY)


async def bootstrap_ledger(app: App) -> None:
    """The operator's currencies and accounts every partner relies on. Idempotent."""
    await app.ledger.register_currency(model.COMMON_CURRENCY, 0, model.OPERATOR)
    await app.ledger.register_currency(model.MONEY_CURRENCY, model.MONEY_SCALE, model.OPERATOR)
    await app.ledger.ensure_accounts([_breakage(model.COMMON_CURRENCY)])


def _breakage(currency: str) -> AccountSpec:
    return AccountSpec(model.breakage_account_id(currency), currency, CREDIT, model.OPERATOR, "operator_breakage")


def partner_accounts(partner_id: str, programme_currency: str) -> list[AccountSpec]:
    currencies = [model.COMMON_CURRENCY] + ([programme_currency] if programme_currency else [])
    specs = []
    for currency in currencies:
        specs.append(
            AccountSpec(
                model.issuance_account_id(currency, partner_id),
                currency,
                DEBIT,
                partner_id,
                "partner_issuance",
            )
        )
        specs.append(
            AccountSpec(
                model.redemption_account_id(currency, partner_id),
                currency,
                CREDIT,
                partner_id,
                "partner_redemption",
            )
        )
    return specs


@dataclass(frozen=True, slots=True)
class NewPartner:
    partner_id: str
    kind: str
    display_name: str
    programme_currency_code: str


async def register_partner(app: App, command: NewPartner) -> tuple[Row, bool]:
    model.check_partner_id(command.partner_id, "partner.partner_id")
    model.check_display_name(command.display_name)
    if command.kind not in PARTNER_KINDS:
        raise InvalidArgument("INVALID_PARTNER_KIND", "kind must be RETAILER, FUEL, HOTEL or AIRLINE")
    currency = command.programme_currency_code
    if currency:
        model.check_currency_code(currency, "partner.programme_currency_code")
        if currency in RESERVED_CURRENCIES:
            raise InvalidArgument("CURRENCY_RESERVED", f"{currency} belongs to the operator", currency=currency)

    def find(connection: Connection) -> tuple[Row | None, Row | None]:
        other = partner_store.partner_by_currency(connection, currency) if currency else None
        return partner_store.get_partner(connection, command.partner_id), other

    existing, currency_owner = await app.read(find)
    if existing is not None and (
        existing.kind != command.kind
        or existing.display_name != command.display_name
        or (existing.programme_currency_code or "") != currency
    ):
        raise AlreadyExists(
            "PARTNER_EXISTS_WITH_DIFFERENT_CONTENT",
            "a partner with this id exists with a different kind, name or currency",
            partner_id=command.partner_id,
        )
    if currency_owner is not None and currency_owner.partner_id != command.partner_id:
        raise AlreadyExists("CURRENCY_IN_USE", f"{currency} is another partner's currency", currency=currency)
    # Ledger first (idempotent), then our row: a partner we know of always has its accounts.
    if currency:
        await app.ledger.register_currency(currency, 0, command.partner_id)
        await app.ledger.ensure_accounts([_breakage(currency)])
    await app.ledger.ensure_accounts(partner_accounts(command.partner_id, currency))
    if existing is not None:
        return existing, False
    now = app.clock()

    def insert_partner(connection: Connection) -> tuple[Row, bool]:
        row = partner_store.get_partner(connection, command.partner_id)
        if row is not None:
            return row, False
        partner_store.insert_partner(
            connection,
            partner_id=command.partner_id,
            kind=command.kind,
            display_name=command.display_name,
            programme_currency_code=currency or None,
            status="active",
            create_time_us=now,
            update_time_us=now,
        )
        return partner_store.get_partner(connection, command.partner_id), True

    row, created = await app.write(insert_partner, retry_unique_violation=True)
    if created:
        _log.info("partner_registered", registered_partner_id=command.partner_id, currency=currency)
    return row, created


async def get_partner(app: App, partner_id: str) -> Row:
    row = await app.read(lambda connection: partner_store.get_partner(connection, partner_id))
    if row is None:
        raise NotFound("PARTNER_NOT_FOUND", "no partner with this id", partner_id=partner_id)
    return row


async def list_partners(app: App, page_size: int, page_token: str) -> tuple[list[Row], str]:
    limit = model.page_limit(page_size)
    (after_id,) = decode_page_token(page_token, str) or ("",)
    rows = await app.read(lambda connection: partner_store.list_partners(connection, after_id, limit + 1))
    if len(rows) > limit:
        return list(rows[:limit]), encode_page_token(rows[limit - 1].partner_id)
    return list(rows), ""


async def set_partner_status(app: App, partner_id: str, status: str) -> Row:
    now = app.clock()

    def work(connection: Connection) -> Row:
        if partner_store.get_partner(connection, partner_id) is None:
            raise NotFound("PARTNER_NOT_FOUND", "no partner with this id", partner_id=partner_id)
        partner_store.set_partner_status(connection, partner_id, status, now)
        return partner_store.get_partner(connection, partner_id)

    row = await app.write(work)
    app.facts.api_keys.clear()  # the status rides on each key's entry
    _log.info("partner_status_changed", target_partner_id=partner_id, status=status)
    return row


async def create_store(app: App, store_id: str, partner_id: str, display_name: str) -> tuple[Row, bool]:
    model.check_local_id(store_id, "store.store_id")
    model.check_display_name(display_name)
    now = app.clock()

    def work(connection: Connection) -> tuple[Row, bool]:
        if partner_store.get_partner(connection, partner_id) is None:
            raise NotFound("PARTNER_NOT_FOUND", "no partner with this id", partner_id=partner_id)
        existing = partner_store.get_store(connection, store_id)
        if existing is not None:
            if existing.partner_id != partner_id or existing.display_name != display_name:
                raise AlreadyExists("STORE_EXISTS_WITH_DIFFERENT_CONTENT", "store id already in use", store_id=store_id)
            return existing, False
        partner_store.insert_store(
            connection, store_id=store_id, partner_id=partner_id, display_name=display_name, create_time_us=now
        )
        return partner_store.get_store(connection, store_id), True

    return await app.write(work, retry_unique_violation=True)


async def create_terminal(app: App, store_id: str, terminal_id: str) -> bool:
    model.check_local_id(store_id, "terminal.store_id")
    model.check_local_id(terminal_id, "terminal.terminal_id")
    now = app.clock()

    def work(connection: Connection) -> bool:
        if partner_store.get_store(connection, store_id) is None:
            raise NotFound("STORE_NOT_FOUND", "no store with this id", store_id=store_id)
        if partner_store.get_terminal(connection, store_id, terminal_id) is not None:
            return False
        partner_store.insert_terminal(connection, store_id=store_id, terminal_id=terminal_id, create_time_us=now)
        return True

    return await app.write(work, retry_unique_violation=True)


async def issue_api_key(
    app: App, caller_id: str, partner_id: str, request_id: str, revoke_key_id: str = ""
) -> tuple[Row, str, Row | None]:
    """A new key (returned in clear once); optionally revokes an old one in the same transaction.

    Idempotent on (caller, request_id): an exact retry within the retry window returns the
    same key and secret; later, FAILED_PRECONDITION (API_KEY_RETRY_WINDOW_PASSED)."""
    model.check_request_id(request_id)
    operation = admin_requests.ROTATE_API_KEY if revoke_key_id else admin_requests.ISSUE_API_KEY
    content: dict[str, object] = {"partner_id": partner_id}
    if revoke_key_id:
        content["key_id"] = revoke_key_id
    api_key = new_api_key()
    key_id = f"key_{secrets.token_hex(8)}"
    now = app.clock()
    window_start = now - model.API_KEY_RETRY_WINDOW_SECONDS * model.MICROS_PER_SECOND

    def retry(connection: Connection, done: Row) -> tuple[Row, str, Row | None, bool]:
        admin_requests.check_same_content(done, content, request_id)
        row = partner_store.get_api_key(connection, done.result_id)
        secret = None
        if done.sealed_secret is not None and done.create_time_us >= window_start:
            secret = admin_requests.unseal(app.alias_secret, row.key_id, done.sealed_secret)
        if secret is None or hash_api_key(secret) != row.key_hash:
            raise FailedPrecondition(
                "API_KEY_RETRY_WINDOW_PASSED",
                "this request issued a key whose secret can no longer be shown; "
                "revoke that key if its secret was lost and issue a new one under a new request_id",
                key_id=row.key_id,
                request_id=request_id,
            )
        revoked = partner_store.get_api_key(connection, revoke_key_id) if revoke_key_id else None
        return row, secret, revoked, False

    def work(connection: Connection) -> tuple[Row, str, Row | None, bool]:
        done = partner_store.admin_request(connection, caller_id, operation, request_id)
        if done is not None:
            return retry(connection, done)
        if partner_store.get_partner(connection, partner_id) is None:
            raise NotFound("PARTNER_NOT_FOUND", "no partner with this id", partner_id=partner_id)
        revoked = None
        if revoke_key_id:
            old = partner_store.get_api_key(connection, revoke_key_id)
            if old is None or old.partner_id != partner_id:
                raise NotFound("API_KEY_NOT_FOUND", "no such key for this partner", key_id=revoke_key_id)
            partner_store.revoke_api_key(connection, revoke_key_id, now, replaced_by_key_id=key_id)
            revoked = partner_store.get_api_key(connection, revoke_key_id)
        partner_store.insert_api_key(
            connection,
            key_id=key_id,
            partner_id=partner_id,
            key_hash=hash_api_key(api_key),
            key_hint=model.api_key_hint(api_key),
            create_time_us=now,
        )
        partner_store.forget_sealed_secrets(connection, window_start)
        partner_store.insert_admin_request(
            connection,
            caller_id=caller_id,
            operation=operation,
            request_id=request_id,
            content=admin_requests.content_json(content),
            result_id=key_id,
            sealed_secret=admin_requests.seal(app.alias_secret, key_id, api_key),
            create_time_us=now,
        )
        return partner_store.get_api_key(connection, key_id), api_key, revoked, True

    row, secret, revoked, created = await app.write(work, retry_unique_violation=True)
    if revoked is not None:
        app.facts.api_keys.forget(revoked.key_hash)
    if created:
        _log.info("api_key_issued", target_partner_id=partner_id, key_id=key_id, revoked_key_id=revoke_key_id)
    return row, secret, revoked


async def revoke_api_key(app: App, partner_id: str, key_id: str) -> Row:
    now = app.clock()

    def work(connection: Connection) -> Row:
        row = partner_store.get_api_key(connection, key_id)
        if row is None or row.partner_id != partner_id:
            raise NotFound("API_KEY_NOT_FOUND", "no such key for this partner", key_id=key_id)
        partner_store.revoke_api_key(connection, key_id, now)
        return partner_store.get_api_key(connection, key_id)

    row = await app.write(work)
    app.facts.api_keys.forget(row.key_hash)
    _log.info("api_key_revoked", target_partner_id=partner_id, key_id=key_id)
    return row


def currency_owner(connection: Connection, currency: str) -> str | None:
    """ "operator" for PTS, the owning partner for a programme currency, None if unknown."""
    if currency == model.COMMON_CURRENCY:
        return model.OPERATOR
    partner = partner_store.partner_by_currency(connection, currency)
    return None if partner is None else partner.partner_id


async def ensure_known_api_key(app: App, partner_id: str, key_id: str, api_key: str) -> bool:
    """Demo and fixtures only: store a key chosen by the operator, once. Returns True if added."""
    now = app.clock()

    def work(connection: Connection) -> bool:
        if partner_store.get_api_key(connection, key_id) is not None:
            return False
        partner_store.insert_api_key(
            connection,
            key_id=key_id,
            partner_id=partner_id,
            key_hash=hash_api_key(api_key),
            key_hint=model.api_key_hint(api_key),
            create_time_us=now,
        )
        return True

    return await app.write(work, retry_unique_violation=True)
