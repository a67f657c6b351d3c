"""Translation between settlement.proto's correction messages (adjustments, reviews, open items) and
the domain; nothing else (the rest of the mapping is in wire.py)."""

from __future__ import annotations

from coalition.settlement.v1 import settlement_pb2 as pb
from services.common.errors import InvalidArgument
from services.common.timeconv import timestamp_from_micros
from services.settlement import correction_store
from services.settlement.corrections import Adjustment, AdjustmentDirection, AdjustmentLink, ReviewChange, ReviewStatus
from services.settlement.model import MatchStatus, ReconciledRow
from services.settlement.wire import reconciliation_row_to_pb

_DIRECTIONS = {d: getattr(pb, f"ADJUSTMENT_DIRECTION_{d.value}") for d in AdjustmentDirection}
_DIRECTION_OF = {value: d for d, value in _DIRECTIONS.items()}
_REVIEW_STATUSES = {s: getattr(pb, f"REVIEW_STATUS_{s.value}") for s in ReviewStatus}
_REVIEW_STATUS_OF = {value: s for s, value in _REVIEW_STATUSES.items()}


def adjustment_from_pb(message: pb.Adjustment) -> Adjustment:
    direction = _DIRECTION_OF.get(message.direction)
    if direction is None:
        raise InvalidArgument(
            "INVALID_DIRECTION",
            "direction must be ADJUSTMENT_DIRECTION_PARTNER_PAYS or ADJUSTMENT_DIRECTION_OPERATOR_PAYS",
            field="adjustment.direction",
        )
    link = message.link
    return Adjustment(
        adjustment_id=message.adjustment_id,
        partner_id=message.partner_id,
        direction=direction,
        amount_cents=message.amount_cents,
        reason=message.reason,
        link=AdjustmentLink(
            link.reconciliation_id,
            link.reconciliation_row_number,
            link.statement_period_id,
            link.statement_line_number,
        ),
    )


def adjustment_to_pb(adjustment: Adjustment) -> pb.Adjustment:
    link = adjustment.link
    return pb.Adjustment(
        adjustment_id=adjustment.adjustment_id,
        partner_id=adjustment.partner_id,
        direction=_DIRECTIONS[adjustment.direction],
        amount_cents=adjustment.amount_cents,
        reason=adjustment.reason,
        link=pb.AdjustmentLink(
            reconciliation_id=link.reconciliation_id,
            reconciliation_row_number=link.reconciliation_row_number,
            statement_period_id=link.statement_period_id,
            statement_line_number=link.statement_line_number,
        ),
        post_time=timestamp_from_micros(adjustment.post_time_us),
        settled_period_id=adjustment.settled_period_id,
    )


def review_status_from_pb(value: int) -> ReviewStatus:
    status = _REVIEW_STATUS_OF.get(value)
    if status is None:
        raise InvalidArgument(
            "INVALID_REVIEW_STATUS",
            "status must be REVIEW_STATUS_OPEN, _ACCEPTED, _DISPUTED or _RESOLVED",
            field="status",
        )
    return status


def row_status_response(status, note, history: list[ReviewChange], changed: bool):
    return pb.SetReconciliationRowStatusResponse(
        status=_REVIEW_STATUSES[status],
        note=note,
        history=[
            pb.ReviewChange(
                change_id=c.change_id,
                from_status=_REVIEW_STATUSES[c.from_status],
                to_status=_REVIEW_STATUSES[c.to_status],
                note=c.note,
                change_time=timestamp_from_micros(c.change_time_us),
            )
            for c in history
        ],
        changed=changed,
    )


def open_item_to_pb(key, row, adjustment: Adjustment | None) -> pb.OpenItem:
    partner_id, kind, item_id, row_number = key
    if kind == correction_store.ITEM_ADJUSTMENT and adjustment is not None:
        return pb.OpenItem(partner_id=partner_id, adjustment=adjustment_to_pb(adjustment))
    reconciled = ReconciledRow(
        MatchStatus(row.status),
        row.file_line_number,
        row.receipt_id,
        row.store_id,
        row.terminal_id,
        row.type,
        row.partner_points,
        row.ledger_points,
        row.time,
        row.currency_code,
    )
    return pb.OpenItem(
        partner_id=partner_id,
        reconciliation_id=item_id,
        period_id=row.period_id,
        reconciliation_row=reconciliation_row_to_pb(
            reconciled, row_number, ReviewStatus(row.review_status), row.review_note
        ),
    )
