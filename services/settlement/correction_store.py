"""Tables and queries of corrections: adjustments, and the review status of reconciliation rows.

Declared on store.metadata (store.py imports this module), so the migrations test sees them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    and_,
    case,
    func,
    literal,
    select,
    tuple_,
    union_all,
)

from services.settlement.corrections import (
    Adjustment,
    AdjustmentDirection,
    AdjustmentLink,
    ReviewChange,
    ReviewStatus,
)
from services.settlement.store import (
    metadata,
    periods,
    reconciliation_rows,
    reconciliations,
    statement_lines,
)

adjustments = Table(
    "settlement_adjustments",
    metadata,
    Column("adjustment_id", String(128), primary_key=True),
    Column("partner_id", String(128), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("reason", String(500), nullable=False),
    # The link: a reconciliation row, or a line of a closed statement (the other pair is "", 0).
    Column("reconciliation_id", String(128), nullable=False),
    Column("reconciliation_row_number", Integer, nullable=False),
    Column("statement_period_id", String(64), nullable=False),
    Column("statement_line_number", Integer, nullable=False),
    Column("post_time_us", BigInteger, nullable=False),
    # The period whose statement carries it, set when that period is frozen; NULL until then.
    Column("settled_period_id", String(64), nullable=True),
    CheckConstraint("amount_cents > 0", name="ck_settlement_adjustment_amount"),
    CheckConstraint("direction IN ('PARTNER_PAYS', 'OPERATOR_PAYS')", name="ck_settlement_adjustment_direction"),
    Index("ix_settlement_adjustments_settled", "settled_period_id", "partner_id"),
)

# The current review status of a reconciliation row that has been reviewed; a row without one is
# ACCEPTED when MATCHED and OPEN otherwise.
reconciliation_reviews = Table(
    "settlement_reconciliation_reviews",
    metadata,
    Column("reconciliation_id", String(128), primary_key=True),
    Column("row_number", Integer, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("note", String(1000), nullable=False),
    Column("change_time_us", BigInteger, nullable=False),
    ForeignKeyConstraint(
        ["reconciliation_id", "row_number"],
        ["settlement_reconciliation_rows.reconciliation_id", "settlement_reconciliation_rows.row_number"],
    ),
)

# Every change of a row's review status, by its caller-chosen id (idempotency), never changed.
reconciliation_review_history = Table(
    "settlement_reconciliation_review_history",
    metadata,
    Column("change_id", String(128), primary_key=True),
    Column("reconciliation_id", String(128), nullable=False),
    Column("row_number", Integer, nullable=False),
    Column("from_status", String(16), nullable=False),
    Column("to_status", String(16), nullable=False),
    Column("note", String(1000), nullable=False),
    Column("change_time_us", BigInteger, nullable=False),
    Index("ix_settlement_review_history_row", "reconciliation_id", "row_number", "change_time_us"),
)


def period_windows(connection: Connection) -> Sequence:
    """Every stored period (closing or closed) as (period_id, start_us, end_us), by start."""
    return connection.execute(
        select(periods.c.period_id, periods.c.start_us, periods.c.end_us).order_by("start_us")
    ).all()


# ---------------------------------------------------------------- adjustments


def _adjustment(row) -> Adjustment:
    return Adjustment(
        adjustment_id=row.adjustment_id,
        partner_id=row.partner_id,
        direction=AdjustmentDirection(row.direction),
        amount_cents=row.amount_cents,
        reason=row.reason,
        link=AdjustmentLink(
            row.reconciliation_id, row.reconciliation_row_number, row.statement_period_id, row.statement_line_number
        ),
        post_time_us=row.post_time_us,
        settled_period_id=row.settled_period_id or "",
    )


def get_adjustment(connection: Connection, adjustment_id: str) -> Adjustment | None:
    row = connection.execute(select(adjustments).where(adjustments.c.adjustment_id == adjustment_id)).one_or_none()
    return None if row is None else _adjustment(row)


def insert_adjustment(connection: Connection, adjustment: Adjustment) -> None:
    link = adjustment.link
    connection.execute(
        adjustments.insert().values(
            adjustment_id=adjustment.adjustment_id,
            partner_id=adjustment.partner_id,
            direction=adjustment.direction.value,
            amount_cents=adjustment.amount_cents,
            reason=adjustment.reason,
            reconciliation_id=link.reconciliation_id,
            reconciliation_row_number=link.reconciliation_row_number,
            statement_period_id=link.statement_period_id,
            statement_line_number=link.statement_line_number,
            post_time_us=adjustment.post_time_us,
            settled_period_id=None,
        )
    )


def pending_adjustments(connection: Connection) -> list[Adjustment]:
    """Adjustments no statement carries yet, by id: the next period closed carries them."""
    rows = connection.execute(
        select(adjustments).where(adjustments.c.settled_period_id.is_(None)).order_by(adjustments.c.adjustment_id)
    )
    return [_adjustment(row) for row in rows]


def settle_adjustments(connection: Connection, adjustment_ids: Sequence[str], period_id: str) -> int:
    """Mark adjustments as carried by `period_id`'s statements (only those still pending)."""
    if not adjustment_ids:
        return 0
    result = connection.execute(
        adjustments.update()
        .where(adjustments.c.adjustment_id.in_(list(adjustment_ids)), adjustments.c.settled_period_id.is_(None))
        .values(settled_period_id=period_id)
    )
    return result.rowcount


