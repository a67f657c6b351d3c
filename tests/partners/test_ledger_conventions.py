"""What settlement relies on: the ledger accounts and transfer metadata the partners service writes."""

from __future__ import annotations

import uuid

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.ledger.v1 import ledger_pb2_grpc
from coalition.partners.v1 import partners_pb2 as pb
from tests.partners.conftest import unique
from tests.support.tls import channel as tls_channel


def test_accounts_and_metadata_follow_the_team_conventions(coalition):
    currency = f"H{uuid.uuid4().hex[:8].upper()}"
    hotel = coalition.register_partner(pb.PARTNER_KIND_HOTEL, currency=currency, base_rate="1")
    member_id, _ = coalition.enroll()
    _, earn = coalition.earn(hotel, member_id, [10_000])  # 100 HOTEL points
    back = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=hotel.pos(), receipt_id=earn.receipt_id, line_numbers=[1]
    )
    coalition.call("Return", back, hotel.key)
    with tls_channel(coalition.ledger_address) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        expected = {
            f"issuance:PTS:{hotel.partner_id}": ("PTS", lpb.ACCOUNT_SIDE_DEBIT, hotel.partner_id, "partner_issuance"),
            f"redemption:PTS:{hotel.partner_id}": (
                "PTS",
                lpb.ACCOUNT_SIDE_CREDIT,
                hotel.partner_id,
                "partner_redemption",
            ),
            f"issuance:{currency}:{hotel.partner_id}": (
                currency,
                lpb.ACCOUNT_SIDE_DEBIT,
                hotel.partner_id,
                "partner_issuance",
            ),
            f"breakage:{currency}": (currency, lpb.ACCOUNT_SIDE_CREDIT, "operator", "operator_breakage"),
            f"wallet:{currency}:{member_id}": (currency, lpb.ACCOUNT_SIDE_CREDIT, member_id, "member_wallet"),
        }
        for account_id, (code, side, owner, kind) in expected.items():
            account = ledger.GetAccount(lpb.GetAccountRequest(account_id=account_id)).account
            assert (account.currency_code, account.normal_side, account.owner_id, account.kind) == (
                code,
                side,
                owner,
                kind,
            )
        wallet = ledger.GetAccount(lpb.GetAccountRequest(account_id=f"wallet:{currency}:{member_id}")).account
        assert wallet.no_overdraft
        currencies = {item.code: item for item in ledger.ListCurrencies(lpb.ListCurrenciesRequest()).currencies}
        assert currencies[currency].owner_id == hotel.partner_id and currencies[currency].scale == 0
        assert currencies["EUR"].scale == 2 and currencies["PTS"].owner_id == "operator"
        entries = ledger.ListAccountEntries(
            lpb.ListAccountEntriesRequest(account_id=f"wallet:{currency}:{member_id}")
        ).entries
        codes = sorted(lpb.TransferCode.Name(entry.transfer.code) for entry in entries)
        assert codes == ["TRANSFER_CODE_EARN", "TRANSFER_CODE_REVERSAL"]
        for entry in entries:
            metadata = entry.transfer.metadata
            assert (
                metadata.partner_id,
                metadata.store_id,
                metadata.terminal_id,
                metadata.receipt_id,
                metadata.member_id,
            ) == (
                hotel.partner_id,
                hotel.store_id,
                hotel.terminal_id,
                earn.receipt_id,
                member_id,
            )
        reversal = next(entry.transfer for entry in entries if entry.transfer.code == lpb.TRANSFER_CODE_REVERSAL)
        assert reversal.reverses_transfer_id == f"earn:{hotel.partner_id}:{earn.request_id}"
