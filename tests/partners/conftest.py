"""Real ledger and partners servers on loopback, one pair per test module and backend.

Tests share the servers but never each other's data: each creates its own members, request
ids and receipts, and the tests that change rules or statuses register their own partner.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import grpc
import pytest

from coalition.partners.v1 import partners_pb2 as pb
from coalition.partners.v1 import partners_pb2_grpc
from services.common.errors import error_info_of
from services.common.timeconv import timestamp_from_micros
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_thread, start_partners_thread
from tests.support.tls import channel as tls_channel

ADMIN_KEY = "test-admin-key"
DAY_US = 86_400 * 1_000_000


class MovableClock:
    """The partners server's clock (microseconds); tests move it forward to expire quotes."""

    def __init__(self) -> None:
        self.offset_us = 0

    def __call__(self) -> int:
        return time.time_ns() // 1000 + self.offset_us

    def advance(self, seconds: float) -> None:
        self.offset_us += int(seconds * 1_000_000)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclasses.dataclass
class PartnerHandle:
    partner_id: str
    key: str
    key_id: str
    store_id: str
    terminal_id: str
    currency: str = ""

    def pos(self) -> pb.PointOfSale:
        return pb.PointOfSale(store_id=self.store_id, terminal_id=self.terminal_id)


class Coalition:
    """A client of the real servers with the helpers the tests share."""

    def __init__(self, address: str, clock: MovableClock, ledger_address: str) -> None:
        self.address = address
        self.channel = tls_channel(address)
        self.stub = partners_pb2_grpc.PartnersServiceStub(self.channel)
        self.clock = clock
        self.ledger_address = ledger_address

    def call(self, method: str, request, key: str | None = ADMIN_KEY, timeout: float = 10):
        metadata = () if key is None else (("authorization", f"Bearer {key}"),)
        return getattr(self.stub, method)(request, metadata=metadata, timeout=timeout)

    def error(self, method: str, request, key: str | None = ADMIN_KEY) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as raised:
            self.call(method, request, key)
        info = error_info_of(raised.value)
        return raised.value.code(), (info.reason if info else "")

    def register_partner(
        self, kind: int = pb.PARTNER_KIND_RETAILER, currency: str = "", base_rate: str = "0.5", **rule_fields
    ) -> PartnerHandle:
        partner_id = unique("p")
        partner = pb.Partner(
            partner_id=partner_id, kind=kind, display_name=partner_id, programme_currency_code=currency
        )
        self.call("RegisterPartner", pb.RegisterPartnerRequest(partner=partner))
        store_id, terminal_id = unique("s"), "till-1"
        self.call(
            "CreateStore",
            pb.CreateStoreRequest(store=pb.Store(store_id=store_id, partner_id=partner_id, display_name="Main")),
        )
        self.call(
            "CreateTerminal", pb.CreateTerminalRequest(terminal=pb.Terminal(store_id=store_id, terminal_id=terminal_id))
        )
        issued = self.call("IssueApiKey", pb.IssueApiKeyRequest(partner_id=partner_id, request_id=unique("key")))
        if base_rate is not None:
            self.create_earn_rule(partner_id, currency=currency or "PTS", base_rate=base_rate, **rule_fields)
        return PartnerHandle(partner_id, issued.api_key, issued.key_info.key_id, store_id, terminal_id, currency)

    def create_earn_rule(self, partner_id: str, currency: str = "PTS", base_rate: str = "0.5", **fields) -> pb.EarnRule:
        fields.setdefault("basis", pb.EARN_BASIS_AMOUNT)
        fields.setdefault("valid_from_time", timestamp_from_micros(self.clock() - DAY_US))
        rule = pb.EarnRule(partner_id=partner_id, currency_code=currency, base_rate=base_rate, **fields)
        request = pb.CreateEarnRuleRequest(rule=rule, request_id=unique("rule"))
        return self.call("CreateEarnRule", request).rule

    def enroll(self, card: str | None = None, key: str = ADMIN_KEY) -> tuple[str, str]:
        card = card or str(uuid.uuid4().int)[:16]
        response = self.call(
            "EnrollMember",
            pb.EnrollMemberRequest(
                request_id=unique("enroll"), aliases=[pb.Alias(kind=pb.ALIAS_KIND_CARD, value=card)]
            ),
            key,
        )
        return response.member.member_id, card

    def earn(self, partner: PartnerHandle, member_id: str, amounts: list[int], category: str = "grocery", **extra):
        request = pb.EarnRequest(
            request_id=extra.pop("request_id", unique("earn")),
            point_of_sale=partner.pos(),
            receipt_id=extra.pop("receipt_id", unique("r")),
            member=pb.MemberIdentity(member_id=member_id),
            lines=[
                pb.BasketLine(line_number=index + 1, sku=f"sku{index}", category=category, quantity=1000, amount=amount)
                for index, amount in enumerate(amounts)
            ],
        )
        return self.call("Earn", request, partner.key), request

    def balance(self, member_id: str, currency: str = "PTS", key: str = ADMIN_KEY) -> pb.WalletBalance:
        response = self.call(
            "GetMemberBalance", pb.GetMemberBalanceRequest(member=pb.MemberIdentity(member_id=member_id)), key
        )
        for item in response.balances:
            if item.currency_code == currency:
                return item
        return pb.WalletBalance(currency_code=currency)

    def close(self) -> None:
        self.channel.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def coalition(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("partners")
    ledger_url, ledger_cleanup = new_database_url(request.param, directory, "ledger")
    partners_url, partners_cleanup = new_database_url(request.param, directory, "partners")
    ledger = start_ledger_thread(ledger_url)
    clock = MovableClock()
    partners = start_partners_thread(partners_url, ledger.address, ADMIN_KEY, clock)
    client = Coalition(partners.address, clock, ledger.address)
    yield client
    client.close()
    partners.stop()
    ledger.stop()
    partners_cleanup()
    ledger_cleanup()
