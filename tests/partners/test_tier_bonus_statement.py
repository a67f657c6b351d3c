"""End to end, on SQLite and PostgreSQL: a member upgraded by a tier definition earns a bonus at a
partner's till, returns half of it, and the settlement preview bills the bonus to its funder.

Partners prices the earns (120 base points: Silver; then 80 base + 20 bonus) and the return of
one line (50 points, 10 of them bonus) and writes the bonus into the ledger's metadata; settlement
reads it back through GetActivitySummary. The partner's agreement has the operator fund the bonus
at EUR 0.0100 per point:
  issued 220 (2.20) - reversed 50 (-0.50); tier bonus 20 - 10 = 10 credited (-0.10)   net 1.60
"""

from __future__ import annotations

import time
import uuid

import pytest

from coalition.partners.v1 import partners_pb2 as pb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.timeconv import timestamp_from_micros
from services.settlement.server import start as start_settlement
from tests.partners.conftest import unique
from tests.settlement import scripted_month as month
from tests.settlement.conftest import AdminStub, settlement_settings
from tests.support.databases import new_database_url
from tests.support.servers import ThreadedServer
from tests.support.tls import channel as tls_channel

LEVELS = (("Base", 0, "1"), ("Silver", 100, "1.25"))


@pytest.fixture
def settlement(coalition, request, tmp_path):
    """A settlement server on the coalition's ledger, with its own database of the same backend."""
    backend = request.node.callspec.params["coalition"]
    assert backend in ("sqlite", "postgres")
    url, cleanup = new_database_url(backend, tmp_path, "settlement")
    server = ThreadedServer(lambda: start_settlement(settlement_settings(url, coalition.ledger_address)))
    with tls_channel(server.address) as channel:
        yield AdminStub(channel)
    server.stop()
    cleanup()


def test_a_bonus_earned_at_a_tier_shows_on_the_statement_preview_as_the_funder_pays_it(coalition, settlement):
    currency = f"B{uuid.uuid4().hex[:8].upper()}"
    hotel = coalition.register_partner(pb.PARTNER_KIND_HOTEL, currency=currency, base_rate="1")
    definition = pb.TierDefinition(
        currency_code=currency,
        measure=pb.TIER_MEASURE_QUALIFYING_POINTS,
        window=pb.TIER_WINDOW_CALENDAR_YEAR,
        downgrade_grace_months=2,
        levels=[pb.TierLevel(name=name, threshold=threshold, earn_multiplier=m) for name, threshold, m in LEVELS],
    )
    assert coalition.call("SetTierDefinition", pb.SetTierDefinitionRequest(definition=definition)).created
    start = time.time_ns() // 1000
    agreement = month.agreement("hotel-v1", hotel.partner_id, start - 3_600_000_000, [(currency, "0.0100", "0.0080")])
    agreement.tier_bonus_funder = spb.TIER_BONUS_FUNDER_OPERATOR
    assert settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=agreement)).created

    member_id, _ = coalition.enroll()
    upgrade, _ = coalition.earn(hotel, member_id, [6_000, 6_000])
    assert (upgrade.pricing.points, upgrade.pricing.tier_bonus_points) == (120, 0)
    earned, earn_request = coalition.earn(hotel, member_id, [4_000, 4_000])
    assert (earned.pricing.points, earned.pricing.tier_bonus_points) == (100, 20)
    back = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=hotel.pos(), receipt_id=earn_request.receipt_id, line_numbers=[1]
    )
    returned = coalition.call("Return", back, hotel.key)
    assert (returned.earned_points_reversed, returned.tier_bonus_points_due) == (50, 10)
    end = time.time_ns() // 1000 + 1_000_000

    period = spb.PeriodSelector(
        period_id="e2e", start_time=timestamp_from_micros(start), end_time=timestamp_from_micros(end)
    )
    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=period)).settlement
    (statement,) = preview.statements
    assert statement.partner_id == hotel.partner_id
    assert [(spb.StatementLineKind.Name(line.kind), line.quantity, line.amount_cents) for line in statement.lines] == [
        ("STATEMENT_LINE_KIND_POINTS_ISSUED", 220, 220),
        ("STATEMENT_LINE_KIND_EARN_REVERSALS", 50, -50),
        ("STATEMENT_LINE_KIND_TIER_BONUS", 10, -10),
    ]
    bonus = statement.lines[-1]
    assert (bonus.tier_bonus_issued_quantity, bonus.tier_bonus_reversed_quantity) == (20, 10)
    assert (bonus.tier_bonus_funder, bonus.unit_price) == (spb.TIER_BONUS_FUNDER_OPERATOR, "0.0100")
    assert statement.net_cents == 160 and preview.netting.balanced
    (roll_forward,) = [rf for rf in preview.roll_forwards if rf.currency_code == currency]
    assert roll_forward.closing_outstanding == coalition.balance(member_id, currency).available == 170
