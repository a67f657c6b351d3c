"""Demo price agreements for the demo partners of `make run`, so `make demo` can preview a statement.

The rule (shared with the partners' seed, `services/common/demo.py`): only in development, and
only on a coalition that holds nothing but the demo. Settlement sees the coalition through its own
agreements and the ledger's accounts and currencies, so it writes nothing, and logs
`demo_seed_skipped`, when either names a partner outside DEMO_PARTNER_IDS. Where it may seed, a
demo partner gets the demo prices only while it has no agreement at all; any other partner never
gets one, whatever the ledger lists.

Settlement knows partners only by id: a coalition whose only partners are real ones using demo
ids, none with an agreement yet, would get demo prices here (partners' seed, which compares names
too, would skip).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Set
from decimal import Decimal

import structlog

from coalition.ledger.v1 import ledger_pb2
from services.common.demo import DEMO_PARTNER_IDS, SKIPPED_EVENT
from services.common.errors import ServiceError
from services.common.mode import DEVELOPMENT, ENV_SETTING, is_development
from services.settlement import agreements, model, statement_documents, store
from services.settlement.context import SettlementContext
from services.settlement.documents import BillingDetails, BillingVersion

DEMO_VALID_FROM_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z, before any demo activity
DEMO_ISSUE_PRICE = Decimal("0.0100")
DEMO_REIMBURSEMENT_PRICE = Decimal("0.0080")
DEMO_CONVERSION_PRICE = Decimal("0.0090")
DEMO_TAX_RATE_PERCENT = Decimal("21")
DEMO_TAX_NOTE = "VAT 21 % (Netherlands; demo)"
_log = structlog.get_logger("settlement")


async def seed(context: SettlementContext) -> None:
    """Record the demo agreements the rule above allows; otherwise write nothing and say why."""
    if not is_development():
        _log.info(
            SKIPPED_EVENT, reason=f"{ENV_SETTING} is not {DEVELOPMENT}: demo prices are never seeded in production"
        )
        return
    # More priced partners than the demo has means at least one is not the demo's.
    priced = await context.read(lambda connection: store.priced_partner_ids(connection, len(DEMO_PARTNER_IDS) + 1))
    owners = await context.ledger.currency_owners()
    partner_accounts = []
    for kind in (model.KIND_PARTNER_ISSUANCE, model.KIND_PARTNER_REDEMPTION):
        partner_accounts += await context.ledger.list_accounts(kind=kind)
    on_ledger = {account.owner_id for account in partner_accounts} | set(owners.values())
    strangers = sorted((priced | on_ledger) - DEMO_PARTNER_IDS - {model.OPERATOR_ID})
    if strangers:
        _log.warning(
            SKIPPED_EVENT,
            reason="the coalition holds partners the demo did not create; no demo price is recorded",
            partner_ids=strangers[: len(DEMO_PARTNER_IDS) + 1],
        )
        return
    exchange_accounts = await context.ledger.list_accounts(kind=model.KIND_OPERATOR_EXCHANGE)
    for agreement in demo_agreements(owners, partner_accounts, exchange_accounts, DEMO_PARTNER_IDS - priced):
        try:
            await agreements.set_price_agreement(context, agreement)
        except ServiceError as error:  # an agreement recorded meanwhile, or a closed period: kept as it is
            _log.info("demo_agreement_kept", partner_id=agreement.partner_id, reason=str(error))
            continue
        _log.info("demo_agreement_recorded", partner_id=agreement.partner_id)
    await _seed_billing_details(context)


# Made-up billing details of the demo partners (valid shapes and IBAN checksums), so a demo
# statement shows a partner block. Recorded under fixed ids: a restart repeats them idempotently.
DEMO_BILLING = {
    "fresh-mart": ("Fresh Mart Demo B.V.", "Marktplein 1\n3011 AA Rotterdam", "NL000000001B01", "NL52DEMO0000000001"),
    "fuelco": ("FuelCo Demo GmbH", "Tankstrasse 4\n10115 Berlin", "DE000000002", "NL25DEMO0000000002"),
    "grand-hotels": ("Grand Hotels Demo S.A.", "1 Rue de la Paix\n75002 Paris", "FR00000000003", "NL95DEMO0000000003"),
    "skyair": ("SkyAir Demo Ltd", "1 Runway Road\nDublin", "IE0000004A", "NL68DEMO0000000004"),
}


async def _seed_billing_details(context: SettlementContext) -> None:
    for partner_id, (name, address, vat_id, iban) in sorted(DEMO_BILLING.items()):
        details = BillingDetails(name, address, vat_id, iban, f"billing@{partner_id}.example")
        version = BillingVersion(f"demo-billing-{partner_id}", partner_id, DEMO_VALID_FROM_US, details)
        try:
            await statement_documents.set_partner_billing_details(context, version)
        except ServiceError as error:  # other details recorded meanwhile: kept as they are
            _log.info("demo_billing_details_kept", partner_id=partner_id, reason=str(error))


def demo_agreements(
    currency_owners: Mapping[str, str],
    partner_accounts: Iterable[ledger_pb2.Account],
    exchange_accounts: Iterable[ledger_pb2.Account],
    eligible_partner_ids: Set[str],
) -> list[model.PriceAgreement]:
    """One demo agreement per eligible partner the ledger shows: its currencies and conversions priced.

    Partners outside `eligible_partner_ids` (the demo partners still without an agreement) get
    nothing, whatever accounts and currencies the ledger lists for them.
    """
    currencies: dict[str, set[str]] = defaultdict(set)
    conversions: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for account in partner_accounts:
        currencies[account.owner_id].add(account.currency_code)
    for account in exchange_accounts:
        delivered, source = account.currency_code, model.exchange_other_currency(account.id)
        pricing_partner = currency_owners.get(delivered, model.OPERATOR_ID)
        if pricing_partner == model.OPERATOR_ID:
            pricing_partner = currency_owners.get(source, model.OPERATOR_ID)
        if pricing_partner != model.OPERATOR_ID:
            conversions[pricing_partner].add((source, delivered))
    partner_ids = (set(currencies) | set(conversions)) & set(eligible_partner_ids)
    return [
        model.PriceAgreement(
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
            # A statement shows net, tax and gross: the demo's partners charge Dutch VAT.
            tax_rate_percent=DEMO_TAX_RATE_PERCENT,
            tax_note=DEMO_TAX_NOTE,
        )
        for partner_id in sorted(partner_ids)
    ]
