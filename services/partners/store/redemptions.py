"""Redemptions: holds, their captures, voids and refunds, as recorded per request."""

from __future__ import annotations

from collections import namedtuple

from sqlalchemy import Connection, Row, and_, bindparam, select, update

from services.common.sql import insert_many, rows_as_written, update_many
from services.partners.store.tables import redemptions

RedemptionRow = namedtuple("RedemptionRow", [column.name for column in redemptions.c])


def get_redemption(connection: Connection, redemption_id: str) -> Row | None:
    return connection.execute(select(redemptions).where(redemptions.c.redemption_id == redemption_id)).first()


# Built once: every batch of holds and of redemption reads runs this, and SQLAlchemy would
# otherwise build, cache-key and compile a statement each time (with 2 partners processes the
# read took 5 % of partners' CPU during AuthorizeRedemption+CaptureRedemption).
_REDEMPTIONS_BY_ID = select(redemptions).where(redemptions.c.redemption_id.in_(bindparam("ids", expanding=True)))
_REDEMPTIONS_BY_ID_SQL = (
    f"SELECT {', '.join(column.name for column in redemptions.c)} FROM redemptions"
    " WHERE redemption_id = ANY(%(ids)s::varchar[])"
)


def redemptions_by_id(connection: Connection, redemption_ids: set[str]) -> dict[str, RedemptionRow]:
    parameters = {"ids": sorted(redemption_ids)}
    if connection.dialect.name == "postgresql":  # plain SQL, plain rows
        found = connection.exec_driver_sql(_REDEMPTIONS_BY_ID_SQL, parameters)
    else:
        found = connection.execute(_REDEMPTIONS_BY_ID, parameters)
    return {row.redemption_id: row for row in map(RedemptionRow._make, found)}


def record_resolutions(
    connection: Connection, captured: dict[str, tuple[int, str]], voided: set[str]
) -> dict[str, Row]:
    """Record holds the ledger resolved: captured ones (id -> (amount, capture transfer id)) and
    voided ones, one statement per kind for the whole batch. Returns the rows as they are now."""
    rows = update_many(
        connection,
        redemptions,
        "redemption_id",
        [
            {"redemption_id": key, "state": "captured", "captured_amount": amount, "capture_transfer_id": transfer}
            for key, (amount, transfer) in captured.items()
        ],
    )
    rows.update(
        update_many(
            connection, redemptions, "redemption_id", [{"redemption_id": key, "state": "voided"} for key in voided]
        )
    )
    return rows


def update_redemption(connection: Connection, redemption_id: str, **values: object) -> Row | None:
    """Change a redemption; the row as it is now (None if there is none)."""
    query = update(redemptions).where(redemptions.c.redemption_id == redemption_id).values(**values)
    return connection.execute(query.returning(*redemptions.c)).first()


def insert_redemptions(connection: Connection, values: list[dict]) -> list[RedemptionRow]:
    """Insert redemptions in one statement; their rows, in the order given (every column given)."""
    if not values:
        return []
    insert_many(connection, redemptions, values)
    return rows_as_written(RedemptionRow, values)


def settle_holds(connection: Connection, authorized: dict[str, int], failed: dict[str, str]) -> dict[str, Row]:
    """Record what the ledger answered for pending holds: authorized ones with the ledger's expiry
    time, refused ones with the reason. Only a hold still pending changes. Returns the rows."""
    pending = {"state": "pending"}
    rows = update_many(
        connection,
        redemptions,
        "redemption_id",
        [{"redemption_id": key, "state": "authorized", "expire_time_us": at} for key, at in authorized.items()],
        only_if=pending,
    )
    rows.update(
        update_many(
            connection,
            redemptions,
            "redemption_id",
            [{"redemption_id": key, "state": "failed", "failure_reason": reason} for key, reason in failed.items()],
            only_if=pending,
        )
    )
    return rows


def resolve_authorized_redemption(connection: Connection, redemption_id: str, state: str) -> bool:
    """Only a hold still recorded as authorized changes: a capture or void recorded meanwhile
    by its own call (with its amount and transfer id) wins. True when this call changed it."""
    result = connection.execute(
        update(redemptions)
        .where(and_(redemptions.c.redemption_id == redemption_id, redemptions.c.state == "authorized"))
        .values(state=state)
    )
    return result.rowcount == 1
