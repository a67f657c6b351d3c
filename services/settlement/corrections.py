"""Corrections after the fact: adjustments on the next statement, and the review of reconciliation rows.

Plain Python (no grpc, no sqlalchemy), like model.py.

- An ADJUSTMENT is an amount in EUR cents the operator posts for one partner, with a reason and a
  link to what it corrects (a reconciliation row, or a line of a closed statement). It appears
  once, as its own line, on that partner's statement of the next period closed after it was
  posted; it moves the net and so the EUR settlement transfer. A closed statement never changes.
- A reconciliation row carries a review status: OPEN, ACCEPTED, DISPUTED or RESOLVED, with a
  note and a history. Matched rows start ACCEPTED, every other row OPEN; RESOLVED is final.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum

from services.settlement.model import (
    MONEY_CURRENCY_CODE,
    LineKind,
    MatchStatus,
    SettlementRuleError,
    Statement,
    StatementLine,
)

# EUR 100,000,000.00: far above any correction, far inside int64 cents summed over a statement.
ADJUSTMENT_AMOUNT_CENTS_MAX = 10_000_000_000
ADJUSTMENT_REASON_LENGTH_MAX = 500
REVIEW_NOTE_LENGTH_MAX = 1_000
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # text may hold newlines and tabs
# An adjustment line prices its amount in cents at EUR 0.01 each, so quantity x unit price holds.
ADJUSTMENT_UNIT_PRICE = Decimal("0.01")


class AdjustmentDirection(StrEnum):
    """Who pays whom: the sign of an adjustment, stated rather than implied by a minus."""

    PARTNER_PAYS = "PARTNER_PAYS"  # the partner pays the operator the amount (raises its net)
    OPERATOR_PAYS = "OPERATOR_PAYS"  # the operator pays the partner the amount (lowers its net)


@dataclass(frozen=True, slots=True)
class AdjustmentLink:
    """What an adjustment corrects: a reconciliation row, or a line of a closed statement."""

    reconciliation_id: str = ""
    reconciliation_row_number: int = 0  # 1-based, as GetReconciliation lists the rows
    statement_period_id: str = ""
    statement_line_number: int = 0  # 1-based, in the partner's statement of that period

    @property
    def describes(self) -> str:
        if self.reconciliation_id:
            return f"reconciliation {self.reconciliation_id} row {self.reconciliation_row_number}"
        return f"statement {self.statement_period_id} line {self.statement_line_number}"


@dataclass(frozen=True, slots=True)
class Adjustment:
    adjustment_id: str
    partner_id: str
    direction: AdjustmentDirection
    amount_cents: int  # > 0; the direction gives the sign
    reason: str
    link: AdjustmentLink
    post_time_us: int = 0
    settled_period_id: str = ""  # the period whose statement carries it; "" until one closes

    @property
    def signed_cents(self) -> int:
        """+ when the partner pays (a statement's sign convention), - when it is paid."""
        return self.amount_cents if self.direction is AdjustmentDirection.PARTNER_PAYS else -self.amount_cents

    def content_key(self) -> tuple:
        """What idempotency compares: everything the caller chose but the id."""
        return (self.partner_id, self.direction.value, self.amount_cents, self.reason, self.link)


def check_adjustment(adjustment: Adjustment) -> None:
    """The caller's own mistakes (INVALID_ARGUMENT); links are checked against the store."""
    if not 1 <= adjustment.amount_cents <= ADJUSTMENT_AMOUNT_CENTS_MAX:
        raise SettlementRuleError(
            "INVALID_AMOUNT",
            f"amount_cents must be 1..{ADJUSTMENT_AMOUNT_CENTS_MAX} (EUR cents; the direction gives the sign)",
            field="amount_cents",
        )
    check_text(adjustment.reason, "reason", ADJUSTMENT_REASON_LENGTH_MAX)
    link = adjustment.link
    by_row = bool(link.reconciliation_id) or link.reconciliation_row_number != 0
    by_line = bool(link.statement_period_id) or link.statement_line_number != 0
    if by_row == by_line:
        raise SettlementRuleError(
            "INVALID_LINK",
            "link the adjustment to exactly one of: a reconciliation row (reconciliation_id and row_number)"
            " or a statement line (period_id and line_number)",
            field="link",
        )
    number = link.reconciliation_row_number if by_row else link.statement_line_number
    if number < 1:
        raise SettlementRuleError("INVALID_LINK", "row_number and line_number start at 1", field="link")


def check_text(text: str, field: str, length_max: int) -> None:
    if not text.strip() or len(text) > length_max or _CONTROL_CHARACTERS.search(text):
        raise SettlementRuleError(
            "INVALID_TEXT",
            f"{field} must be 1..{length_max} characters, not blank, without control characters",
            field=field,
        )


def adjustment_line(adjustment: Adjustment) -> StatementLine:
    return StatementLine(
        kind=LineKind.ADJUSTMENT,
        currency_code=MONEY_CURRENCY_CODE,
        counterparty_currency_code="",
        counterparty_id="",
        quantity=adjustment.amount_cents,
        unit_price=ADJUSTMENT_UNIT_PRICE,
        amount_cents=adjustment.signed_cents,
        agreement_id="",
        prior_period_adjustment=False,
        adjustment_id=adjustment.adjustment_id,
        adjustment_reason=adjustment.reason,
    )


def with_adjustments(statements: Sequence[Statement], adjustments: Iterable[Adjustment]) -> list[Statement]:
    """Each partner's statement with its adjustments appended as ADJUSTMENT lines (in id order);
    a partner with adjustments only gets a statement of them. Ordered by partner id."""
    by_partner: dict[str, list[Adjustment]] = {}
    for adjustment in sorted(adjustments, key=lambda a: a.adjustment_id):
        by_partner.setdefault(adjustment.partner_id, []).append(adjustment)
    result = {s.partner_id: s for s in statements}
    for partner_id, items in by_partner.items():
        statement = result.get(partner_id, Statement(partner_id, ()))
        lines = statement.lines + tuple(adjustment_line(a) for a in items)
        result[partner_id] = replace(statement, lines=lines)
    return [result[partner_id] for partner_id in sorted(result)]


# ---------------------------------------------------------------- review of reconciliation rows


class ReviewStatus(StrEnum):
    OPEN = "OPEN"  # a difference nobody has looked at yet
    ACCEPTED = "ACCEPTED"  # agreed as it is (a matched row starts here)
    DISPUTED = "DISPUTED"  # one side contests it; being worked on
    RESOLVED = "RESOLVED"  # settled (e.g. by an adjustment); final


# Where each status may go; RESOLVED goes nowhere. A change to the same status is no change.
REVIEW_TRANSITIONS: dict[ReviewStatus, frozenset[ReviewStatus]] = {
    ReviewStatus.OPEN: frozenset({ReviewStatus.ACCEPTED, ReviewStatus.DISPUTED, ReviewStatus.RESOLVED}),
    ReviewStatus.ACCEPTED: frozenset({ReviewStatus.DISPUTED, ReviewStatus.RESOLVED}),
    ReviewStatus.DISPUTED: frozenset({ReviewStatus.ACCEPTED, ReviewStatus.RESOLVED}),
    ReviewStatus.RESOLVED: frozenset(),
}
OPEN_STATUSES = (ReviewStatus.OPEN, ReviewStatus.DISPUTED)


def initial_review_status(match_status: MatchStatus) -> ReviewStatus:
    return ReviewStatus.ACCEPTED if match_status is MatchStatus.MATCHED else ReviewStatus.OPEN


def check_transition(current: ReviewStatus, wanted: ReviewStatus) -> None:
    if wanted not in REVIEW_TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in REVIEW_TRANSITIONS[current])) or "none (final)"
        raise SettlementRuleError(
            "INVALID_STATUS_TRANSITION",
            f"a row that is {current.value} cannot become {wanted.value}; allowed: {allowed}",
            current_status=current.value,
            wanted_status=wanted.value,
        )


@dataclass(frozen=True, slots=True)
class ReviewChange:
    """One change of a row's review status (the history is every change, oldest first)."""

    change_id: str
    reconciliation_id: str
    row_number: int
    from_status: ReviewStatus
    to_status: ReviewStatus
    note: str
    change_time_us: int = 0

    def content_key(self) -> tuple:
        return (self.reconciliation_id, self.row_number, self.to_status.value, self.note)
