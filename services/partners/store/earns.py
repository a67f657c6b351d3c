"""Earns and their basket lines: what each earn request recorded and whether the ledger took it."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Collection, Sequence

from sqlalchemy import Connection, Row, and_, bindparam, or_, select, update

from services.common.sql import OneTrip, insert_many, json_insert, rows_as_written
from services.partners.store.tables import earn_lines, earns


def earn_by_request(connection: Connection, partner_id: str, request_id: str) -> Row | None:
    query = select(earns).where(and_(earns.c.partner_id == partner_id, earns.c.request_id == request_id))
    return connection.execute(query).first()


def earn_lines_of(connection: Connection, earn_id: str) -> Sequence[Row]:
    query = select(earn_lines).where(earn_lines.c.earn_id == earn_id).order_by(earn_lines.c.line_number)
    return connection.execute(query).all()


# A written row as its insert gave it: the batch answers from these without a RETURNING round trip.
EarnRow = namedtuple("EarnRow", [column.name for column in earns.c])
EarnLineRow = namedtuple("EarnLineRow", [column.name for column in earn_lines.c])


def insert_earns(
    connection: Connection, values: list[dict], lines: list[dict], posted_marks: Sequence[str] = ()
) -> tuple[list[EarnRow], list[EarnLineRow]]:
    """Insert earns and their basket lines, with the posted marks an earlier batch left
    (deferred_marks.py): one round trip on PostgreSQL. Their rows, in the order given."""
    if connection.dialect.name == "postgresql":
        trip = OneTrip(connection)
        if posted_marks:
            trip.add(_MARK_EARNS_POSTED_SQL, {"earn_ids": list(posted_marks)})
        trip.add(*json_insert(earns, values))
        if lines:
            trip.add(*json_insert(earn_lines, lines))
        trip.send()
    else:
        mark_earns_posted(connection, posted_marks)
        insert_many(connection, earns, values)
        insert_many(connection, earn_lines, lines)
    return rows_as_written(EarnRow, values), rows_as_written(EarnLineRow, lines) if lines else []


# Built once: a batch's statements differ only in their lists, so SQLAlchemy need not build,
# cache-key and compile a statement per batch (a fifth of partners' CPU for a lone earn).
_EARNS_BY_REQUESTS_OR_RECEIPTS = select(earns).where(
    or_(
        and_(
            earns.c.partner_id.in_(bindparam("request_partners", expanding=True)),
            earns.c.request_id.in_(bindparam("request_ids", expanding=True)),
        ),
        and_(
            earns.c.partner_id.in_(bindparam("receipt_partners", expanding=True)),
            earns.c.receipt_id.in_(bindparam("receipt_ids", expanding=True)),
            earns.c.state != "failed",
        ),
    )
)
_EARNS_BY_REQUESTS_OR_RECEIPTS_SQL = (
    f"SELECT {', '.join(column.name for column in earns.c)} FROM earns"
    " WHERE (partner_id = ANY(%(request_partners)s::varchar[]) AND request_id = ANY(%(request_ids)s::varchar[]))"
    " OR (partner_id = ANY(%(receipt_partners)s::varchar[]) AND receipt_id = ANY(%(receipt_ids)s::varchar[])"
    " AND state <> 'failed')"
)
_MARK_EARNS_POSTED = (
    update(earns).where(earns.c.earn_id.in_(bindparam("earn_ids", expanding=True))).values(state="posted")
)
_MARK_EARNS_POSTED_SQL = "UPDATE earns SET state = 'posted' WHERE earn_id = ANY(%(earn_ids)s::varchar[])"


def earns_by_requests_or_receipts(
    connection: Connection,
    requests: set[tuple[str, str]],
    receipts: set[tuple[str, str]],
    posted: Collection[str] = (),
) -> tuple[dict[tuple[str, str], EarnRow], dict[tuple[str, str], EarnRow]]:
    """The earns recorded under these (partner_id, request_id), and the live (not refused) earns
    of these (partner_id, receipt_id), at most one each: a batch's one read. Each pair's two
    columns are matched separately, the shape both databases look up in their composite
    indexes (services/common/sql.pairs_in); the exact pairs are kept here. An earn in `posted`
    (marks this transaction writes after the read) comes back posted, as it will be."""
    parameters = {
        "request_partners": sorted({partner for partner, _ in requests}),
        "request_ids": sorted({request for _, request in requests}),
        "receipt_partners": sorted({partner for partner, _ in receipts}),
        "receipt_ids": sorted({receipt for _, receipt in receipts}),
    }
    by_request: dict[tuple[str, str], EarnRow] = {}
    by_receipt: dict[tuple[str, str], EarnRow] = {}
    if connection.dialect.name == "postgresql":  # every earn batch reads this: plain SQL, plain rows
        found = [
            EarnRow._make(row) for row in connection.exec_driver_sql(_EARNS_BY_REQUESTS_OR_RECEIPTS_SQL, parameters)
        ]
    else:
        found = [EarnRow._make(row) for row in connection.execute(_EARNS_BY_REQUESTS_OR_RECEIPTS, parameters)]
    for row in found:
        if row.state == "pending" and row.earn_id in posted:
            row = row._replace(state="posted")
        if (row.partner_id, row.request_id) in requests:
            by_request[(row.partner_id, row.request_id)] = row
        if (row.partner_id, row.receipt_id) in receipts and row.state != "failed":
            by_receipt[(row.partner_id, row.receipt_id)] = row
    return by_request, by_receipt


def earns_by_id(connection: Connection, earn_ids: Sequence[str]) -> dict[str, Row]:
    rows = connection.execute(select(earns).where(earns.c.earn_id.in_(list(earn_ids)))).all()
    return {row.earn_id: row for row in rows}


def earn_lines_of_many(connection: Connection, earn_ids: Sequence[str]) -> dict[str, list[Row]]:
    query = (
        select(earn_lines)
        .where(earn_lines.c.earn_id.in_(list(earn_ids)))
        .order_by(earn_lines.c.earn_id, earn_lines.c.line_number)
    )
    found: dict[str, list[Row]] = {earn_id: [] for earn_id in earn_ids}
    for row in connection.execute(query):
        found[row.earn_id].append(row)
    return found


def mark_earns_posted(connection: Connection, earn_ids: Sequence[str]) -> None:
    if not earn_ids:
        return
    connection.execute(_MARK_EARNS_POSTED, {"earn_ids": list(earn_ids)})


def mark_earn_failed(connection: Connection, earn_id: str, reason: str) -> bool:
    """Only a pending earn fails: one the client's retry already posted stays posted. True if
    this call marked it."""
    result = connection.execute(
        update(earns)
        .where(and_(earns.c.earn_id == earn_id, earns.c.state == "pending"))
        .values(state="failed", failure_reason=reason)
    )
    return result.rowcount == 1
