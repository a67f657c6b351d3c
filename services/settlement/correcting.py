"""Use cases of corrections: post an adjustment, review a reconciliation row, list what is open.

The rules are in corrections.py (pure); the tables in correction_store.py.
"""

from __future__ import annotations

from dataclasses import replace

import structlog
from sqlalchemy import exc as sa_exc

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.settlement import correction_store, store
from services.settlement.agreements import ID_PATTERN
from services.settlement.context import SettlementContext
from services.settlement.corrections import (
    REVIEW_NOTE_LENGTH_MAX,
    Adjustment,
    ReviewChange,
    ReviewStatus,
    check_adjustment,
    check_text,
    check_transition,
    initial_review_status,
)
from services.settlement.model import MatchStatus, SettlementRuleError

_log = structlog.get_logger("settlement")
PARTNER_ID_LENGTH_MAX = 128


def _check_id(value: str, field: str) -> None:
    if not ID_PATTERN.fullmatch(value or ""):
        raise InvalidArgument(
            f"INVALID_{field.upper()}", f"{field} must be 1..128 characters of A-Z a-z 0-9 ._:/@-", field=field
        )


def _invalid(error: SettlementRuleError) -> InvalidArgument:
    return InvalidArgument(error.reason, error.message, **error.metadata)


async def post_adjustment(context: SettlementContext, adjustment: Adjustment) -> tuple[Adjustment, bool]:
    """Store an adjustment for the next close; returns (stored adjustment, created)."""
    _check_id(adjustment.adjustment_id, "adjustment_id")
    if not 1 <= len(adjustment.partner_id) <= PARTNER_ID_LENGTH_MAX:
        raise InvalidArgument("INVALID_PARTNER_ID", "partner_id must be 1..128 characters", field="partner_id")
    try:
        check_adjustment(adjustment)
    except SettlementRuleError as error:
        raise _invalid(error) from error

    def work(connection):
        # The lock a close takes to freeze its figures: an adjustment is on exactly one statement.
        store.lock_agreements_and_periods(connection)
        existing = correction_store.get_adjustment(connection, adjustment.adjustment_id)
        if existing is not None:
            if existing.content_key() != adjustment.content_key():
                raise AlreadyExists(
                    "ID_REUSED_WITH_DIFFERENT_CONTENT",
                    f"adjustment {adjustment.adjustment_id} exists with different content; post a new id",
                    adjustment_id=adjustment.adjustment_id,
                )
            return existing, False
        _check_link(connection, adjustment)
        stored = replace(adjustment, post_time_us=context.now_us(), settled_period_id="")
        correction_store.insert_adjustment(connection, stored)
        return stored, True

    try:
        stored, created = await context.write(work)
    except sa_exc.IntegrityError:
        stored, created = await context.write(work)  # a concurrent identical call won: the repeat it is
    if created:
        _log.info(
            "adjustment_posted",
            adjustment_id=stored.adjustment_id,
            partner_id=stored.partner_id,
            signed_cents=stored.signed_cents,
        )
    return stored, created


def _check_link(connection, adjustment: Adjustment) -> None:
    link = adjustment.link
    if link.reconciliation_id:
        found = correction_store.reconciliation_row_partner(
            connection, link.reconciliation_id, link.reconciliation_row_number
        )
        if found is None or found.partner_id != adjustment.partner_id:
            raise NotFound(
                "RECONCILIATION_ROW_NOT_FOUND",
                f"{adjustment.partner_id} has no {link.describes}",
                reconciliation_id=link.reconciliation_id,
                row_number=link.reconciliation_row_number,
            )
        return
    period = store.get_period_row(connection, link.statement_period_id)
    closed = period is not None and period.state == store.PERIOD_STATE_CLOSED
    if not closed or not correction_store.statement_line_exists(
        connection, link.statement_period_id, adjustment.partner_id, link.statement_line_number
    ):
        raise NotFound(
            "STATEMENT_LINE_NOT_FOUND",
            f"{adjustment.partner_id} has no {link.describes} in a closed period",
            period_id=link.statement_period_id,
            line_number=link.statement_line_number,
        )