def reconciliation_row_partner(connection: Connection, reconciliation_id: str, row_number: int):
    """(partner_id, match status) of a stored reconciliation row; None if there is no such row."""
    return connection.execute(
        select(reconciliations.c.partner_id, reconciliation_rows.c.status)
        .join(reconciliation_rows, reconciliation_rows.c.reconciliation_id == reconciliations.c.reconciliation_id)
        .where(
            reconciliations.c.reconciliation_id == reconciliation_id,
            reconciliation_rows.c.row_number == row_number,
        )
    ).one_or_none()


def statement_line_exists(connection: Connection, period_id: str, partner_id: str, line_number: int) -> bool:
    found = connection.execute(
        select(statement_lines.c.line_number).where(
            statement_lines.c.period_id == period_id,
            statement_lines.c.partner_id == partner_id,
            statement_lines.c.line_number == line_number,
        )
    ).first()
    return found is not None


# ---------------------------------------------------------------- reviews


def _effective_status():
    """SQL: a row's review status, its stored review or the status it starts with."""
    return func.coalesce(
        reconciliation_reviews.c.status,
        case((reconciliation_rows.c.status == "MATCHED", literal("ACCEPTED")), else_=literal("OPEN")),
    )


def review_of(connection: Connection, reconciliation_id: str, row_number: int):
    """(status, note) of a row's current review, None when it was never reviewed."""
    row = connection.execute(
        select(reconciliation_reviews.c.status, reconciliation_reviews.c.note).where(
            reconciliation_reviews.c.reconciliation_id == reconciliation_id,
            reconciliation_reviews.c.row_number == row_number,
        )
    ).one_or_none()
    return None if row is None else (ReviewStatus(row.status), row.note)


def reviews_of(connection: Connection, reconciliation_id: str) -> dict[int, tuple[ReviewStatus, str]]:
    rows = connection.execute(
        select(reconciliation_reviews).where(reconciliation_reviews.c.reconciliation_id == reconciliation_id)
    )
    return {row.row_number: (ReviewStatus(row.status), row.note) for row in rows}


def get_change(connection: Connection, change_id: str) -> ReviewChange | None:
    row = connection.execute(
        select(reconciliation_review_history).where(reconciliation_review_history.c.change_id == change_id)
    ).one_or_none()
    return None if row is None else _change(row)


def _change(row) -> ReviewChange:
    return ReviewChange(
        row.change_id,
        row.reconciliation_id,
        row.row_number,
        ReviewStatus(row.from_status),
        ReviewStatus(row.to_status),
        row.note,
        row.change_time_us,
    )


def record_change(connection: Connection, change: ReviewChange) -> None:
    """Append the change to the history and make it the row's current review."""
    connection.execute(
        reconciliation_review_history.insert().values(
            change_id=change.change_id,
            reconciliation_id=change.reconciliation_id,
            row_number=change.row_number,
            from_status=change.from_status.value,
            to_status=change.to_status.value,
            note=change.note,
            change_time_us=change.change_time_us,
        )
    )
    key = (reconciliation_reviews.c.reconciliation_id == change.reconciliation_id) & (
        reconciliation_reviews.c.row_number == change.row_number
    )
    values = {"status": change.to_status.value, "note": change.note, "change_time_us": change.change_time_us}
    if connection.execute(reconciliation_reviews.update().where(key).values(**values)).rowcount == 0:
        connection.execute(
            reconciliation_reviews.insert().values(
                reconciliation_id=change.reconciliation_id, row_number=change.row_number, **values
            )
        )


