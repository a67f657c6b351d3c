"""Demo price agreements for every partner found on the ledger, so `make demo` can preview a statement."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import structlog

from services.common.errors import ServiceError
from services.settlement import agreements, model
from services.settlement.context import SettlementContext

DEMO_VALID_FROM_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z, before any demo activity
DEMO_ISSUE_PRICE = Decimal("0.0100")
DEMO_REIMBURSEMENT_PRICE = Decimal("0.0080")
DEMO_CONVERSION_PRICE = Decimal("0.0090")
_log = structlog.get_logger("settlement")


async def seed(context: SettlementContext) -> None:
    owners = await context.ledger.currency_owners()
    currencies: dict[str, set[str]] = defaultdict(set)
    conversions: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for kind in (model.KIND_PARTNER_ISSUANCE, model.KIND_PARTNER_REDEMPTION):
        for account in await context.ledger.list_accounts(kind=kind):
            currencies[account.owner_id].add(account.currency_code)
    for account in await context.ledger.list_accounts(kind=model.KIND_OPERATOR_EXCHANGE):
        delivered, source = account.currency_code, model.exchange_other_currency(account.id)
        pricing_partner = owners.get(delivered, model.OPERATOR_ID)
        if pricing_partner == model.OPERATOR_ID:
            pricing_partner = owners.get(source, model.OPERATOR_ID)
        if pricing_partner != model.OPERATOR_ID:
            conversions[pricing_partner].add((source, delivered))
    for partner_id in sorted(set(currencies) | set(conversions)):
        agreement = model.PriceAgreement(
            agreement_id=f"demo-{partner_id}",
            partner_id=partner_id,
            valid_from_us=DEMO_VALID_FROM_US,
            point_prices=tuple(
                model.PointPrice(code, DEMO_ISSUE_PRICE, DEMO_REIMBURSEMENT_PRICE)
                for code in sorted(currencies[partner_id])
            ),
            conversion_prices=tuple(
                model.ConversionPrice(source, delivered, DEMO_CONVERSION_PRICE)
                for source, delivered in sorted(conversions[partner_id])
            ),
        )
        try:
            await agreements.set_price_agreement(context, agreement)
        except ServiceError as error:  # an existing, different agreement with the demo id is kept on purpose
            _log.info("demo_agreement_kept", partner_id=partner_id, reason=str(error))
