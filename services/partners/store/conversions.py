"""Conversion quotes and executed conversions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Row, and_, func, insert, select, update

from services.partners.store.tables import conversion_quotes, conversions


def get_quote(connection: Connection, quote_id: str) -> Row | None:
    return connection.execute(select(conversion_quotes).where(conversion_quotes.c.quote_id == quote_id)).first()


def conversion_by_request(connection: Connection, caller_id: str, request_id: str) -> Row | None:
    query = select(conversions).where(
        and_(conversions.c.caller_id == caller_id, conversions.c.request_id == request_id)
    )
    return connection.execute(query).first()


def finish_conversion(connection: Connection, conversion_id: str, state: str, reason: str | None) -> None:
    """Only a pending conversion finishes: the first outcome recorded stays."""
    connection.execute(
        update(conversions)
        .where(and_(conversions.c.conversion_id == conversion_id, conversions.c.state == "pending"))
        .values(state=state, failure_reason=reason)
    )


def conversion_by_quote(connection: Connection, quote_id: str) -> Row | None:
    return connection.execute(select(conversions).where(conversions.c.quote_id == quote_id)).first()


def converted_in_window(
    connection: Connection, member_id: str, from_currency: str, to_currency: str, start_us: int, end_us: int
) -> int:
    """Source units the member converted in this direction in [start, end), failed ones excluded."""
    query = select(func.coalesce(func.sum(conversions.c.from_amount), 0)).where(
        and_(
            conversions.c.member_id == member_id,
            conversions.c.from_currency == from_currency,
            conversions.c.to_currency == to_currency,
            conversions.c.state != "failed",
            conversions.c.create_time_us >= start_us,
            conversions.c.create_time_us < end_us,
        )
    )
    return int(connection.execute(query).scalar_one())


def conversions_of_member(connection: Connection, member_id: str, limit: int) -> Sequence[Row]:
    query = (
        select(conversions)
        .where(conversions.c.member_id == member_id)
        .order_by(conversions.c.create_time_us.desc(), conversions.c.conversion_id.desc())
        .limit(limit)
    )
    return connection.execute(query).all()


def insert_conversion(connection: Connection, **values: object) -> None:
    connection.execute(insert(conversions).values(**values))


def insert_quote(connection: Connection, **values: object) -> None:
    connection.execute(insert(conversion_quotes).values(**values))
