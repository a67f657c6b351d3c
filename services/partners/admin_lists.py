"""Operator use cases that list what a partner has: stores, terminals and API keys.

Keyset pages in a fixed order; the page token (services/common/page_token.py) carries the
last row's sort key, so a row inserted behind the cursor never shifts a later page. The
partner or store a list names must exist (NOT_FOUND), so an empty page always means "none".
"""

from __future__ import annotations

from sqlalchemy import Connection, Row

from services.common.errors import InvalidArgument, NotFound
from services.common.page_token import decode_page_token, encode_page_token
from services.partners import model
from services.partners.app import App
from services.partners.store import partners as partner_store


def _require_partner(connection: Connection, partner_id: str) -> None:
    if partner_store.get_partner(connection, partner_id) is None:
        raise NotFound("PARTNER_NOT_FOUND", "no partner with this id", partner_id=partner_id)


def _page(rows, limit: int, token_of) -> tuple[list[Row], str]:
    """The first `limit` of `limit + 1` rows read, and the token after them when more follow."""
    if len(rows) > limit:
        return list(rows[:limit]), encode_page_token(*token_of(rows[limit - 1]))
    return list(rows), ""


async def list_stores(app: App, partner_id: str, page_size: int, page_token: str) -> tuple[list[Row], str]:
    model.check_partner_id(partner_id)
    limit = model.page_limit(page_size)
    (after_store_id,) = decode_page_token(page_token, str) or ("",)

    def read(connection: Connection):
        _require_partner(connection, partner_id)
        return partner_store.stores_of(connection, partner_id, after_store_id, limit + 1)

    return _page(await app.read(read), limit, lambda row: (row.store_id,))


async def list_terminals(
    app: App, partner_id: str, store_id: str, page_size: int, page_token: str
) -> tuple[list[Row], str]:
    """The terminals of one store, or of every store of one partner: exactly one is named."""
    if bool(partner_id) == bool(store_id):
        raise InvalidArgument(
            "STORE_OR_PARTNER_REQUIRED", "name either store_id or partner_id (not both)", field="store_id"
        )
    if partner_id:
        model.check_partner_id(partner_id)
    else:
        model.check_local_id(store_id, "store_id")
    limit = model.page_limit(page_size)
    after = decode_page_token(page_token, str, str) or ("", "")

    def read(connection: Connection):
        if partner_id:
            _require_partner(connection, partner_id)
        elif partner_store.get_store(connection, store_id) is None:
            raise NotFound("STORE_NOT_FOUND", "no store with this id", store_id=store_id)
        return partner_store.terminals_of(connection, partner_id or None, store_id or None, after, limit + 1)

    return _page(await app.read(read), limit, lambda row: (row.store_id, row.terminal_id))


async def list_api_keys(app: App, partner_id: str, page_size: int, page_token: str) -> tuple[list[Row], str]:
    """A partner's keys, oldest first: ids, times, hints and replacements, never a key or its hash."""
    model.check_partner_id(partner_id)
    limit = model.page_limit(page_size)
    after = decode_page_token(page_token, int, str) or (-1, "")

    def read(connection: Connection):
        _require_partner(connection, partner_id)
        return partner_store.api_keys_of(connection, partner_id, after, limit + 1)

    return _page(await app.read(read), limit, lambda row: (row.create_time_us, row.key_id))
