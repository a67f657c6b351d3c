"""Returns, and the locks and reservations on a receipt's earn lines and redemptions they take."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Row, and_, insert, select, update

from services.partners.store.tables import earn_lines, earns, redemptions, returns


def lock_receipt(connection: Connection, partner_id: str, receipt_id: str) -> tuple[Row | None, list[Row]]:
    """The earn of a receipt and its redemptions, locked (FOR UPDATE) for the rest of the
    transaction, always in the same order: the earn row first, then the redemptions by id.
    Every return of the receipt takes these locks before it reads which lines and points are
    still unreturned, so two concurrent returns are serialized and the second sees the first.
    Rows are returned as they are after the lock (READ COMMITTED re-reads a waited-for row).
    On SQLite FOR UPDATE is not rendered; the writer's BEGIN IMMEDIATE already serializes."""
    # A receipt has at most one earn that was not refused, and maybe refused ones before it:
    # the live one is the receipt's earn; with none, the latest refused one answers EARN_FAILED.
    receipt = and_(earns.c.partner_id == partner_id, earns.c.receipt_id == receipt_id)
    earn = connection.execute(select(earns).where(and_(receipt, earns.c.state != "failed")).with_for_update()).first()
    if earn is None:
        refused = select(earns).where(and_(receipt, earns.c.state == "failed"))
        earn = connection.execute(
            refused.order_by(earns.c.create_time_us.desc(), earns.c.earn_id).limit(1).with_for_update()
        ).first()
    rows = connection.execute(
        select(redemptions)
        .where(and_(redemptions.c.partner_id == partner_id, redemptions.c.receipt_id == receipt_id))
        .order_by(redemptions.c.redemption_id)
        .with_for_update()
    ).all()
    return earn, sorted(rows, key=lambda row: (row.create_time_us, row.redemption_id))


def reserve_lines(connection: Connection, earn_id: str, line_numbers: Sequence[int], return_id: str) -> bool:
    """Claim unreturned lines for a return; False (nothing changed) if any was claimed already."""
    result = connection.execute(
        update(earn_lines)
        .where(and_(earn_lines.c.earn_id == earn_id, earn_lines.c.line_number.in_(list(line_numbers))))
        .where(earn_lines.c.return_id.is_(None))
        .values(return_id=return_id)
    )
    return result.rowcount == len(line_numbers)


def reserve_refund(connection: Connection, redemption_id: str, amount: int) -> bool:
    """Add to a redemption's refunded amount, only while it stays within what was captured."""
    result = connection.execute(
        update(redemptions)
        .where(redemptions.c.redemption_id == redemption_id)
        .where(redemptions.c.refunded_amount + amount <= redemptions.c.captured_amount)
        .values(refunded_amount=redemptions.c.refunded_amount + amount)
    )
    return result.rowcount == 1


def return_by_request(connection: Connection, partner_id: str, request_id: str) -> Row | None:
    query = select(returns).where(and_(returns.c.partner_id == partner_id, returns.c.request_id == request_id))
    return connection.execute(query).first()


def update_return(connection: Connection, return_id: str, **values: object) -> None:
    connection.execute(update(returns).where(returns.c.return_id == return_id).values(**values))


def retry_return(connection: Connection, return_id: str, attempt: int) -> None:
    """Move a return from `attempt` to the next one, to be decided again. Conditional, so a
    concurrent completion of the same return (client retry and recovery pass) never moves a
    return that already went on (or was posted) back to `new`."""
    connection.execute(
        update(returns)
        .where(and_(returns.c.return_id == return_id, returns.c.state == "pending", returns.c.attempt == attempt))
        .values(state="new", attempt=attempt + 1, earned_points_reversed=0)
    )


def insert_return(connection: Connection, **values: object) -> None:
    connection.execute(insert(returns).values(**values))


def release_refund(connection: Connection, redemption_id: str, amount: int) -> None:
    """Give back points a failed return reserved for refund."""
    connection.execute(
        update(redemptions)
        .where(redemptions.c.redemption_id == redemption_id)
        .values(refunded_amount=redemptions.c.refunded_amount - amount)
    )


def release_lines(connection: Connection, earn_id: str, return_id: str) -> None:
    """Unclaim the earn lines a failed return had claimed."""
    connection.execute(
        update(earn_lines)
        .where(earn_lines.c.earn_id == earn_id)
        .where(earn_lines.c.return_id == return_id)
        .values(return_id=None)
    )
