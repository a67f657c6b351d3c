"""Members, their aliases (hashed) and the wallets we know they hold."""

from __future__ import annotations

from sqlalchemy import Connection, Row, and_, func, insert, select

from services.partners.store.tables import member_aliases, member_wallets, members


def get_member(connection: Connection, member_id: str) -> Row | None:
    return connection.execute(select(members).where(members.c.member_id == member_id)).first()


def lock_member(connection: Connection, member_id: str) -> Row | None:
    """Serialises a member's conversions (annual cap) on PostgreSQL; SQLite already holds its write lock."""
    return connection.execute(select(members).where(members.c.member_id == member_id).with_for_update()).first()


def member_by_enrolment(connection: Connection, caller_id: str, request_id: str) -> Row | None:
    query = select(members).where(
        and_(members.c.enroll_caller_id == caller_id, members.c.enroll_request_id == request_id)
    )
    return connection.execute(query).first()


def member_by_alias(connection: Connection, alias_hash: str) -> Row | None:
    return connection.execute(select(member_aliases).where(member_aliases.c.alias_hash == alias_hash)).first()


def alias_count(connection: Connection, member_id: str) -> int:
    query = select(func.count()).select_from(member_aliases).where(member_aliases.c.member_id == member_id)
    return int(connection.execute(query).scalar_one())


def wallet_currencies(connection: Connection, member_id: str) -> list[str]:
    query = (
        select(member_wallets.c.currency_code)
        .where(member_wallets.c.member_id == member_id)
        .order_by(member_wallets.c.currency_code)
    )
    return list(connection.execute(query).scalars())


def has_wallet(connection: Connection, member_id: str, currency_code: str) -> bool:
    query = select(member_wallets.c.member_id).where(
        and_(member_wallets.c.member_id == member_id, member_wallets.c.currency_code == currency_code)
    )
    return connection.execute(query).first() is not None


def insert_alias(connection: Connection, **values: object) -> None:
    connection.execute(insert(member_aliases).values(**values))


def insert_member(connection: Connection, **values: object) -> None:
    connection.execute(insert(members).values(**values))


def insert_wallet(connection: Connection, **values: object) -> None:
    connection.execute(insert(member_wallets).values(**values))