def history_of(connection: Connection, reconciliation_id: str, row_number: int) -> list[ReviewChange]:
    rows = connection.execute(
        select(reconciliation_review_history)
        .where(
            reconciliation_review_history.c.reconciliation_id == reconciliation_id,
            reconciliation_review_history.c.row_number == row_number,
        )
        .order_by(reconciliation_review_history.c.change_time_us, reconciliation_review_history.c.change_id)
    )
    return [_change(row) for row in rows]


# ---------------------------------------------------------------- what is open


ITEM_RECONCILIATION_ROW = 0
ITEM_ADJUSTMENT = 1


def open_items(connection: Connection, partner_id: str, after: tuple[str, int, str, int] | None, limit: int):
    """Open or disputed reconciliation rows and pending adjustments, ordered by (partner, item kind,
    id, row number), the first `limit` after the key `after`. One query, grouped by the database:
    rows without a review take the status they start with."""
    rows = (
        select(
            reconciliations.c.partner_id.label("partner_id"),
            literal(ITEM_RECONCILIATION_ROW).label("item_kind"),
            reconciliations.c.reconciliation_id.label("item_id"),
            reconciliation_rows.c.row_number.label("row_number"),
        )
        .join(reconciliation_rows, reconciliation_rows.c.reconciliation_id == reconciliations.c.reconciliation_id)
        .outerjoin(
            reconciliation_reviews,
            and_(
                reconciliation_reviews.c.reconciliation_id == reconciliation_rows.c.reconciliation_id,
                reconciliation_reviews.c.row_number == reconciliation_rows.c.row_number,
            ),
        )
        .where(_effective_status().in_([ReviewStatus.OPEN.value, ReviewStatus.DISPUTED.value]))
    )
    pending = select(
        adjustments.c.partner_id.label("partner_id"),
        literal(ITEM_ADJUSTMENT).label("item_kind"),
        adjustments.c.adjustment_id.label("item_id"),
        literal(0).label("row_number"),
    ).where(adjustments.c.settled_period_id.is_(None))
    if partner_id:
        rows = rows.where(reconciliations.c.partner_id == partner_id)
        pending = pending.where(adjustments.c.partner_id == partner_id)
    items = union_all(rows, pending).subquery("items")
    query = select(items)
    if after is not None:
        key = tuple_(items.c.partner_id, items.c.item_kind, items.c.item_id, items.c.row_number)
        query = query.where(key > tuple_(*(literal(v) for v in after)))
    query = query.order_by(items.c.partner_id, items.c.item_kind, items.c.item_id, items.c.row_number).limit(limit)
    return connection.execute(query).all()


def reconciliation_row_details(connection: Connection, keys: Sequence[tuple[str, int]]):
    """The stored rows (with their review, if any) for these (reconciliation_id, row_number) keys."""
    if not keys:
        return {}
    query = (
        select(
            reconciliation_rows,
            reconciliations.c.period_id,
            _effective_status().label("review_status"),
            func.coalesce(reconciliation_reviews.c.note, "").label("review_note"),
        )
        .join(reconciliations, reconciliations.c.reconciliation_id == reconciliation_rows.c.reconciliation_id)
        .outerjoin(
            reconciliation_reviews,
            and_(
                reconciliation_reviews.c.reconciliation_id == reconciliation_rows.c.reconciliation_id,
                reconciliation_reviews.c.row_number == reconciliation_rows.c.row_number,
            ),
        )
        .where(tuple_(reconciliation_rows.c.reconciliation_id, reconciliation_rows.c.row_number).in_(list(keys)))
    )
    return {(row.reconciliation_id, row.row_number): row for row in connection.execute(query)}


def adjustments_by_id(connection: Connection, adjustment_ids: Sequence[str]) -> dict[str, Adjustment]:
    if not adjustment_ids:
        return {}
    rows = connection.execute(select(adjustments).where(adjustments.c.adjustment_id.in_(list(adjustment_ids))))
    return {row.adjustment_id: _adjustment(row) for row in rows}
