"""Use case: the finance report of outstanding points, what an IFRS 15 breakage estimate needs.

The ledger groups its lots (GetOutstandingSummary: by age since the credit and by expiry month,
per currency, as of a time); settlement checks that they add up to the member wallets and hands
the figures to finance. Nothing is stored: the report is as of the time asked for.
"""

from __future__ import annotations

import structlog

from coalition.ledger.v1 import ledger_pb2
from services.common.errors import InvalidArgument, NotFound
from services.settlement.agreements import CURRENCY_PATTERN
from services.settlement.context import SettlementContext

_log = structlog.get_logger("settlement")


async def outstanding_report(
    context: SettlementContext, as_of_us: int | None, currency_code: str
) -> ledger_pb2.GetOutstandingSummaryResponse:
    if currency_code:
        if not CURRENCY_PATTERN.fullmatch(currency_code):
            raise InvalidArgument(
                "INVALID_CURRENCY_CODE",
                f"currency code {currency_code!r} is not 2..16 of A-Z 0-9 _",
                field="currency_code",
            )
        if currency_code not in await context.ledger.currency_owners():
            raise NotFound(
                "CURRENCY_NOT_FOUND",
                f"currency {currency_code} is not registered on the ledger",
                currency=currency_code,
            )
    summary = await context.ledger.outstanding(as_of_us, currency_code)
    for currency in summary.currencies:
        if currency.open_lots_total != currency.wallet_balance_total:
            _log.error(
                "outstanding_lots_disagree_with_wallets",
                currency=currency.currency_code,
                open_lots_total=currency.open_lots_total,
                wallet_balance_total=currency.wallet_balance_total,
            )
    return summary
