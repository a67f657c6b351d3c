"""The demo coalition seeded by `make run`: idempotent, so restarts change nothing.

The demo API keys are fixed, documented development values (never use them elsewhere), so the
seed runs only in development and only on a partners database that holds nothing but the demo:
no partner at all (empty, such as a fresh var/partners.db), or only partners equal to those in
PARTNERS (same id, kind, name and programme currency). A database with any other partner is a
real coalition (or a developer's own): the seed then writes nothing and logs `demo_seed_skipped`.
"""

from __future__ import annotations

from decimal import Decimal

import structlog

from services.common.demo import DEMO_PARTNER_IDS, SKIPPED_EVENT
from services.common.mode import DEVELOPMENT, ENV_SETTING, is_development
from services.partners import converting, earn_pricing, members, model, partners_admin, rules_admin
from services.partners.access import Caller
from services.partners.app import App

_log = structlog.get_logger("demo")

YEAR_US = 365 * 86_400 * model.MICROS_PER_SECOND

# partner id, kind, name, programme currency, store id, terminals
PARTNERS = (
    ("fresh-mart", "retailer", "FreshMart Supermarkets", "", "fm-berlin-01", ("till-1", "till-2")),
    ("fuelco", "fuel", "FuelCo Stations", "", "fc-a9-01", ("pump-1", "pump-2")),
    ("grand-hotels", "hotel", "Grand Hotels", "HOTELPTS", "gh-paris-01", ("desk-1",)),
    ("skyair", "airline", "SkyAir", "AIRMILES", "sa-web", ("web-1",)),
)
if frozenset(partner_id for partner_id, *_ in PARTNERS) != DEMO_PARTNER_IDS:
    raise RuntimeError("services/common/demo.py DEMO_PARTNER_IDS must name exactly the partners seeded here")
DEMO_KEYS = {partner_id: f"demo-{partner_id}-key" for partner_id, *_ in PARTNERS}
DEMO_CARDS = ("6001000000000001", "6001000000000002", "6001000000000003")


def _earn_rules(now: int) -> list[earn_pricing.EarnRule]:
    start = now - YEAR_US
    return [
        earn_pricing.EarnRule(
            "fresh-mart",
            0,
            "PTS",
            earn_pricing.BASIS_AMOUNT,
            Decimal("0.5"),  # 1 point per EUR 2
            category_multipliers={"fresh": Decimal(2)},
            excluded_categories=frozenset({"gift_cards", "tobacco"}),
            promotion=earn_pricing.Promotion(
                earn_pricing.PROMOTION_FIXED_BONUS, start, now + YEAR_US, bonus_points=25, threshold_amount=5_000
            ),
            cap_points=1_000,
            valid_from_micros=start,
        ),
        earn_pricing.EarnRule(
            "fuelco",
            0,
            "PTS",
            earn_pricing.BASIS_QUANTITY,
            Decimal(1),  # 1 point per litre
            excluded_categories=frozenset({"tobacco"}),
            cap_points=200,
            valid_from_micros=start,
        ),
        earn_pricing.EarnRule(
            "grand-hotels", 0, "HOTELPTS", earn_pricing.BASIS_AMOUNT, Decimal(10), valid_from_micros=start
        ),
        earn_pricing.EarnRule("skyair", 0, "AIRMILES", earn_pricing.BASIS_AMOUNT, Decimal(1), valid_from_micros=start),
    ]


def _conversion_rules(now: int) -> list[converting.ConversionRule]:
    start = now - YEAR_US
    return [
        converting.ConversionRule(
            "HOTELPTS", "AIRMILES", 0, 3, 1, 60_000, 5_000, 3_000, 3_000, 300_000, 600_000, start
        ),
        converting.ConversionRule("PTS", "HOTELPTS", 0, 1, 2, 0, 0, 100, 100, 100_000, 0, start),
        converting.ConversionRule("HOTELPTS", "PTS", 0, 4, 1, 0, 0, 400, 400, 400_000, 0, start),
        converting.ConversionRule("PTS", "AIRMILES", 0, 2, 1, 0, 0, 200, 200, 200_000, 0, start),
    ]


async def partners_not_from_demo(app: App) -> list[str]:
    """Ids of partners in the database that the demo did not create (at most len(PARTNERS) + 1 of them).

    A partner counts as the demo's only if it equals one in PARTNERS, so a real partner that happens
    to use a demo id is not mistaken for it. Reading len(PARTNERS) + 1 rows is enough: a database
    with more partners than the demo has holds at least one the demo did not create.
    """
    demo = {(partner_id, kind, name, currency) for partner_id, kind, name, currency, *_ in PARTNERS}
    rows, _ = await partners_admin.list_partners(app, len(PARTNERS) + 1, "")
    return [
        row.partner_id
        for row in rows
        if (row.partner_id, row.kind, row.display_name, row.programme_currency_code or "") not in demo
    ]


async def seed(app: App) -> None:
    """Seed the demo coalition where the rule above allows it; otherwise write nothing and say why."""
    if not is_development():
        _log.info(
            SKIPPED_EVENT,
            reason=f"{ENV_SETTING} is not {DEVELOPMENT}: demo partners and keys are never seeded in production",
        )
        return
    strangers = await partners_not_from_demo(app)
    if strangers:
        _log.warning(
            SKIPPED_EVENT,
            reason="the partners database holds partners the demo did not create; it is left untouched",
            partner_ids=strangers,
        )
        return
    await _seed(app)


async def _seed(app: App) -> None:
    now = app.clock()
    for partner_id, kind, name, currency, store_id, terminals in PARTNERS:
        await partners_admin.register_partner(app, partners_admin.NewPartner(partner_id, kind, name, currency))
        await partners_admin.create_store(app, store_id, partner_id, f"{name} {store_id}")
        for terminal_id in terminals:
            await partners_admin.create_terminal(app, store_id, terminal_id)
        await partners_admin.ensure_known_api_key(app, partner_id, f"demo-{partner_id}", DEMO_KEYS[partner_id])
    for rule in _earn_rules(now):
        if not await rules_admin.list_earn_rules(app, rule.partner_id):
            await rules_admin.create_earn_rule(app, model.OPERATOR, f"demo-earn-rule-{rule.partner_id}", rule)
    existing = {(rule.from_currency, rule.to_currency) for rule in await rules_admin.list_conversion_rules(app)}
    for rule in _conversion_rules(now):
        if (rule.from_currency, rule.to_currency) not in existing:
            request_id = f"demo-conversion-rule-{rule.from_currency}-{rule.to_currency}"
            await rules_admin.create_conversion_rule(app, model.OPERATOR, request_id, rule)
    operator = Caller(model.OPERATOR, is_admin=True)
    for index, card in enumerate(DEMO_CARDS, start=1):
        await members.enroll(app, operator, f"demo-member-{index}", [members.AliasInput("card", card)])
    _log.info("demo_seeded", partners=len(PARTNERS), members=len(DEMO_CARDS))
    lines = ["", "Demo coalition ready. Partner API keys (development only):"]
    lines += [f"  {partner_id:<14} {key}" for partner_id, key in DEMO_KEYS.items()]
    lines += ["  operator (admin) key: COALITION_ADMIN_API_KEY (dev default: coalition-dev-admin-key)"]
    lines += [f"  member cards: {', '.join(DEMO_CARDS)}", "  try: make demo", ""]
    print("\n".join(lines), flush=True)
