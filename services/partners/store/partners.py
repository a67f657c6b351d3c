"""Partners, their stores, terminals and API keys, and the admin requests that created them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Row, and_, insert, or_, select, update

from services.partners.store.tables import admin_requests, api_keys, partners, stores, terminals


def get_partner(connection: Connection, partner_id: str) -> Row | None:
    return connection.execute(select(partners).where(partners.c.partner_id == partner_id)).first()


def list_partners(connection: Connection, after_id: str, limit: int) -> Sequence[Row]:
    query = select(partners).where(partners.c.partner_id > after_id).order_by(partners.c.partner_id)
    return connection.execute(query.limit(limit)).all()


def partner_by_currency(connection: Connection, currency_code: str) -> Row | None:
    query = select(partners).where(partners.c.programme_currency_code == currency_code)
    return connection.execute(query).first()


def set_partner_status(connection: Connection, partner_id: str, status: str, now_us: int) -> None:
    connection.execute(
        update(partners).where(partners.c.partner_id == partner_id).values(status=status, update_time_us=now_us)
    )


def get_store(connection: Connection, store_id: str) -> Row | None:
    return connection.execute(select(stores).where(stores.c.store_id == store_id)).first()


def get_terminal(connection: Connection, store_id: str, terminal_id: str) -> Row | None:
    query = select(terminals).where(and_(terminals.c.store_id == store_id, terminals.c.terminal_id == terminal_id))
    return connection.execute(query).first()


def partner_of_key(connection: Connection, key_hash: str) -> Row | None:
    """The active key and its partner's status, or None for an unknown or revoked key."""
    query = (
        select(api_keys.c.key_id, api_keys.c.partner_id, partners.c.status, partners.c.programme_currency_code)
        .join(partners, partners.c.partner_id == api_keys.c.partner_id)
        .where(and_(api_keys.c.key_hash == key_hash, api_keys.c.revoke_time_us.is_(None)))
    )
    return connection.execute(query).first()


def get_api_key(connection: Connection, key_id: str) -> Row | None:
    return connection.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()


def revoke_api_key(connection: Connection, key_id: str, now_us: int, replaced_by_key_id: str | None = None) -> None:
    connection.execute(
        update(api_keys)
        .where(and_(api_keys.c.key_id == key_id, api_keys.c.revoke_time_us.is_(None)))
        .values(revoke_time_us=now_us, replaced_by_key_id=replaced_by_key_id)
    )


def admin_request(connection: Connection, caller_id: str, operation: str, request_id: str) -> Row | None:
    query = select(admin_requests).where(
        and_(
            admin_requests.c.caller_id == caller_id,
            admin_requests.c.operation == operation,
            admin_requests.c.request_id == request_id,
        )
    )
    return connection.execute(query).first()


def insert_admin_request(connection: Connection, **values: object) -> None:
    connection.execute(insert(admin_requests).values(**values))


def forget_sealed_secrets(connection: Connection, created_before_us: int) -> None:
    """Past the retry window a key's secret is gone for good, sealed or not."""
    connection.execute(
        update(admin_requests)
        .where(and_(admin_requests.c.sealed_secret.is_not(None), admin_requests.c.create_time_us < created_before_us))
        .values(sealed_secret=None)
    )


def insert_api_key(connection: Connection, **values: object) -> None:
    connection.execute(insert(api_keys).values(**values))


def insert_partner(connection: Connection, **values: object) -> None:
    connection.execute(insert(partners).values(**values))


def insert_store(connection: Connection, **values: object) -> None:
    connection.execute(insert(stores).values(**values))


def insert_terminal(connection: Connection, **values: object) -> None:
    connection.execute(insert(terminals).values(**values))


# ---- operator lists: keyset pages in a fixed order, `limit` rows after the last one seen ----


def stores_of(connection: Connection, partner_id: str, after_store_id: str, limit: int) -> Sequence[Row]:
    query = (
        select(stores)
        .where(and_(stores.c.partner_id == partner_id, stores.c.store_id > after_store_id))
        .order_by(stores.c.store_id)
    )
    return connection.execute(query.limit(limit)).all()


def terminals_of(
    connection: Connection, partner_id: str | None, store_id: str | None, after: tuple[str, str], limit: int
) -> Sequence[Row]:
    """A store's terminals, or every terminal of a partner's stores, by (store_id, terminal_id)."""
    after_store_id, after_terminal_id = after
    query = select(terminals).where(
        or_(
            terminals.c.store_id > after_store_id,
            and_(terminals.c.store_id == after_store_id, terminals.c.terminal_id > after_terminal_id),
        )
    )
    if store_id is not None:
        query = query.where(terminals.c.store_id == store_id)
    if partner_id is not None:
        query = query.join(stores, stores.c.store_id == terminals.c.store_id).where(stores.c.partner_id == partner_id)
    query = query.order_by(terminals.c.store_id, terminals.c.terminal_id)
    return connection.execute(query.limit(limit)).all()


def api_keys_of(connection: Connection, partner_id: str, after: tuple[int, str], limit: int) -> Sequence[Row]:
    """A partner's keys, oldest first, without their hashes."""
    after_create_time_us, after_key_id = after
    columns = [column for column in api_keys.c if column.name != "key_hash"]
    query = (
        select(*columns)
        .where(api_keys.c.partner_id == partner_id)
        .where(
            or_(
                api_keys.c.create_time_us > after_create_time_us,
                and_(api_keys.c.create_time_us == after_create_time_us, api_keys.c.key_id > after_key_id),
            )
        )
        .order_by(api_keys.c.create_time_us, api_keys.c.key_id)
    )
    return connection.execute(query.limit(limit)).all()
