"""The demo seed of `make run` (issue 9): development only, and only on a coalition holding nothing but the demo.

On SQLite and PostgreSQL, through the real servers and the same seed_demo() calls `make run`
makes: a coalition with real partners keeps every row of all three databases (no demo partner,
key or price, and no demo price for the real partner without an agreement); production mode
seeds nothing; an empty coalition in development gets the demo, and a demo partner that already
has an agreement keeps only its own.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2
from coalition.partners.v1 import partners_pb2 as ppb
from coalition.settlement.v1 import settlement_pb2 as spb
from coalition.settlement.v1 import settlement_pb2_grpc
from services.common.demo import DEMO_PARTNER_IDS
from services.common.errors import error_info_of
from services.common.mode import DEVELOPMENT, ENV_SETTING, PRODUCTION
from services.common.timeconv import timestamp_from_micros
from services.partners import server as partners_server
from services.partners.demo import DEMO_KEYS
from services.settlement import demo as settlement_demo
from services.settlement import server as settlement_server
from tests.fuzz.harness import ADMIN_KEY, _with_key, running_stack
from tests.partners.conftest import Coalition, MovableClock

ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)
JANUARY_2026_US = 1_767_225_600_000_000


@pytest.fixture
def stack(backend, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_SETTING, DEVELOPMENT)  # what `make run` sets
    with running_stack(backend, tmp_path) as running:
        coalition = Coalition(running.partners.address, MovableClock(), running.ledger.address)
        coalition.call = _with_key(coalition.call)
        running.coalition = coalition
        running.settlement_stub = settlement_pb2_grpc.SettlementServiceStub(
            running.channels["coalition.settlement.v1.SettlementService"]
        )
        yield running
        coalition.close()


def run_demo_seeds(stack) -> None:
    """What `make run` does once every server is up: each service's seed_demo(), partners first."""
    for module, server in ((partners_server, stack.partners), (settlement_server, stack.settlement)):
        asyncio.run_coroutine_threadsafe(module.seed_demo(), server._loop).result(timeout=60)


def partner_ids(stack) -> set[str]:
    response = stack.coalition.call("ListPartners", ppb.ListPartnersRequest(page_size=100))
    return {partner.partner_id for partner in response.partners}


def agreements_by_partner(stack) -> dict[str, list[str]]:
    request = spb.ListPriceAgreementsRequest(page_size=1_000)
    response = stack.settlement_stub.ListPriceAgreements(request, metadata=ADMIN, timeout=10)
    found: dict[str, list[str]] = {}
    for agreement in response.agreements:
        found.setdefault(agreement.partner_id, []).append(agreement.agreement_id)
    return found


def set_agreement(stack, agreement_id: str, partner_id: str, price: str) -> None:
    agreement = spb.PriceAgreement(
        agreement_id=agreement_id,
        partner_id=partner_id,
        valid_from_time=timestamp_from_micros(JANUARY_2026_US),
        point_prices=[
            spb.PointPrice(currency_code="PTS", issue_price_per_point=price, reimbursement_price_per_point=price)
        ],
    )
    stack.settlement_stub.SetPriceAgreement(
        spb.SetPriceAgreementRequest(agreement=agreement), metadata=ADMIN, timeout=10
    )


def demo_key_answer(stack, partner_id: str) -> str:
    """ "OK" if the published demo key of partner_id works, else the reason it is refused."""
    try:
        stack.coalition.call("GetPartner", ppb.GetPartnerRequest(partner_id=partner_id), DEMO_KEYS[partner_id])
    except grpc.RpcError as error:
        info = error_info_of(error)
        return info.reason if info else error.code().name
    return "OK"


def test_demo_seed_leaves_a_coalition_with_real_partners_untouched(stack):
    # Two real partners: one with its own agreement, one not priced yet (the one the old seed
    # priced at EUR 0.01), with a member and an earn on the ledger.
    priced = stack.coalition.register_partner()
    unpriced = stack.coalition.register_partner()
    member_id, _ = stack.coalition.enroll()
    stack.coalition.earn(unpriced, member_id, [10_000])
    set_agreement(stack, "real-agreement", priced.partner_id, "0.0250")
    before = stack.snapshot()

    run_demo_seeds(stack)

    assert stack.snapshot() == before
    assert partner_ids(stack) == {priced.partner_id, unpriced.partner_id}
    assert agreements_by_partner(stack) == {priced.partner_id: ["real-agreement"]}
    assert demo_key_answer(stack, "fresh-mart") == "INVALID_API_KEY"


def test_demo_seed_in_production_mode_writes_nothing(stack, monkeypatch):
    monkeypatch.delenv(ENV_SETTING)  # production is the default
    before = stack.snapshot()
    run_demo_seeds(stack)
    monkeypatch.setenv(ENV_SETTING, PRODUCTION)
    run_demo_seeds(stack)

    assert stack.snapshot() == before
    assert partner_ids(stack) == set()
    assert agreements_by_partner(stack) == {}


def test_demo_seed_on_an_empty_coalition_seeds_the_demo_once(stack):
    # A demo partner that already has an agreement keeps it: the demo price is only for one without.
    set_agreement(stack, "fresh-mart-own", "fresh-mart", "0.0300")

    run_demo_seeds(stack)
    seeded = stack.snapshot()
    run_demo_seeds(stack)

    assert stack.snapshot() == seeded
    assert partner_ids(stack) == DEMO_PARTNER_IDS
    assert {partner_id: demo_key_answer(stack, partner_id) for partner_id in DEMO_KEYS} == dict.fromkeys(
        DEMO_PARTNER_IDS, "OK"
    )
    assert agreements_by_partner(stack) == {
        "fresh-mart": ["fresh-mart-own"],
        "fuelco": ["demo-fuelco"],
        "grand-hotels": ["demo-grand-hotels"],
        "skyair": ["demo-skyair"],
    }


def test_demo_agreements_price_only_eligible_demo_partners_whatever_the_ledger_lists():
    def account(account_id: str, currency: str, owner: str) -> ledger_pb2.Account:
        return ledger_pb2.Account(id=account_id, currency_code=currency, owner_id=owner)

    owners = {"PTS": "operator", "HOTELPTS": "grand-hotels", "REALPTS": "real-hotel"}
    partner_accounts = [
        account("issuance:PTS:fresh-mart", "PTS", "fresh-mart"),
        account("issuance:PTS:fuelco", "PTS", "fuelco"),
        account("issuance:HOTELPTS:grand-hotels", "HOTELPTS", "grand-hotels"),
        account("issuance:PTS:real-shop", "PTS", "real-shop"),
        account("issuance:REALPTS:real-hotel", "REALPTS", "real-hotel"),
    ]
    exchange_accounts = [
        account("exchange:HOTELPTS:PTS", "HOTELPTS", "operator"),
        account("exchange:REALPTS:PTS", "REALPTS", "operator"),
    ]
    eligible = DEMO_PARTNER_IDS - {"fuelco"}  # fuelco already has an agreement

    agreements = settlement_demo.demo_agreements(owners, partner_accounts, exchange_accounts, eligible)

    assert [(a.partner_id, a.agreement_id) for a in agreements] == [
        ("fresh-mart", "demo-fresh-mart"),
        ("grand-hotels", "demo-grand-hotels"),
    ]
    assert [(p.from_currency_code, p.to_currency_code) for p in agreements[1].conversion_prices] == [
        ("PTS", "HOTELPTS")
    ]