async def set_row_status(
    context: SettlementContext, change_id: str, reconciliation_id: str, row_number: int, status: ReviewStatus, note: str
) -> tuple[ReviewStatus, str, list[ReviewChange], bool]:
    """Apply one review change; returns (status now, note now, history, changed by this call)."""
    _check_id(change_id, "change_id")
    _check_id(reconciliation_id, "reconciliation_id")
    try:
        check_text(note, "note", REVIEW_NOTE_LENGTH_MAX)
    except SettlementRuleError as error:
        raise _invalid(error) from error
    wanted = ReviewChange(change_id, reconciliation_id, row_number, ReviewStatus.OPEN, status, note)

    def work(connection):
        previous = correction_store.get_change(connection, change_id)
        if previous is not None:
            if previous.content_key() != wanted.content_key():
                raise AlreadyExists(
                    "ID_REUSED_WITH_DIFFERENT_CONTENT",
                    f"change {change_id} was made with other content; use a new change_id",
                    change_id=change_id,
                )
            return _answer(connection, reconciliation_id, row_number, False)
        found = correction_store.reconciliation_row_partner(connection, reconciliation_id, row_number)
        if found is None:
            raise NotFound(
                "RECONCILIATION_ROW_NOT_FOUND",
                f"reconciliation {reconciliation_id} has no row {row_number}",
                reconciliation_id=reconciliation_id,
                row_number=row_number,
            )
        review = correction_store.review_of(connection, reconciliation_id, row_number)
        current = review[0] if review is not None else initial_review_status(MatchStatus(found.status))
        try:
            check_transition(current, status)
        except SettlementRuleError as error:
            raise FailedPrecondition(error.reason, error.message, **error.metadata) from error
        change = ReviewChange(change_id, reconciliation_id, row_number, current, status, note, context.now_us())
        correction_store.record_change(connection, change)
        return _answer(connection, reconciliation_id, row_number, True)

    try:
        return await context.write(work)
    except sa_exc.IntegrityError:
        return await context.write(work)  # the same change_id raced: the idempotent answer


def _answer(connection, reconciliation_id: str, row_number: int, changed: bool):
    status, note = correction_store.review_of(connection, reconciliation_id, row_number)
    return status, note, correction_store.history_of(connection, reconciliation_id, row_number), changed


async def reviews_of(context: SettlementContext, reconciliation_id: str) -> dict[int, tuple[ReviewStatus, str]]:
    return await context.read(lambda c: correction_store.reviews_of(c, reconciliation_id))


async def list_open_items(context: SettlementContext, partner_id: str, after, limit: int):
    """Up to `limit` open items after the page key `after`: a list of (key, row or None, adjustment
    or None), where key is (partner_id, item kind, id, row number)."""
    if len(partner_id) > PARTNER_ID_LENGTH_MAX:
        raise InvalidArgument("INVALID_PARTNER_ID", "partner_id must be at most 128 characters", field="partner_id")

    def work(connection):
        keys = correction_store.open_items(connection, partner_id, after, limit)
        row_keys = [(k.item_id, k.row_number) for k in keys if k.item_kind == correction_store.ITEM_RECONCILIATION_ROW]
        rows = correction_store.reconciliation_row_details(connection, row_keys)
        adjustment_ids = [k.item_id for k in keys if k.item_kind == correction_store.ITEM_ADJUSTMENT]
        adjustments = correction_store.adjustments_by_id(connection, adjustment_ids)
        return [
            (
                (k.partner_id, k.item_kind, k.item_id, k.row_number),
                rows.get((k.item_id, k.row_number)),
                adjustments.get(k.item_id) if k.item_kind == correction_store.ITEM_ADJUSTMENT else None,
            )
            for k in keys
        ]

    return await context.read(work)
