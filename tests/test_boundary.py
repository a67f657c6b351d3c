"""The rules every service applies at its boundary, on both databases (issue 7, points 3, 5, 6, 7).

NUL anywhere, ids with a trailing newline and page tokens nobody wrote are INVALID_ARGUMENT with a
reason, and refused captures and voids leave every table of all three services as it was.
"""

from __future__ import annotations

import base64
import uuid

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.ledger.v1 import ledger_pb2_grpc
from coalition.partners.v1 import partners_pb2 as ppb
from coalition.settlement.v1 import settlement_pb2 as spb
from coalition.settlement.v1 import settlement_pb2_grpc
from services.common.errors import error_info_of
from tests.fuzz.harness import ADMIN_KEY, _with_key, running_stack
from tests.partners.conftest import Coalition, MovableClock

NESTING_BOMB = base64.urlsafe_b64encode(b"[" * 50_000).decode()
ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory):
    with running_stack(request.param, tmp_path_factory.mktemp("boundary")) as running:
        coalition = Coalition(running.partners.address, MovableClock(), running.ledger.address)
        coalition.call = _with_key(coalition.call)
        running.coalition = coalition
        running.ledger_stub = ledger_pb2_grpc.LedgerServiceStub(running.channels["coalition.ledger.v1.LedgerService"])
        running.settlement_stub = settlement_pb2_grpc.SettlementServiceStub(
            running.channels["coalition.settlement.v1.SettlementService"]
        )
        yield running
        coalition.close()


def refusal(call, request, metadata=ADMIN) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, metadata=metadata, timeout=10)
    info = error_info_of(raised.value)
    return raised.value.code(), info.reason if info else ""


def test_nul_in_any_string_field_is_invalid_argument_in_every_service(stack):
    partners = stack.coalition.stub
    cases = [
        (partners.GetPartner, ppb.GetPartnerRequest(partner_id="x\0")),
        (partners.ListEarnRules, ppb.ListEarnRulesRequest(partner_id="p\0")),
        (stack.settlement_stub.GetPeriod, spb.GetPeriodRequest(period_id="2026-11\0")),
        (stack.settlement_stub.GetReconciliation, spb.GetReconciliationRequest(reconciliation_id="r\0")),
        (stack.ledger_stub.GetTransfers, lpb.GetTransfersRequest(ids=["ok", "x\0"])),
    ]
    for call, request in cases:
        assert refusal(call, request) == (grpc.StatusCode.INVALID_ARGUMENT, "VALUE_NOT_PRINTABLE"), request


def test_ledger_activity_summary_checks_every_account_id(stack):
    window = {"start_time": {"seconds": 0}, "end_time": {"seconds": 86_400}}
    for account_id in ("\0", "wallet:PTS:x\n", "", "a" * 129):
        request = lpb.GetActivitySummaryRequest(account_ids=[account_id], **window)
        code, reason = refusal(stack.ledger_stub.GetActivitySummary, request)
        assert (code, reason) in {
            (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ID"),
            (grpc.StatusCode.INVALID_ARGUMENT, "VALUE_NOT_PRINTABLE"),
        }, account_id


def test_ids_with_a_trailing_newline_are_refused_and_nothing_is_stored(stack):
    coalition = stack.coalition
    before = stack.snapshot()
    partner = ppb.Partner(partner_id="nl-partner\n", kind=ppb.PARTNER_KIND_RETAILER, display_name="x")
    assert coalition.error("RegisterPartner", ppb.RegisterPartnerRequest(partner=partner))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    retailer = coalition.register_partner()
    before = stack.snapshot()
    store = ppb.Store(store_id="s\n", partner_id=retailer.partner_id, display_name="x")
    assert coalition.error("CreateStore", ppb.CreateStoreRequest(store=store))[0] == grpc.StatusCode.INVALID_ARGUMENT
    capture = ppb.CaptureRedemptionRequest(request_id="capture-1\n", redemption_id="r-1")
    assert coalition.error("CaptureRedemption", capture, retailer.key)[0] == grpc.StatusCode.INVALID_ARGUMENT
    void = ppb.VoidRedemptionRequest(request_id="void-1\n", redemption_id="r-1")
    assert coalition.error("VoidRedemption", void, retailer.key)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert stack.snapshot() == before


def test_page_tokens_nobody_wrote_are_invalid_page_token_in_every_service(stack):
    small_bomb = base64.urlsafe_b64encode(b"[" * 700).decode()
    tokens = [NESTING_BOMB, small_bomb, "!!", base64.urlsafe_b64encode(b'["\\u0000"]').decode(), "x" * 5_000]
    # A token too big for a method's request limit may be refused by size first; never as INTERNAL.
    too_large = (grpc.StatusCode.RESOURCE_EXHAUSTED, "REQUEST_TOO_LARGE")
    for token in tokens:
        cases = [
            (stack.ledger_stub.ListAccounts, lpb.ListAccountsRequest(page_token=token)),
            (stack.ledger_stub.ListAccountEntries, lpb.ListAccountEntriesRequest(account_id="a", page_token=token)),
            (stack.coalition.stub.ListPartners, ppb.ListPartnersRequest(page_token=token)),
            (stack.settlement_stub.ListPeriods, spb.ListPeriodsRequest(page_token=token)),
            (stack.settlement_stub.ListPriceAgreements, spb.ListPriceAgreementsRequest(page_token=token)),
        ]
        for call, request in cases:
            answer = refusal(call, request)
            if answer == too_large and len(token) > 1_024:
                continue
            assert answer == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"), (call, token[:40])


def test_tokens_the_services_wrote_still_page(stack):
    for _ in range(3):
        stack.coalition.register_partner(base_rate=None)
    first = stack.coalition.stub.ListPartners(ppb.ListPartnersRequest(page_size=2), metadata=ADMIN, timeout=10)
    second = stack.coalition.stub.ListPartners(
        ppb.ListPartnersRequest(page_size=2, page_token=first.next_page_token), metadata=ADMIN, timeout=10
    )
    assert first.next_page_token and second.partners
    assert {p.partner_id for p in first.partners}.isdisjoint(p.partner_id for p in second.partners)


def _hold(stack, partner, member_id) -> str:
    request = ppb.AuthorizeRedemptionRequest(
        request_id=f"hold-{uuid.uuid4().hex[:8]}",
        point_of_sale=partner.pos(),
        receipt_id=f"r-{uuid.uuid4().hex[:8]}",
        member=ppb.MemberIdentity(member_id=member_id),
        currency_code="PTS",
        amount=5,
        hold_timeout_seconds=3_600,
    )
    return stack.coalition.call("AuthorizeRedemption", request, partner.key).redemption.redemption_id


def test_refused_captures_and_voids_write_nothing_in_any_service(stack):
    coalition = stack.coalition
    retailer = coalition.register_partner()
    member_id, _ = coalition.enroll()
    coalition.earn(retailer, member_id, [10_000])
    captured, voided = _hold(stack, retailer, member_id), _hold(stack, retailer, member_id)
    capture = ppb.CaptureRedemptionRequest(request_id="first-capture", redemption_id=captured)
    coalition.call("CaptureRedemption", capture, retailer.key)
    coalition.call(
        "VoidRedemption", ppb.VoidRedemptionRequest(request_id="first-void", redemption_id=voided), retailer.key
    )
    before = stack.snapshot()
    refused = [
        ("CaptureRedemption", ppb.CaptureRedemptionRequest(request_id="capture-again", redemption_id=captured)),
        ("VoidRedemption", ppb.VoidRedemptionRequest(request_id="void-captured", redemption_id=captured)),
        ("CaptureRedemption", ppb.CaptureRedemptionRequest(request_id="capture-voided", redemption_id=voided)),
        ("VoidRedemption", ppb.VoidRedemptionRequest(request_id="void-again", redemption_id=voided)),
    ]
    for attempt in range(3):
        for method, request in refused:
            request.request_id = f"{request.request_id.split('.')[0]}.{attempt}"
            code, reason = coalition.error(method, request, retailer.key)
            assert code == grpc.StatusCode.FAILED_PRECONDITION, (method, code, reason)
            assert reason in {"HOLD_ALREADY_CAPTURED", "HOLD_ALREADY_VOIDED"}, reason
    assert stack.snapshot() == before
    # A retry of the call that resolved each hold still gets its first answer.
    again = coalition.call("CaptureRedemption", capture, retailer.key).redemption
    assert again.state == ppb.REDEMPTION_STATE_CAPTURED
    void_again = ppb.VoidRedemptionRequest(request_id="first-void", redemption_id=voided)
    assert coalition.call("VoidRedemption", void_again, retailer.key).redemption.state == ppb.REDEMPTION_STATE_VOIDED
